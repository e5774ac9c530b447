"""Evaluate a checkpoint: ``ffnet-cls-eval --checkpoint best.pth --data VAL [--fused] [--ema] [--output r.json]``.

Top-1 / top-5 / loss on a class folder or list. Works with our run checkpoints (architecture and class names
inside) and the authors' files (``--model ffnet_N``; class folders are then assumed to be in index order).
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from metamixer.train.errors import FFNetError, run_cli

from .data import build_dataset, build_transforms
from .engine import evaluate
from .models.registry import load_model


def evaluate_checkpoint(
    checkpoint: str,
    data: str,
    model_name: str | None = None,
    fused: bool = False,
    use_ema: bool = False,
    batch_size: int = 64,
    workers: int = 4,
    input_size: int | None = None,
    crop_pct: float | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    on_bad_image: str = "error",
    root: str | None = None,
) -> dict[str, Any]:
    loaded = load_model(checkpoint, model_name=model_name, use_ema=use_ema, fused=fused)
    model = loaded.model.to(device).eval()
    pcfg = model.pretrained_cfg
    dcfg = (loaded.config or {}).get("data", {})
    size = input_size or dcfg.get("input_size") or pcfg["input_size"][-1]
    crop = crop_pct or dcfg.get("crop_pct") or pcfg["crop_pct"]
    mean = tuple(dcfg.get("mean") or pcfg["mean"])
    std = tuple(dcfg.get("std") or pcfg["std"])
    interp = dcfg.get("interpolation") or pcfg["interpolation"]
    tf = build_transforms(False, size, crop, interp, mean, std)
    ds = build_dataset(data, tf, on_bad_image, classes=loaded.classes, allow_empty=True, root=root)
    if len(ds.classes) > model.num_classes:
        raise FFNetError(f"{data} has {len(ds.classes)} classes but {checkpoint} predicts {model.num_classes}")
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    t0 = time.time()
    metrics = evaluate(model, loader, torch.device(device), precision)
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
        "seconds": time.time() - t0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffnet-cls-eval", description="Top-1/top-5/loss of a checkpoint on a val set.")
    p.add_argument("--checkpoint", required=True, help="our best.pth/last.pth or an official .pth.tar")
    p.add_argument("--data", required=True, help="class-folder root or .csv/.txt list")
    p.add_argument("--model", default=None, help="architecture for official checkpoints (ffnet_1..4)")
    p.add_argument("--fused", action="store_true", help="evaluate the re-parameterized (deploy) form")
    p.add_argument("--ema", action="store_true", help="use the EMA weights")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--crop-pct", type=float, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--on-bad-image", default="error", choices=("error", "skip"))
    p.add_argument("--root", default=None, help="base folder for relative paths in a list file")
    p.add_argument("--output", default=None, help="write the JSON result here (also printed)")
    a = p.parse_args(argv)
    result = evaluate_checkpoint(a.checkpoint, a.data, a.model, a.fused, a.ema, a.batch_size, a.workers,
                                 a.input_size, a.crop_pct, a.device, a.precision, a.on_bad_image, a.root)
    text = json.dumps(result, indent=2)
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(text)
    print(text)
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
