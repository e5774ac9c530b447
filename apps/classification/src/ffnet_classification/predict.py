"""Classify images: ``ffnet-cls-predict --checkpoint best.pth img1.jpg dir/ [--topk 5] [--classes names.txt]``.

Runs the fused (deploy) form by default, like ffnet-cls-eval; ``--unfused`` runs the train form.

Prints one JSON line per image with the top-k class names and probabilities. Class names come from the
checkpoint (our runs store them) or a text file with one name per line (e.g. for official ImageNet weights).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from metamixer.train.device import resolve_device
from metamixer.train.errors import FFNetError, run_cli

from .data import IMAGE_EXTENSIONS, build_transforms, load_rgb
from .models.registry import load_model


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            paths.append(p)
        else:
            raise FFNetError(f"input not found: {p}")
    if not paths:
        raise FFNetError(f"no images in {list(inputs)}")
    return paths


def read_class_names(path: str, n: int) -> list[str]:
    names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(names) != n:
        raise FFNetError(f"{path}: {len(names)} class names but the model predicts {n} classes")
    return names


@torch.no_grad()
def predict(
    checkpoint: str,
    inputs: Sequence[str],
    topk: int = 5,
    classes_file: str | None = None,
    model_name: str | None = None,
    use_ema: bool = False,
    fused: bool = True,
    batch_size: int = 32,
    device: str = "auto",
) -> list[dict[str, Any]]:
    dev = resolve_device(device, key="--device")
    loaded = load_model(checkpoint, model_name=model_name, use_ema=use_ema, fused=fused)
    model = loaded.model.to(dev).eval()
    channels_last = False
    if fused and dev.type == "cpu":
        from .models.cpu_opt import optimize_for_cpu

        model, channels_last = optimize_for_cpu(model), True  # same function, faster CPU kernels
    n = model.num_classes
    names = read_class_names(classes_file, n) if classes_file else (loaded.classes or [str(i) for i in range(n)])
    pcfg = model.pretrained_cfg
    dcfg = (loaded.config or {}).get("data", {})
    tf = build_transforms(False, dcfg.get("input_size") or pcfg["input_size"][-1],
                          dcfg.get("crop_pct") or pcfg["crop_pct"], dcfg.get("interpolation") or pcfg["interpolation"],
                          tuple(dcfg.get("mean") or pcfg["mean"]), tuple(dcfg.get("std") or pcfg["std"]))
    paths = expand_inputs(inputs)
    k = min(topk, n)
    results = []
    for i in range(0, len(paths), batch_size):
        chunk = paths[i: i + batch_size]
        x = torch.stack([tf(load_rgb(p)) for p in chunk]).to(dev)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        probs = model(x).float().softmax(-1)
        top = probs.topk(k, dim=-1)
        for p, vals, idx in zip(chunk, top.values.tolist(), top.indices.tolist()):
            results.append({"image": str(p), "top": [{"class": names[j], "index": j, "prob": round(v, 6)}
                                                     for v, j in zip(vals, idx)]})
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffnet-cls-predict", description="Top-k classes of images with probabilities.")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--classes", default=None, help="text file, one class name per line (index order)")
    p.add_argument("--model", default=None, help="architecture for official checkpoints (ffnet_1..4)")
    p.add_argument("--ema", action="store_true")
    p.add_argument("--unfused", action="store_true",
                   help="run the train form (default: the fused, re-parameterized deploy form)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps")
    a = p.parse_args(argv)
    for r in predict(a.checkpoint, a.inputs, a.topk, a.classes, a.model, a.ema, not a.unfused, device=a.device):
        print(json.dumps(r))
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
