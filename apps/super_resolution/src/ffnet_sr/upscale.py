"""Upscale image files: ``ffnet-sr-upscale INPUT... --scale S --output DIR (--checkpoint PATH | --bicubic)``.

- INPUT: image files and/or folders (the images directly inside; with ``--recursive`` the whole tree, hidden
  sub-folders and the output folder skipped, and each image's sub-folder is kept under the output folder).
- Bad input, in the order it is found (each: one ``error:`` line naming the file or option): a wrong option
  value (``--scale``, ``--tile``, ``--tile-pad``, ``--max-pixels``; a scale the checkpoint's model does not
  have), a missing input, an empty folder, an output that would overwrite an input or another output, an
  existing output without ``--overwrite`` and a bad checkpoint stop the command with exit 2 before anything is
  written (the output folder is not even created). An image that cannot be read (truncated, not an image, a
  decompression bomb over ``--max-pixels``) stops a one-image run the same way; in a run over several images
  it is reported, the others are upscaled, the failed ones are listed at the end and the exit code is 1.
- Output: ``DIR/[<sub-folder>/]<stem><suffix>.<ext>``; ``--suffix`` defaults to ``_x<S>`` (``--suffix ""``: the
  input's stem), ``--ext`` to ``png`` (``jpg`` with ``--jpeg-quality``, default 95; ``tif``, lossless, 16 bits
  kept). Inputs of one folder that share a stem (``a.jpg`` and ``a.png``) get their extension in the name
  (``a_jpg_x2.png``). JPEG holds neither alpha nor 16 bits: the line printed for such an image says what was
  dropped. Written under a temporary name and renamed, so a failed image leaves no partial file. Inputs are
  never overwritten, existing outputs only with ``--overwrite``.
- Greyscale stays greyscale (the network runs on the grey value replicated to RGB and the result is mapped
  back with BT.601 luma weights); RGBA/LA and transparent palettes: colour through the network, alpha upscaled
  separately with MATLAB bicubic (the network was never trained on alpha mattes); palette and CMYK become RGB;
  16-bit PNGs stay 16-bit; EXIF orientation is applied so phone photos come out upright.
- ``--tile N``: process N x N LR tiles with exact context (see ``inference.py``) — memory stays bounded for any
  image size and the result equals whole-image inference. ``--self-ensemble``: x8 flips/rotations (slower,
  ~+0.1 dB). ``--bicubic``: MATLAB-bicubic instead of a network (no checkpoint needed). ``--debug``: a failure
  shows its traceback.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath
from typing import NamedTuple

import numpy as np
import torch

from metamixer.train.cli import build_eval_parser, non_negative_int, positive_int
from metamixer.train.device import resolve_device
from metamixer.train.errors import FFNetError, for_each_input, run_cli

from .data.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    OUTPUT_EXTENSIONS,
    LoadedImage,
    list_images,
    read_image,
    write_image,
)
from .imresize import imresize
from .inference import (
    cpu_fast_layout,
    image_to_tensor,
    load_model_for_inference,
    tensor_to_uint8,
    upscale_tensor,
)
from .naming import check_suffix, jpeg_quality, output_name

__all__ = ["InputFile", "collect_inputs", "plan_outputs", "upscale_loaded", "main"]

_LUMA = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float32) / 219.0


class InputFile(NamedTuple):
    """An image to upscale and its name relative to the input folder it was found in (``sub/a.png`` in a
    recursive search; just the file name for a file given directly): its output keeps that sub-folder."""

    path: Path
    rel: PurePath


def collect_inputs(inputs: Sequence[str | Path], recursive: bool = False,
                   exclude: Iterable[Path] = ()) -> list[InputFile]:
    """Expand folders (their whole tree with ``recursive``, skipping the folders in ``exclude``), check every
    input exists, keep order, drop duplicates.

    Images are not decoded here: a file that turns out unreadable is reported when its turn comes, so that one
    bad file in a folder does not stop the others (see the module docstring).
    """
    files: list[InputFile] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = list_images(p, recursive, exclude)
            if not found:
                where = f"folder {p} or its sub-folders" if recursive else f"folder {p}"
                raise FFNetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {where}")
            files.extend(InputFile(q, q.relative_to(p)) for q in found)
        elif p.is_file():
            files.append(InputFile(p, PurePath(p.name)))
        else:
            raise FFNetError(f"input not found: {p}")
    unique: list[InputFile] = []
    seen: set[Path] = set()
    for f in files:
        key = f.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def plan_outputs(files: Sequence[InputFile | Path], output_dir: Path, scale: int, overwrite: bool = False,
                 suffix: str | None = None, ext: str = "png") -> list[Path]:
    """Output path per input (``output_dir/<sub-folder>/<stem><suffix>.<ext>``, suffix default ``_x<scale>``);
    refuses to overwrite inputs, duplicate targets and (without ``overwrite``) existing files.

    Inputs of one output folder sharing a stem (``photo.jpg`` next to ``photo.png``) get their extension in the
    name instead of being refused, because a folder holding both is common and both results are wanted.
    """
    found = [f if isinstance(f, InputFile) else InputFile(Path(f), PurePath(Path(f).name)) for f in files]
    tail = f"_x{scale}" if suffix is None else suffix
    inputs = {f.path.resolve() for f in found}
    exts: dict[tuple[PurePath, str], set[str]] = {}
    for f in found:
        exts.setdefault((f.rel.parent, f.rel.stem), set()).add(f.rel.suffix.lower())
    outs: list[Path] = []
    taken: dict[Path, Path] = {}
    for item in found:
        f, rel = item.path, item.rel
        if len(exts[(rel.parent, rel.stem)]) > 1:  # same stem, other extension: name them apart
            rel = rel.with_name(f"{rel.stem}_{rel.suffix.lstrip('.').lower()}{rel.suffix}")
        out = output_dir / output_name(rel, tail, ext)
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
        rgb = np.repeat(color[:, :, None], 3, 2) if grey else color
        x = cpu_fast_layout(image_to_tensor(rgb, max_value).to(device))
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
    """Core's command shape (``--checkpoint``, ``--output``, ``--debug`` worded as in every FFNet command), with
    ``--output`` a required folder here instead of a results file."""
    p = build_eval_parser("ffnet-sr-upscale", "Upscale images with FFNetSR (or bicubic).", checkpoint_required=False,
                          overrides=False)
    p.epilog = None  # core's epilog describes key=value overrides, which this command does not take
    output = p._option_string_actions["--output"]  # argparse has no public way to re-describe an option
    output.required, output.metavar = True, "DIR"
    output.help = "folder for <stem><suffix>.<ext> (created when the first image is written)"
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    p.add_argument("--recursive", action="store_true",
                   help="search folders recursively; outputs keep each image's sub-folder")
    p.add_argument("--suffix", default=None, help="appended to each output's stem (default _x<S>; '' = none)")
    p.add_argument("--ext", choices=OUTPUT_EXTENSIONS, default="png",
                   help="output format (default png; jpg has no alpha and no 16 bits; tif is lossless)")
    p.add_argument("--jpeg-quality", type=jpeg_quality, default=95, help="JPEG quality 1-100 for --ext jpg (95)")
    p.add_argument("--scale", type=positive_int, required=True, help="upscaling factor; must match the checkpoint")
    p.add_argument("--bicubic", action="store_true", help="MATLAB-bicubic upscaling, no network (no --checkpoint)")
    p.add_argument("--tile", type=positive_int, default=None, help="LR tile side; bounds memory for big images (exact)")
    p.add_argument("--tile-pad", type=non_negative_int, default=None,
                   help="context per tile side in LR pixels (default: the receptive radius, i.e. exact)")
    p.add_argument("--self-ensemble", action="store_true", help="average over 8 flips/rotations")
    p.add_argument("--max-pixels", type=non_negative_int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels (decompression bombs; default {DEFAULT_MAX_PIXELS:,}; "
                   "0 = no limit)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    return p


def check_options(args: argparse.Namespace) -> None:
    """What argparse cannot say on its own (the ranges of --scale / --tile / --tile-pad / --max-pixels are
    checked by core's typed options while parsing, in the words every FFNet command uses)."""
    if (args.checkpoint is None) == (not args.bicubic):
        raise FFNetError("give exactly one of --checkpoint CKPT and --bicubic")
    if args.suffix is not None:
        check_suffix(args.suffix)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_options(args)
    output_dir = Path(args.output).expanduser()
    found = collect_inputs(args.inputs, args.recursive, exclude=[output_dir])
    files = [f.path for f in found]
    if output_dir.exists() and not output_dir.is_dir():
        raise FFNetError(f"--output {output_dir} exists and is not a folder")
    outs = dict(zip(files, plan_outputs(found, output_dir, args.scale, args.overwrite, args.suffix, args.ext)))
    device = resolve_device(args.device, key="--device")
    model = None
    if args.checkpoint:
        model = load_model_for_inference(args.checkpoint, device)
        if model.scale != args.scale:
            raise FFNetError(f"--scale {args.scale}: the checkpoint {args.checkpoint} holds a x{model.scale} model "
                             f"(use --scale {model.scale})")
    max_pixels = args.max_pixels or None

    def upscale_file(f: Path) -> Path:
        start = time.perf_counter()
        loaded = read_image(f, exif_transpose=True, max_pixels=max_pixels)
        color, alpha = upscale_loaded(loaded, args.scale, model, device, args.tile, args.tile_pad,
                                      args.self_ensemble, args.precision)
        # temporary name + rename: never a partial file under this name
        lost = write_image(outs[f], color, alpha, args.jpeg_quality)
        h, w = loaded.color.shape[:2]
        note = f"; {', '.join(lost)}" if lost else ""
        print(f"{f} ({w}x{h}) -> {outs[f]} ({color.shape[1]}x{color.shape[0]}, {time.perf_counter() - start:.1f} s"
              f"{note})", flush=True)
        return outs[f]

    if len(files) == 1:  # one image: its problem is the command's problem (one line, exit 2)
        upscale_file(files[0])
    else:  # several: go on past bad ones, list them at the end, exit 1
        for_each_input(files, upscale_file, "image")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
