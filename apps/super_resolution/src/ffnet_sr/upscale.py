"""Upscale image files: ``ffnet-sr-upscale INPUT... --scale S --output DIR [--checkpoint PATH] [--tile N]``.

- INPUT: image files and/or folders (their images, not recursive). Everything is checked before any work
  starts: an unreadable or missing file stops the run with one line naming it.
- Output: ``DIR/<stem>_x<S>.png``. Inputs are never overwritten (an output path equal to an input is refused),
  existing outputs only with ``--overwrite``, and two inputs mapping to the same output name are refused.
- Greyscale stays greyscale (the network runs on the grey value replicated to RGB and the result is mapped
  back with BT.601 luma weights); RGBA/LA: colour through the network, alpha upscaled separately with
  MATLAB bicubic (the network was never trained on alpha mattes); 16-bit PNGs stay 16-bit; EXIF orientation
  is applied so phone photos come out upright.
- ``--tile N``: process N x N LR tiles with exact context (see ``inference.py``) — memory stays bounded for any
  image size and the result equals whole-image inference. ``--self-ensemble``: x8 flips/rotations (slower,
  ~+0.1 dB). ``--bicubic``: MATLAB-bicubic instead of a network (no checkpoint needed).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from metamixer.train.device import resolve_device
from metamixer.train.errors import FFNetError, run_cli

from .data.io import IMAGE_EXTENSIONS, LoadedImage, read_image, write_png
from .imresize import imresize
from .inference import image_to_tensor, load_model_for_inference, tensor_to_uint8, upscale_tensor

__all__ = ["collect_inputs", "plan_outputs", "upscale_loaded", "main"]

_LUMA = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float32) / 219.0


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand folders, check every file exists and decodes (header + data), keep order, drop duplicates."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FFNetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FFNetError(f"input not found: {p}")
    unique: list[Path] = []
    seen: set[Path] = set()
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    for f in unique:
        try:
            with Image.open(f) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise FFNetError(f"cannot read image {f}: not a readable image file ({type(exc).__name__})") from None
    return unique


def plan_outputs(files: Sequence[Path], output_dir: Path, scale: int, overwrite: bool = False) -> list[Path]:
    """Output path per input; refuses to overwrite inputs, duplicate targets and (without ``overwrite``) files."""
    inputs = {f.resolve() for f in files}
    outs: list[Path] = []
    taken: dict[Path, Path] = {}
    for f in files:
        out = output_dir / f"{f.stem}_x{scale}.png"
        key = out.resolve()
        if key in inputs:
            raise FFNetError(f"refusing to overwrite input file {f} with its upscaled version; choose another --output")
        if key in taken:
            raise FFNetError(f"{f} and {taken[key]} would both be written to {out}; rename one of them")
        if out.exists() and not overwrite:
            raise FFNetError(f"output {out} already exists (use --overwrite to replace it)")
        taken[key] = f
        outs.append(out)
    return outs


def _quantize(img: np.ndarray, bit_depth: int) -> np.ndarray:
    return img.astype(np.uint16 if bit_depth == 16 else np.uint8)


def upscale_loaded(
    loaded: LoadedImage,
    scale: int,
    model: torch.nn.Module | None,
    device: torch.device,
    tile: int | None = None,
    tile_pad: int | None = None,
    self_ensemble: bool = False,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Upscale decoded pixels (colour through ``model`` or bicubic when None; alpha always bicubic)."""
    max_value = 65535 if loaded.bit_depth == 16 else 255
    color = loaded.color
    if model is None:
        out = imresize(color, float(scale))
    else:
        from metamixer.train.amp import autocast

        grey = color.ndim == 2
        x = image_to_tensor(np.repeat(color[:, :, None], 3, 2) if grey else color, max_value).to(device)
        y = upscale_tensor(
            model, x, scale, tile, tile_pad, self_ensemble,
            autocast=lambda: autocast(device, precision), out_device="cpu",
        )
        if grey:
            y = (y * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
        out = tensor_to_uint8(y, max_value)
        if grey:
            out = out[:, :, 0]
    alpha = None
    if loaded.alpha is not None:
        alpha = _quantize(imresize(loaded.alpha, float(scale)), loaded.bit_depth)
    return _quantize(out, loaded.bit_depth), alpha


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffnet-sr-upscale", description="Upscale images with FFNetSR (or bicubic).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    p.add_argument("--scale", type=int, required=True, help="upscaling factor; must match the checkpoint")
    p.add_argument("--output", required=True, help="output folder (created if missing)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="FFNet checkpoint from ffnet-sr-train, or the authors' BasicSR .pth")
    src.add_argument("--bicubic", action="store_true", help="MATLAB-bicubic upscaling, no network")
    p.add_argument("--tile", type=int, default=None, help="LR tile side; bounds memory for big images (exact)")
    p.add_argument("--tile-pad", type=int, default=None,
                   help="context per tile side in LR pixels (default: the receptive radius, i.e. exact)")
    p.add_argument("--self-ensemble", action="store_true", help="average over 8 flips/rotations")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scale < 1:
        raise FFNetError(f"--scale must be a positive integer, got {args.scale}")
    if args.tile is not None and args.tile < 1:
        raise FFNetError(f"--tile must be >= 1, got {args.tile}")
    if args.tile_pad is not None and args.tile_pad < 0:
        raise FFNetError(f"--tile-pad must be >= 0, got {args.tile_pad}")
    files = collect_inputs(args.inputs)
    output_dir = Path(args.output).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise FFNetError(f"--output {output_dir} exists and is not a folder")
    outs = plan_outputs(files, output_dir, args.scale, args.overwrite)
    device = resolve_device(args.device, key="--device")
    model = None
    if args.checkpoint:
        model = load_model_for_inference(args.checkpoint, device)
        if model.scale != args.scale:
            raise FFNetError(f"--scale {args.scale} does not match the checkpoint {args.checkpoint} (x{model.scale})")
    output_dir.mkdir(parents=True, exist_ok=True)
    for f, out in zip(files, outs):
        start = time.perf_counter()
        loaded = read_image(f, exif_transpose=True)
        color, alpha = upscale_loaded(loaded, args.scale, model, device, args.tile, args.tile_pad,
                                      args.self_ensemble, args.precision)
        write_png(out, color, alpha)
        h, w = loaded.color.shape[:2]
        print(f"{f} ({w}x{h}) -> {out} ({color.shape[1]}x{color.shape[0]}, {time.perf_counter() - start:.1f} s)")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
