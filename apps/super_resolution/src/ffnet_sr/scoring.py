"""Scoring an :data:`~ffnet_sr.inference.Upscaler` on SR benchmark sets with the paper protocol.

One place for the protocol, so training's validation, ``ffnet-sr-eval`` and the quick start score the same way
and describe it with the same words in every ``results.json`` (:func:`protocol`; the facts are measured in
``../shared/reference/sr_protocol.md`` and ``docs/super_resolution.md`` §2).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metamixer.train.errors import FFNetError

from .data.dataset import BenchmarkPair, load_benchmark
from .data.io import write_image
from .inference import Upscaler
from .metrics import calculate_psnr, calculate_ssim

__all__ = ["check_scorable", "evaluate_pairs", "evaluate_sets", "format_table", "protocol"]

#: how Y is computed (MATLAB rgb2ycbcr on doubles), worded as in sr_protocol.md
Y_CHANNEL = ("Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (MATLAB rgb2ycbcr on doubles), not rounded; "
             "greyscale images used directly as Y")
#: what is scored with ``metric_channel="rgb"`` (BasicSR's ``test_y_channel: false``)
RGB_CHANNELS = ("R, G, B on [0, 255]: PSNR from the MSE over all three channels, SSIM the mean of the three "
                "channels' SSIM; greyscale images scored as their one channel")


def protocol(crop_border: int, lr_source: str = "auto", metric_channel: str = "y", **extra: Any) -> dict[str, Any]:
    """The ``protocol`` entry of a results.json: ``crop_border`` as actually used, the channel scored
    (``metric_channel`` and BasicSR's ``test_y_channel``) and the rest of the choices that decide whether a number
    is comparable with the literature (published SR tables are Y: ``rgb`` numbers are not comparable with them)."""
    if metric_channel not in ("y", "rgb"):
        raise ValueError(f"metric_channel must be 'y' or 'rgb', got {metric_channel!r}")
    y = metric_channel == "y"
    return {
        "crop_border": int(crop_border),
        "metric_channel": metric_channel,
        "test_y_channel": y,
        **({"y_channel": Y_CHANNEL} if y else {"rgb_channels": RGB_CHANNELS}),
        "psnr": "float64 on [0, 255] after shaving crop_border pixels per side; mean over the images of a set",
        "ssim": "11x11 Gaussian window sigma 1.5, K1 0.01, K2 0.03, L 255, 'valid' filtering; mean over images",
        "lr": {"auto": "provided LR files when present, else MATLAB-bicubic of the HR mod-crop (identical pixels)",
               "folder": "provided MATLAB-bicubic LR files",
               "generate": "MATLAB-bicubic (edge clamp, uint8 after each pass) of the HR mod-crop"}[lr_source],
        **extra,
    }


#: SSIM's Gaussian window side (metrics.py): every side of the cropped image must hold one window
_SSIM_WINDOW = 11


def check_scorable(pairs: Sequence[BenchmarkPair], scale: int, crop_border: int, compute_ssim: bool = True) -> None:
    """Refuse, before any upscaling, an image too small to be scored: shaving ``crop_border`` pixels per side
    must leave at least one SSIM window (one pixel for PSNR alone), and the LR image at least one pixel.

    Why up front: a set is scored image by image, so a 3x5 file found at the end would otherwise cost the whole
    run and end in a metrics ``ValueError`` instead of a message saying which file and what size is needed.
    """
    need = max(2 * crop_border + (_SSIM_WINDOW if compute_ssim else 1), scale)
    for pair in pairs:
        h, w = pair.hr.shape[:2]
        if min(h, w) < need:
            why = (f"{crop_border} shaved per side + SSIM's {_SSIM_WINDOW}x{_SSIM_WINDOW} window" if compute_ssim
                   else f"{crop_border} shaved per side + 1")
            raise FFNetError(
                f"{pair.path or pair.name}: {w}x{h} pixels (after cropping to a multiple of the scale) is too small "
                f"to score at x{scale} with crop_border {crop_border}: each side needs at least {need} pixels "
                f"({why}); remove the image from the set"
            )


def evaluate_pairs(
    upscaler: Upscaler,
    pairs: Sequence[BenchmarkPair],
    scale: int,
    crop_border: int | None = None,
    y_channel: bool = True,
    compute_ssim: bool = True,
    save_dir: Path | None = None,
    suffix: str | None = None,
    ext: str = "png",
    jpeg_quality: int = 95,
) -> dict[str, Any]:
    """Score ``upscaler`` on ``pairs``: per-image PSNR (and SSIM) plus their means (the paper's set average), on Y
    (``y_channel``) or on R, G, B. With ``save_dir`` each SR image is written as
    ``save_dir/<name><suffix>.<ext>`` (suffix default ``x<scale>``, e.g. ``babyx2.png``; a recursive set's
    ``sub/name`` keeps its sub-folder); the scores are always those of the uint8 pixels, never of a re-read JPEG."""
    crop = scale if crop_border is None else crop_border
    check_scorable(pairs, scale, crop, compute_ssim)
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
            tail = f"x{scale}" if suffix is None else suffix
            write_image(Path(save_dir) / f"{pair.name}{tail}.{ext}", sr, jpeg_quality=jpeg_quality)
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
    y_channel: bool = True,
    recursive: bool = False,
    suffix: str | None = None,
    ext: str = "png",
    jpeg_quality: int = 95,
) -> dict[str, Any]:
    """:func:`evaluate_pairs` over several benchmark sets (names or folders), keyed by set name; ``recursive``
    searches each set's HR folder recursively (LR files paired by relative path, see
    :func:`~ffnet_sr.data.dataset.load_benchmark`)."""
    out: dict[str, Any] = {}
    for name in sets:
        pairs = load_benchmark(name, scale, lr_source, recursive=recursive)
        set_name = Path(name).name
        out[set_name] = evaluate_pairs(
            upscaler, pairs, scale, crop_border, y_channel, save_dir=(Path(save_dir) / set_name if save_dir else None),
            suffix=suffix, ext=ext, jpeg_quality=jpeg_quality,
        )
    return out


def format_table(label: str, scale: int, results: dict[str, Any]) -> str:
    """Paper-style row(s): ``method | scale | Set5 PSNR/SSIM | ...``."""
    names = list(results)
    header = "| method | scale | " + " | ".join(names) + " |"
    sep = "|" + "---|" * (len(names) + 2)
    cells = [f"{results[n]['psnr']:.2f}/{results[n]['ssim']:.4f}" for n in names]
    return "\n".join([header, sep, f"| {label} | x{scale} | " + " | ".join(cells) + " |"])
