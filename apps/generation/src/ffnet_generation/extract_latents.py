"""Encode an image folder once with the SD VAE and store the (scaled) latents for latent-mode training.

``ffnet-gen-extract-latents --images imagenet/train --vae sd-vae-ft-ema --output latents/imagenet256
--image-size 256 [--flip]``. ``--flip`` also stores the latents of the mirrored images (the augmentation DiT
applies on the fly, which pre-extracted latents cannot). Under ``torchrun`` each rank encodes every
world_size-th batch into its own shards.

A folder run over user files: an unreadable image (empty, truncated, not an image, over ``--max-pixels``) is
reported on its own line and left out, the rest is encoded, and the command exits 1 with the list (also kept
in ``meta.json`` under ``skipped``). The shards are written into ``.<output>.partial`` beside the output and
renamed into place at the end, so an interrupted or failed extraction leaves no folder that looks complete.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from metamixer.train.cli import OverrideParser
from metamixer.train.device import resolve_device
from metamixer.train.distributed import barrier, cleanup_distributed, init_distributed
from metamixer.train.errors import FFNetError, SomeInputsFailed, report_input_error, run_cli
from metamixer.train.outputs import check_output_folder
from metamixer.train.results import write_json

from .data.images import DEFAULT_MAX_PIXELS, ImageFolderDataset
from .data.latents import SD_VAE_SCALE, load_vae, write_latent_shard

__all__ = ["extract_latents", "main", "cli"]


class _Tolerant(torch.utils.data.Dataset):
    """Items ``(image, label, error)``: a file that cannot be read gives a blank image and its message instead of
    an exception, which a DataLoader worker would re-raise wrapped in its own traceback text, ending the run."""

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        try:
            x, y = self.dataset[i]
            return x, y, ""
        except FFNetError as exc:
            size = self.dataset.image_size
            return torch.zeros(self.dataset.channels, size, size), self.dataset.samples[i][1], str(exc)


def _check_options(images: str, output: str, image_size: int, batch_size: int, num_workers: int,
                   max_pixels: int | None) -> Path:
    if image_size < 8 or image_size % 8:
        raise FFNetError(f"--image-size must be a positive multiple of 8 (the VAE downsamples by 8), got {image_size}")
    for key, value, low in (("--batch-size", batch_size, 1), ("--num-workers", num_workers, 0)):
        if value < low:
            raise FFNetError(f"{key} must be >= {low}, got {value}")
    if max_pixels is not None and max_pixels < 1:
        raise FFNetError(f"--max-pixels must be >= 1, got {max_pixels}")
    folder = Path(images)
    if not folder.is_dir():
        raise FFNetError(f"--images {images}: " + ("is a file, expected" if folder.exists() else "not found, expected")
                         + " a folder of images (class sub-folders = labels)")
    out = check_output_folder(output)
    if out.is_dir() and any(out.iterdir()):
        raise FFNetError(f"--output {out}: the folder exists and is not empty (old shards would mix with the new "
                         "ones); give a new or empty folder")
    return out


def _gather(items: list[str], world_size: int) -> list[str]:
    """Every rank's list, joined (each rank only sees the bad files of its own batches)."""
    if world_size <= 1:
        return items
    import torch.distributed as dist

    parts: list[list[str]] = [[] for _ in range(world_size)]
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


@torch.no_grad()
def extract_latents(images: str, vae_path: str, output: str, *, image_size: int = 256, batch_size: int = 32,
                    flip: bool = False, num_workers: int = 4, device: str = "auto", encoder=None,
                    max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict:
    """Write ``latents_*.npy`` / ``labels_*.npy`` shards and ``meta.json``; ``encoder`` overrides the VAE (tests).

    Unreadable images are reported (one line each) and left out; the result and ``meta.json`` list them under
    ``skipped``. If none could be read, nothing is written (FFNetError)."""
    out = _check_options(images, output, image_size, batch_size, num_workers, max_pixels)
    info = init_distributed(resolve_device(device, key="--device"))
    encode = encoder if encoder is not None else load_vae(vae_path, info.device, key="--vae").encode  # fail fast on a bad path
    dataset = ImageFolderDataset(images, image_size, 3, hflip=False, max_pixels=max_pixels)
    loader = torch.utils.data.DataLoader(_Tolerant(dataset), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers)
    staging = out.with_name(f".{out.name}.partial")
    try:
        if info.is_main:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed earlier run left
            staging.mkdir(parents=True)
        barrier()
        count, skipped = 0, []
        for b, (x, y, errors) in enumerate(loader):
            if b % info.world_size != info.rank:
                continue
            for message in filter(None, errors):
                report_input_error(message)
            keep = torch.tensor([not e for e in errors])
            skipped += [str(dataset.samples[b * batch_size + i][0]) for i, e in enumerate(errors) if e]
            if not keep.any():
                continue
            x, y = x[keep].to(info.device), y[keep]
            views = [x, x.flip(-1)] if flip else [x]
            for v, view in enumerate(views):
                z = encode(view).float().cpu().numpy()
                write_latent_shard(staging, b * 2 + v, z, y.numpy())
                count += len(z)
        barrier()
        skipped = sorted(_gather(skipped, info.world_size))
        if len(skipped) == len(dataset):
            raise FFNetError(f"--images {images}: none of the {len(dataset)} images could be read (each listed "
                             "above); nothing was written")
        meta = {"scale_factor": SD_VAE_SCALE, "vae": str(vae_path), "image_size": image_size,
                "classes": dataset.classes, "num_classes": len(dataset.classes),
                "images": len(dataset) - len(skipped), "flip": flip,
                "latent_shape": [4, image_size // 8, image_size // 8], "skipped": skipped}
        if info.is_main:
            write_json(staging / "meta.json", meta)
            if out.is_dir():
                out.rmdir()  # checked empty above
            staging.rename(out)
        barrier()
    except BaseException:
        if info.is_main:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        cleanup_distributed()
    return {**meta, "latents_written_by_rank0": count, "output": str(out)}


def build_parser() -> OverrideParser:
    p = OverrideParser(prog="ffnet-gen-extract-latents", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="on failure show the full traceback")
    p.add_argument("--images", required=True, help="image folder (class sub-folders = labels)")
    p.add_argument("--vae", required=True, help="local diffusers AutoencoderKL folder (e.g. sd-vae-ft-ema)")
    p.add_argument("--output", required=True, metavar="FOLDER",
                   help="new (or empty) folder for the latent shards and meta.json")
    p.add_argument("--image-size", type=int, default=256, help="centre-crop size, a multiple of 8")
    p.add_argument("--batch-size", type=int, default=32, help="images per VAE batch (>= 1)")
    p.add_argument("--flip", action="store_true", help="also store the latents of the mirrored images")
    p.add_argument("--num-workers", type=int, default=4, help="data-loader processes reading images (0 = none)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images with more pixels (decompression-bomb guard)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    result = extract_latents(a.images, a.vae, a.output, image_size=a.image_size, batch_size=a.batch_size,
                             flip=a.flip, num_workers=a.num_workers, device=a.device, max_pixels=a.max_pixels)
    print(json.dumps({k: result[k] for k in ("output", "images", "num_classes", "latent_shape")}))
    if result["skipped"]:
        skipped = result["skipped"]
        listed = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        raise SomeInputsFailed(f"{len(skipped)} of {len(skipped) + result['images']} images could not be read and "
                               f"were left out of {result['output']} (listed in its meta.json under 'skipped'): "
                               f"{listed}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
