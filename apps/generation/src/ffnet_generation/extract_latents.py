"""Encode an image folder once with the SD VAE and store the (scaled) latents for latent-mode training.

``ffnet-gen-extract-latents --images imagenet/train --vae sd-vae-ft-ema --output latents/imagenet256
--image-size 256 [--flip]``. ``--flip`` also stores the latents of the mirrored images (the augmentation DiT
applies on the fly, which pre-extracted latents cannot). Under ``torchrun`` each rank encodes every
world_size-th batch into its own shards.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from metamixer.train.device import resolve_device
from metamixer.train.distributed import barrier, cleanup_distributed, init_distributed
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_json

from .data.images import ImageFolderDataset
from .data.latents import SD_VAE_SCALE, load_vae, write_latent_shard

__all__ = ["extract_latents", "main", "cli"]


@torch.no_grad()
def extract_latents(images: str, vae_path: str, output: str, *, image_size: int = 256, batch_size: int = 32,
                    flip: bool = False, num_workers: int = 4, device: str = "auto", encoder=None) -> dict:
    """Write ``latents_*.npy`` / ``labels_*.npy`` shards and ``meta.json``; ``encoder`` overrides the VAE (tests)."""
    if image_size % 8:
        raise FFNetError(f"--image-size must be a multiple of 8 (the VAE downsamples by 8), got {image_size}")
    info = init_distributed(resolve_device(device, key="--device"))
    encode = encoder if encoder is not None else load_vae(vae_path, info.device).encode  # fail fast on a bad path
    dataset = ImageFolderDataset(images, image_size, 3, hflip=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    out = Path(output)
    count = 0
    for b, (x, y) in enumerate(loader):
        if b % info.world_size != info.rank:
            continue
        x = x.to(info.device)
        views = [x, x.flip(-1)] if flip else [x]
        for v, view in enumerate(views):
            z = encode(view).float().cpu().numpy()
            write_latent_shard(out, b * 2 + v, z, y.numpy())
            count += len(z)
    barrier()
    meta = {"scale_factor": SD_VAE_SCALE, "vae": str(vae_path), "image_size": image_size, "classes": dataset.classes,
            "num_classes": len(dataset.classes), "images": len(dataset), "flip": flip,
            "latent_shape": [4, image_size // 8, image_size // 8]}
    if info.is_main:
        write_json(out / "meta.json", meta)
    cleanup_distributed()
    return {**meta, "latents_written_by_rank0": count, "output": str(out)}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="ffnet-gen-extract-latents", description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="image folder (class sub-folders = labels)")
    p.add_argument("--vae", required=True, help="local diffusers AutoencoderKL folder (e.g. sd-vae-ft-ema)")
    p.add_argument("--output", required=True)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--flip", action="store_true")
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    result = extract_latents(a.images, a.vae, a.output, image_size=a.image_size, batch_size=a.batch_size,
                             flip=a.flip, num_workers=a.num_workers, device=a.device)
    print(json.dumps({k: result[k] for k in ("output", "images", "num_classes", "latent_shape")}))
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())

