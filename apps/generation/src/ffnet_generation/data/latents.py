"""Latent mode: Stable-Diffusion VAE from a local folder, and pre-extracted latent shards on disk.

Training reads latents written once by ``ffnet-gen-extract-latents`` (as Fast-DiT / U-DiT recommend: the VAE
encoder would otherwise cost more than the diffusion model itself). A shard is ``latents_NNNNN.npy``
([n, 4, s, s] float16, already multiplied by the scale factor) + ``labels_NNNNN.npy`` ([n] int64); ``meta.json``
records the scale factor, VAE path, image size and class names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from metamixer.train.errors import FFNetError

__all__ = ["SD_VAE_SCALE", "check_vae_folder", "load_vae", "VAE", "LatentDataset", "write_latent_shard",
           "read_latent_meta"]

#: latent scale of the Stable-Diffusion VAE (unit variance latents), as used by LDM / DiT / U-DiT
SD_VAE_SCALE = 0.18215


class VAE(torch.nn.Module):
    """Wraps ``diffusers.AutoencoderKL``: ``encode`` images in [-1, 1] -> scaled latents, ``decode`` back."""

    def __init__(self, autoencoder: torch.nn.Module, scale: float = SD_VAE_SCALE) -> None:
        super().__init__()
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.scale = scale

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = True) -> torch.Tensor:
        dist = self.autoencoder.encode(images).latent_dist
        return (dist.sample() if sample else dist.mode()) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents / self.scale).sample


def check_vae_folder(path: str | Path, key: str = "data.vae_path (or --vae)") -> Path:
    """The VAE folder must exist and hold a diffusers ``config.json`` (checked before any run starts)."""
    if not path:
        raise FFNetError(f"latent mode needs a VAE: set {key} to a local AutoencoderKL folder "
                         "(e.g. a downloaded copy of https://huggingface.co/stabilityai/sd-vae-ft-ema)")
    folder = Path(path).expanduser()
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise FFNetError(f"{key}: VAE folder not found or has no config.json: {folder} (expected a diffusers "
                         "AutoencoderKL folder such as sd-vae-ft-ema saved with save_pretrained)")
    return folder


def load_vae(path: str | Path, device: str | torch.device = "cpu", scale: float = SD_VAE_SCALE,
             key: str = "data.vae_path (or --vae)") -> VAE:
    """Load an AutoencoderKL saved with ``save_pretrained`` (e.g. stabilityai/sd-vae-ft-ema) from a local folder.

    Nothing is downloaded: a missing folder or a missing ``diffusers`` gives a clear error.
    """
    folder = check_vae_folder(path, key)
    try:
        from diffusers.models import AutoencoderKL
    except ImportError:
        raise FFNetError("latent mode needs diffusers: pip install 'ffnet-generation[latent]'") from None
    try:
        autoencoder = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # diffusers raises OSError/ValueError/EnvironmentError on bad folders
        raise FFNetError(f"cannot load the VAE from {folder}: {str(exc).splitlines()[0][:200]}") from None
    return VAE(autoencoder, scale).to(device)


def write_latent_shard(folder: Path, index: int, latents: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"latents_{index:05d}.npy", latents.astype(np.float16))
    np.save(folder / f"labels_{index:05d}.npy", labels.astype(np.int64))


def read_latent_meta(folder: str | Path) -> dict:
    meta_path = Path(folder) / "meta.json"
    if not meta_path.is_file():
        raise FFNetError(f"{folder} is not a latent folder (no meta.json); create one with ffnet-gen-extract-latents")
    return json.loads(meta_path.read_text())


class LatentDataset(Dataset):
    """All shards of a latent folder, memory-mapped; items are (latent float32 [4, s, s], label)."""

    def __init__(self, folder: str | Path, num_classes: int | None = None) -> None:
        folder = Path(folder)
        self.meta = read_latent_meta(folder)
        shard_files = sorted(folder.glob("latents_*.npy"))
        if not shard_files:
            raise FFNetError(f"no latents_*.npy shards in {folder}")
        self.latents = [np.load(p, mmap_mode="r") for p in shard_files]
        self.labels = [np.load(p.with_name(p.name.replace("latents_", "labels_"))) for p in shard_files]
        self.offsets = np.cumsum([0] + [len(a) for a in self.latents])
        self.classes = self.meta.get("classes", [])
        top = max(int(lab.max()) for lab in self.labels if len(lab))
        if num_classes is not None and top >= num_classes:
            raise FFNetError(f"{folder} has labels up to {top} but model.num_classes={num_classes}")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        shard = int(np.searchsorted(self.offsets, i, side="right") - 1)
        j = i - self.offsets[shard]
        return torch.from_numpy(np.array(self.latents[shard][j], dtype=np.float32)), int(self.labels[shard][j])
