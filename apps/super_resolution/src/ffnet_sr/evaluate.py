"""Benchmark evaluation: PSNR/SSIM (Y channel, crop = scale) of a model or of bicubic on SR test sets.

``--metric-channel rgb`` scores R, G, B instead of Y (BasicSR's ``test_y_channel: false``; not comparable with
the published tables, which are Y), ``--recursive`` takes each set's HR tree (LR paired by relative path),
``--save-images DIR`` writes the SR images as ``<name><suffix>.<ext>`` (``--suffix``, default ``x<S>``;
``--ext png|jpg|tif``). ``--tile N`` scores tile by tile; ``--tile-pad P`` is the context per tile side: the
default (the receptive radius) is exact, a smaller one faster and approximate. The channel, the crop and the
tile pad actually used are recorded under ``protocol`` in results.json.

``ffnet-sr-eval --checkpoint runs/x/best.pth --sets Set5 Set14 B100 --output results.json`` prints a paper-style
table and writes the one results.json shape (:func:`metamixer.train.results.write_results`: set means under
``metrics``, per-image scores under ``per_image``, the scoring choices under ``protocol``). ``--bicubic --scale 4``
gives the baseline row (it reproduces the published bicubic table, see docs/super_resolution.md). Sets are names
under ``<data_root>/sr`` (Set5, Set14, B100, Urban100, Manga109, ...) or folders in the same ``HR`` +
``LR_bicubic/X<s>`` layout.

The flags are shorthands for config keys (``--tile 256`` = ``eval.tile=256``, ``--device cpu`` =
``run.device=cpu``); only the ``run`` and ``eval`` sections may be overridden here (the model comes from the
checkpoint's weights).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import torch

from metamixer.train.cli import OverrideParser, build_eval_parser, non_negative_int, positive_int
from metamixer.train.config import COMMAND_LINE, apply_overrides, config_from_dict, config_to_dict
from metamixer.train.device import resolve_device
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_results
from metamixer.train.sections import RunConfig

from .config import EvalConfig, OutputExt
from .inference import bicubic_upscaler, load_model_for_inference, model_upscaler
from .naming import check_suffix, jpeg_quality
from .scoring import evaluate_sets, format_table, protocol

__all__ = ["EvalSettings", "build_parser", "main"]

#: flag -> key of the eval section (--device / --precision go to run.*)
_EVAL_FLAGS = ("sets", "crop_border", "lr_source", "self_ensemble", "tile", "tile_pad", "pad_multiple", "save_images",
               "metric_channel", "recursive", "suffix", "ext", "jpeg_quality")


@dataclass
class EvalSettings:
    """What ``ffnet-sr-eval`` reads from the command line: ``run.device`` / ``run.precision`` / ``run.threads``
    and the ``eval`` section of :class:`~ffnet_sr.config.SRConfig`."""

    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def build_parser() -> OverrideParser:
    p = build_eval_parser(
        "ffnet-sr-eval",
        "PSNR/SSIM (Y channel or RGB, crop = scale, MATLAB protocol) of an FFNetSR checkpoint or of bicubic.",
        checkpoint_required=False,
    )
    p.add_argument("--bicubic", action="store_true", help="evaluate MATLAB-bicubic upscaling (baseline row)")
    p.add_argument("--scale", type=positive_int, default=None,
                   help="required with --bicubic; checked against the model")
    p.add_argument("--sets", nargs="+", default=None, help="eval.sets: names under <data>/sr or folders "
                   "(default Set5 Set14 B100)")
    p.add_argument("--crop-border", type=non_negative_int, default=None,
                   help="eval.crop_border: pixels shaved per side (default: the scale)")
    p.add_argument("--lr-source", choices=["auto", "folder", "generate"], default=None, help="eval.lr_source")
    p.add_argument("--self-ensemble", action="store_true", default=None,
                   help="eval.self_ensemble: x8 flips/rotations averaged (the '+' rows)")
    p.add_argument("--tile", type=positive_int, default=None, help="eval.tile: LR tile side for large images (exact)")
    p.add_argument("--tile-pad", type=non_negative_int, default=None, help="eval.tile_pad: context per tile side "
                   "in LR pixels (default: the receptive radius, i.e. exact; smaller: faster, approximate)")
    p.add_argument("--pad-multiple", type=positive_int, default=None,
                   help="eval.pad_multiple: reflect-pad LR inputs to a multiple and crop the output back")
    p.add_argument("--save-images", default=None, help="eval.save_images: folder for the SR images")
    p.add_argument("--metric-channel", choices=["y", "rgb"], default=None,
                   help="eval.metric_channel: score the Y channel (default; the paper protocol) or R, G, B")
    p.add_argument("--recursive", action="store_true", default=None,
                   help="eval.recursive: search each set's HR folder recursively (LR paired by relative path)")
    p.add_argument("--suffix", default=None, help="eval.suffix: saved image <name><suffix>.<ext> (default x<S>)")
    p.add_argument("--ext", choices=list(get_args(OutputExt)), default=None,
                   help="eval.ext: saved image format (default png)")
    p.add_argument("--jpeg-quality", type=jpeg_quality, default=None, help="eval.jpeg_quality for --ext jpg (95)")
    p.add_argument("--device", default=None, help="run.device (auto | cpu | cuda | cuda:N | mps)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None, help="run.precision")
    return p


def settings_from_args(args: Any) -> EvalSettings:
    """Overrides first, then the flags that were given (a flag wins over an override of the same key). The flags'
    ranges are those of their keys, checked while parsing (core's typed options), so a bad value is reported
    under the flag as typed and an override under its dotted key."""
    merged = apply_overrides(config_to_dict(EvalSettings()), args.overrides, cls=EvalSettings, source=COMMAND_LINE)
    for name in _EVAL_FLAGS:
        if getattr(args, name) is not None:
            merged["eval"][name] = getattr(args, name)
    for name in ("device", "precision"):
        if getattr(args, name) is not None:
            merged["run"][name] = getattr(args, name)
    return config_from_dict(EvalSettings, merged, source=COMMAND_LINE)


def _tiling(model: torch.nn.Module | None, tile: int | None, tile_pad: int | None) -> tuple[int | None, bool | None]:
    """The tile pad actually used and whether tiling is exact (pad >= the receptive radius, so tiles equal the
    whole image up to float rounding), for results.json; ``(None, None)`` without tiling or without a model."""
    if tile is None or model is None:
        return tile_pad, None
    from .inference import receptive_radius

    radius = receptive_radius(model)
    pad = radius if tile_pad is None else tile_pad
    return pad, pad >= radius


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.checkpoint is None) == (not args.bicubic):
        raise FFNetError("give exactly one of --checkpoint CKPT and --bicubic (with --scale S)")
    cfg = settings_from_args(args)
    ev = cfg.eval
    if ev.suffix is not None:
        check_suffix(ev.suffix, "--suffix" if args.suffix is not None else "eval.suffix")
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    if args.bicubic:
        if args.scale is None:
            raise FFNetError("--bicubic needs --scale")
        scale, label, upscaler = args.scale, "Bicubic", bicubic_upscaler(args.scale)
    else:
        device = resolve_device(cfg.run.device)
        model = load_model_for_inference(args.checkpoint, device)
        scale = model.scale
        if args.scale is not None and args.scale != scale:
            raise FFNetError(f"--scale {args.scale} does not match the checkpoint's x{scale} model "
                             f"({args.checkpoint}; leave --scale out or use --scale {scale})")
        label = Path(args.checkpoint).stem + ("+" if ev.self_ensemble else "")
        upscaler = model_upscaler(model, scale, device, ev.tile, ev.tile_pad, ev.self_ensemble, cfg.run.precision,
                                  ev.pad_multiple)
    crop = scale if ev.crop_border is None else ev.crop_border
    tile_pad, tile_exact = _tiling(None if args.bicubic else model, ev.tile, ev.tile_pad)
    start = time.perf_counter()
    results = evaluate_sets(upscaler, ev.sets, scale, crop, ev.lr_source,
                            Path(ev.save_images) if ev.save_images else None, y_channel=ev.metric_channel == "y",
                            recursive=ev.recursive, suffix=ev.suffix, ext=ev.ext, jpeg_quality=ev.jpeg_quality)
    wall = time.perf_counter() - start
    print(format_table(label, scale, results))
    channel = "Y channel" if ev.metric_channel == "y" else "RGB channels"
    print(f"({wall:.1f} s; {channel}, crop {crop}, MATLAB bicubic LR)")
    if args.output:
        write_results(
            args.output,
            metrics={name: {"psnr": r["psnr"], "ssim": r["ssim"]} for name, r in results.items()},
            data={"sets": list(results), "scale": scale, "num_images": {n: r["num_images"] for n, r in results.items()}},
            checkpoint=args.checkpoint,
            protocol=protocol(crop, ev.lr_source, ev.metric_channel, self_ensemble=ev.self_ensemble, tile=ev.tile,
                              tile_pad=tile_pad, precision="fp64" if args.bicubic else cfg.run.precision,
                              tile_exact=tile_exact, recursive=ev.recursive),
            wall_s=round(wall, 2),
            method=label,
            per_image={n: r["per_image"] for n, r in results.items()},
        )
        print(f"results: {args.output}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
