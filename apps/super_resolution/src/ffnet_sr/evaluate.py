"""Benchmark evaluation: PSNR/SSIM (Y channel, crop = scale) of a model or of bicubic on SR test sets.

``ffnet-sr-eval --checkpoint runs/x/best.pth --sets Set5 Set14 B100 --output results.json`` prints a paper-style
table and writes per-image and mean numbers as JSON. ``--bicubic --scale 4`` gives the baseline row (it
reproduces the published bicubic table, see docs/super_resolution.md). Sets are names under ``<data_root>/sr``
(Set5, Set14, B100, Urban100, Manga109, ...) or folders in the same ``HR`` + ``LR_bicubic/X<s>`` layout.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_json

from .data.dataset import BenchmarkPair, load_benchmark, to_rgb
from .data.io import write_png
from .imresize import imresize
from .inference import image_to_tensor, tensor_to_uint8, upscale_tensor
from .metrics import calculate_psnr, calculate_ssim

__all__ = [
    "Upscaler",
    "bicubic_upscaler",
    "model_upscaler",
    "evaluate_pairs",
    "evaluate_sets",
    "format_table",
    "load_model_for_inference",
    "resolve_device",
    "main",
]

#: ``Upscaler(lr)`` maps an ``HW``/``HWC`` uint8 LR image to the uint8 SR image of the same layout.
Upscaler = Callable[[np.ndarray], np.ndarray]

#: BT.601 luma weights (sum 1): turns an RGB network output back into one grey channel for grey inputs.
_LUMA = np.array([65.481, 128.553, 24.966]) / 219.0


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; anything else must be a valid torch device string."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise FFNetError(f"unknown device {device!r} (expected auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FFNetError(f"device {device!r} requested but CUDA is not available")
    return dev


def bicubic_upscaler(scale: int) -> Upscaler:
    """MATLAB-bicubic upscaling, rounded to uint8 (the literature's "Bicubic" row)."""

    def run(lr: np.ndarray) -> np.ndarray:
        return imresize(lr, float(scale))

    return run


def model_upscaler(
    model: nn.Module,
    scale: int,
    device: torch.device,
    tile: int | None = None,
    tile_pad: int | None = None,
    self_ensemble: bool = False,
    precision: str = "fp32",
    pad_multiple: int = 1,
) -> Upscaler:
    """Wrap a model as an :data:`Upscaler`. Grey inputs are replicated to RGB and mapped back with the luma
    weights (grey in, grey out), so a greyscale test image is scored on the same footing as for bicubic."""
    from metamixer.train.amp import autocast

    def run(lr: np.ndarray) -> np.ndarray:
        grey = lr.ndim == 2 or lr.shape[2] == 1
        x = image_to_tensor(to_rgb(lr)).to(device)
        y = upscale_tensor(
            model, x, scale, tile, tile_pad, self_ensemble, pad_multiple,
            autocast=lambda: autocast(device, precision), out_device=device,
        )
        if grey:
            y = (y * torch.tensor(_LUMA, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            return tensor_to_uint8(y)[:, :, 0]
        return tensor_to_uint8(y)

    return run


def evaluate_pairs(
    upscaler: Upscaler,
    pairs: Sequence[BenchmarkPair],
    scale: int,
    crop_border: int | None = None,
    y_channel: bool = True,
    compute_ssim: bool = True,
    save_dir: Path | None = None,
) -> dict[str, Any]:
    """Score ``upscaler`` on ``pairs``: per-image PSNR (and SSIM) plus their means (the paper's set average)."""
    crop = scale if crop_border is None else crop_border
    per_image: dict[str, dict[str, float]] = {}
    for pair in pairs:
        sr = upscaler(pair.lr)
        if sr.shape != pair.hr.shape:
            raise FFNetError(f"{pair.name}: upscaled shape {sr.shape} differs from HR {pair.hr.shape}")
        scores = {"psnr": calculate_psnr(sr, pair.hr, crop, y_channel)}
        if compute_ssim:
            scores["ssim"] = calculate_ssim(sr, pair.hr, crop, y_channel)
        per_image[pair.name] = scores
        if save_dir is not None:
            write_png(Path(save_dir) / f"{pair.name}x{scale}.png", sr)
    result: dict[str, Any] = {"psnr": float(np.mean([v["psnr"] for v in per_image.values()]))}
    if compute_ssim:
        result["ssim"] = float(np.mean([v["ssim"] for v in per_image.values()]))
    result["num_images"] = len(per_image)
    result["per_image"] = per_image
    return result


def evaluate_sets(
    upscaler: Upscaler,
    sets: Sequence[str],
    scale: int,
    crop_border: int | None = None,
    lr_source: str = "auto",
    save_dir: Path | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_pairs` over several benchmark sets (names or folders)."""
    out: dict[str, Any] = {}
    for name in sets:
        pairs = load_benchmark(name, scale, lr_source)
        set_name = Path(name).name
        out[set_name] = evaluate_pairs(
            upscaler, pairs, scale, crop_border, save_dir=(Path(save_dir) / set_name if save_dir else None)
        )
    return out


def format_table(label: str, scale: int, results: dict[str, Any]) -> str:
    """Paper-style row(s): ``method | scale | Set5 PSNR/SSIM | ...``."""
    names = list(results)
    header = "| method | scale | " + " | ".join(names) + " |"
    sep = "|" + "---|" * (len(names) + 2)
    cells = [f"{results[n]['psnr']:.2f}/{results[n]['ssim']:.4f}" for n in names]
    return "\n".join([header, sep, f"| {label} | x{scale} | " + " | ".join(cells) + " |"])


def load_model_for_inference(checkpoint: str | Path, device: torch.device) -> nn.Module:
    """Any FFNetSR weights (our checkpoint, EMA preferred; or the authors' ``params`` file), architecture
    inferred from the tensor shapes, in eval mode on ``device``."""
    from metamixer.train.checkpoint import load_state_dict_checked

    from .models import model_from_state_dict, read_weights

    sd = read_weights(checkpoint)
    model = model_from_state_dict(sd)
    load_state_dict_checked(model, sd, str(checkpoint))
    return model.to(device).eval()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ffnet-sr-eval",
        description="PSNR/SSIM (Y channel, crop = scale, MATLAB protocol) of an FFNetSR checkpoint or bicubic.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="FFNet checkpoint (EMA weights preferred) or authors' BasicSR .pth")
    src.add_argument("--bicubic", action="store_true", help="evaluate MATLAB-bicubic upscaling (baseline row)")
    p.add_argument("--scale", type=int, default=None, help="required with --bicubic; checked against the model")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"], help="names under <data>/sr or folders")
    p.add_argument("--crop-border", type=int, default=None, help="pixels shaved per side (default: the scale)")
    p.add_argument("--lr-source", choices=["auto", "folder", "generate"], default="auto")
    p.add_argument("--self-ensemble", action="store_true", help="x8 flips/rotations averaged (the '+' rows)")
    p.add_argument("--tile", type=int, default=None, help="LR tile side for large images (exact, see upscale)")
    p.add_argument("--pad-multiple", type=int, default=1,
                   help="reflect-pad LR inputs to a multiple (window-based models) and crop the output back")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--output", default=None, help="JSON file for the results (default: print only)")
    p.add_argument("--save-images", default=None, help="folder for the SR PNGs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.bicubic:
        if args.scale is None:
            raise FFNetError("--bicubic needs --scale")
        scale, label, upscaler = args.scale, "Bicubic", bicubic_upscaler(args.scale)
    else:
        device = resolve_device(args.device)
        model = load_model_for_inference(args.checkpoint, device)
        scale = model.scale
        if args.scale is not None and args.scale != scale:
            raise FFNetError(f"--scale {args.scale} does not match the checkpoint's x{scale} model")
        label = Path(args.checkpoint).stem + ("+" if args.self_ensemble else "")
        upscaler = model_upscaler(model, scale, device, args.tile, None, args.self_ensemble, args.precision,
                                  args.pad_multiple)
    start = time.perf_counter()
    results = evaluate_sets(
        upscaler, args.sets, scale, args.crop_border, args.lr_source,
        Path(args.save_images) if args.save_images else None,
    )
    print(format_table(label, scale, results))
    print(f"({time.perf_counter() - start:.1f} s; Y channel, crop {args.crop_border or scale}, MATLAB bicubic LR)")
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "method": label,
            "scale": scale,
            "crop_border": args.crop_border or scale,
            "y_channel": True,
            "self_ensemble": bool(args.self_ensemble),
            "results": results,
        }
        write_json(out, payload)
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
