"""Evaluate a checkpoint: ``ffnet-cls-eval --checkpoint best.pth --data VAL [--unfused] [--ema] [--output F]``.

Top-1 / top-5 / loss on a class folder or list, of the fused (deploy) form by default (``--unfused``: the train
form; both give the same predictions), printed as a table and written as ``results.json`` (metamixer's one
results shape). Works with our run checkpoints (architecture and class names inside) and the authors' files
(``--model ffnet_N``; class folders are then assumed to be in index order).

Unreadable images are never replaced by others (that would score some images twice): the whole set is read
once, and ``--on-bad-image error`` (the default) then stops with one line listing every bad file (nothing is
written), while ``skip`` scores the rest and lists the skipped files in the table and in results.json.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from metamixer.train.cli import build_eval_parser, non_negative_int, positive_int
from metamixer.train.device import resolve_device
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.images import DEFAULT_MAX_PIXELS
from metamixer.train.outputs import check_output_file
from metamixer.train.results import write_results

from .cli_args import fraction
from .data import (
    BAD_IMAGE_POLICIES,
    BadImageError,
    ReportBadImages,
    build_dataset,
    build_transforms,
    collate_reporting,
    describe_bad_images,
)
from .engine import evaluate
from .models.registry import load_model
from .task import scored_batches


def evaluate_checkpoint(
    checkpoint: str,
    data: str,
    model_name: str | None = None,
    fused: bool = True,
    use_ema: bool = False,
    batch_size: int = 64,
    workers: int = 4,
    input_size: int | None = None,
    crop_pct: float | None = None,
    device: str = "auto",
    precision: str = "fp32",
    on_bad_image: str = "error",
    root: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict[str, Any]:
    """Metrics and protocol of one checkpoint on ``data`` (see the module docstring); ``skipped`` lists the
    images left out under ``on_bad_image="skip"`` (``{"path", "reason"}``)."""
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise FFNetError(f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")
    dev = resolve_device(device, key="--device")
    loaded = load_model(checkpoint, model_name=model_name, use_ema=use_ema, fused=fused)
    model = loaded.model.to(dev).eval()
    pcfg = model.pretrained_cfg
    dcfg = (loaded.config or {}).get("data", {})
    size = input_size or dcfg.get("input_size") or pcfg["input_size"][-1]
    crop = crop_pct or dcfg.get("crop_pct") or pcfg["crop_pct"]
    mean = tuple(dcfg.get("mean") or pcfg["mean"])
    std = tuple(dcfg.get("std") or pcfg["std"])
    interp = dcfg.get("interpolation") or pcfg["interpolation"]
    tf = build_transforms(False, size, crop, interp, mean, std)
    ds = build_dataset(data, tf, on_bad_image, classes=loaded.classes, allow_empty=True, root=root,
                       max_pixels=max_pixels, exif=dcfg.get("exif", True))
    if len(ds.classes) > model.num_classes:
        raise FFNetError(f"{data} has {len(ds.classes)} classes but {checkpoint} predicts {model.num_classes}")
    loader = DataLoader(ReportBadImages(ds, replace=False), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=collate_reporting)
    t0 = time.time()
    found: list[tuple[str, str]] = []
    try:
        metrics: dict[str, float] | None = evaluate(model, scored_batches(loader, found), dev, precision)
    except FFNetError:  # "evaluation set is empty": no image was readable
        if not found:
            raise
        metrics = None
    bad = dict(found)
    if metrics is None:
        raise BadImageError(f"{describe_bad_images(found, len(ds), str(data))}; none is left to score")
    if bad and on_bad_image == "error":
        raise BadImageError(f"{describe_bad_images(found, len(ds), str(data))}; nothing was scored or written: "
                            "fix or remove them, or pass --on-bad-image skip to score the rest")
    return {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "model": getattr(model, "model_name", model_name),
        "fused": bool(model.is_fused),
        "ema": use_ema,
        "input_size": size,
        "crop_pct": crop,
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "loss": metrics["loss"],
        "samples": int(metrics["samples"]),
        "precision": precision,
        "on_bad_image": on_bad_image,
        "skipped": [{"path": path, "reason": reason} for path, reason in bad.items()],
        "seconds": time.time() - t0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = build_eval_parser("ffnet-cls-eval", "Top-1/top-5/loss of a checkpoint on a val set (fused deploy form "
                          "unless --unfused); prints a table and writes --output (default: results.json "
                          "beside the checkpoint).")
    p.add_argument("--data", required=True, help="class-folder root or .csv/.txt list")
    p.add_argument("--model", default=None, help="architecture for official checkpoints (ffnet_1..4)")
    p.add_argument("--unfused", action="store_true",
                   help="evaluate the train form (default: the fused, re-parameterized deploy form)")
    p.add_argument("--ema", action="store_true", help="use the EMA weights")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--workers", type=non_negative_int, default=4)
    p.add_argument("--input-size", type=positive_int, default=None)
    p.add_argument("--crop-pct", type=fraction, default=None)
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--on-bad-image", default="error", choices=BAD_IMAGE_POLICIES,
                   help="error: list every unreadable image and stop, nothing written; skip: score the rest and "
                        "list the skipped files in the table and results.json")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images declaring more pixels (decompression bombs); default %(default)s")
    p.add_argument("--root", default=None, help="base folder for relative paths in a list file")
    a = p.parse_args(argv)
    if a.overrides:
        raise FFNetError(f"ffnet-cls-eval takes no key=value overrides (got {' '.join(a.overrides)}); "
                         "its settings are flags, see --help")
    check_output_file(a.output, "--output")
    if a.root is not None and not Path(a.root).is_dir():
        raise FFNetError(f"--root: folder not found: {a.root}")
    r = evaluate_checkpoint(a.checkpoint, a.data, a.model, not a.unfused, a.ema, a.batch_size, a.workers,
                            a.input_size, a.crop_pct, a.device, a.precision, a.on_bad_image, a.root, a.max_pixels)
    output = Path(a.output) if a.output else Path(a.checkpoint).parent / "results.json"
    write_results(output, metrics={k: r[k] for k in ("top1", "top5", "loss")}, data=r["data"],
                  checkpoint=r["checkpoint"], wall_s=r["seconds"], model=r["model"],
                  protocol={**{k: r[k] for k in ("fused", "ema", "input_size", "crop_pct", "precision", "samples",
                                                 "on_bad_image")}, "skipped": len(r["skipped"])},
                  skipped_images=r["skipped"])
    form = ("fused" if r["fused"] else "train form") + (", EMA" if r["ema"] else "")
    print(f"{r['model']} ({form}) on {r['data']}: {r['samples']} images, {r['input_size']} px, crop {r['crop_pct']}")
    print(f"  {'top-1':<6} {r['top1']:8.3f} %\n  {'top-5':<6} {r['top5']:8.3f} %\n  {'loss':<6} {r['loss']:8.4f}")
    if r["skipped"]:
        names = ", ".join(s["path"] for s in r["skipped"][:5]) + (", ..." if len(r["skipped"]) > 5 else "")
        print(f"  {'skipped':<6} {len(r['skipped']):8d} unreadable images, not scored: {names}")
    print(f"results -> {output}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
