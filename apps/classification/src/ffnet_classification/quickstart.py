"""Offline end-to-end demo on real images: ``python -m ffnet_classification.quickstart --output runs/cls_quickstart``.

1. writes scikit-learn's bundled digits (1,797 scans, 10 classes) as 32x32 grayscale PNGs (ImageFolder);
2. trains a small FFNet (same code and recipe machinery as ImageNet, ``recipes/cpu_digits.yaml``);
3. evaluates ``best.pth`` in train form and fused form (accuracies must agree);
4. exports the fused model to ONNX (checked in onnxruntime) and TorchScript;
5. predicts a few validation images; writes ``results.json`` (metrics of the fused EMA model, and under
   ``quickstart`` every measured number).
About 2 minutes on an idle 2-core CPU.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from metamixer.train.allocator import keep_freed_memory
from metamixer.train.cli import build_parser, positive_int
from metamixer.train.config import apply_overrides, config_from_dict, config_to_dict
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_results

from .config import ClsConfig
from .digits import write_digits_imagefolder

#: identical to recipes/cpu_digits.yaml (a test keeps them in sync); data paths are filled in at run time
RECIPE: dict[str, Any] = yaml.safe_load(
    """
run:
  seed: 42
  precision: fp32
  threads: 2
model:
  name: ffnet_1
  spec: {widths: [24, 48, 96, 192], depths: [1, 1, 2, 1], stem_dim: 16}
  drop_path_rate: 0.0
data:
  input_size: 32
  crop_pct: 1.0
  scale: [0.6, 1.0]
  hflip: 0.0
  rand_n: 0
  reprob: 0.0
  mixup: 0.0
  cutmix: 0.0
  label_smoothing: 0.1
  workers: 0
optim:
  name: adamw
  lr: null
  base_lr: 2.0e-3
  lr_base_batch: 64
  weight_decay: 0.05
  schedule: cosine
  warmup_epochs: 1
  warmup_lr: 1.0e-6
  min_lr: 1.0e-5
train:
  epochs: 8
  batch_size: 64
  ema_decay: 0.998
  ema_warmup: true
  eval_weights: ema
  log_every: 10
"""
)


def default_threads() -> int:
    """2 threads on an idle machine; 1 when the CPUs are already busy.

    With other processes holding the cores, OpenMP worker threads get descheduled and every op waits at a
    barrier for them: measured here, 2 threads ran this recipe ~10x slower than 1 thread under load ~8 on
    2 cores, while on an idle machine 2 threads are faster.
    """
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] > max(1.0, cores - 1.0)
    return 1 if busy or cores < 2 else 2


def quickstart_config(output: str | Path, epochs: int | None = None, threads: int | None = None,
                      overrides: Sequence[str] = ()) -> ClsConfig:
    """The quick start's run config (RECIPE, data and run folders under ``output``, then ``overrides``),
    validated: a wrong value stops here, before anything is written."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise FFNetError(f"--output {out} is a file; expected a folder (it is created if missing)")
    data = out / "data"
    recipe = json.loads(json.dumps(RECIPE))
    recipe["data"].update(train=str(data / "train"), val=str(data / "val"))
    recipe["run"].update(output_dir=str(out / "run"), threads=threads or default_threads())
    if epochs is not None:
        recipe["train"]["epochs"] = epochs
    recipe["train"]["progress"] = False
    cfg = config_from_dict(ClsConfig, recipe, source="quickstart recipe")
    if overrides:
        cfg = config_from_dict(ClsConfig, apply_overrides(config_to_dict(cfg), overrides, ClsConfig))
    return cfg


def run_quickstart(output: str | Path, epochs: int | None = None, threads: int | None = None,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    from .evaluate import evaluate_checkpoint
    from .export import export_model
    from .models.registry import load_model
    from .predict import predict
    from .train import run

    out = Path(output)
    t_start = time.time()
    cfg = quickstart_config(out, epochs, threads, overrides)
    data = out / "data"
    counts = write_digits_imagefolder(data, size=32)
    t0 = time.time()
    summary = run(cfg, quiet=True)
    train_s = time.time() - t0
    best = out / "run" / "best.pth"
    val = str(data / "val")
    ev = evaluate_checkpoint(str(best), val, use_ema=True, fused=False, workers=0, device="cpu")
    ev_fused = evaluate_checkpoint(str(best), val, use_ema=True, fused=True, workers=0, device="cpu")
    model = load_model(best, use_ema=True).model
    export = export_model(model, out / "export", "ffnet_digits", input_size=32)
    samples = sorted((data / "val").glob("*/*.png"))[::72][:5]
    preds = predict(str(best), [str(p) for p in samples], topk=3, use_ema=True, device="cpu")
    correct = sum(Path(p["image"]).parent.name == p["top"][0]["class"] for p in preds)
    result = {
        "dataset": {"name": "sklearn digits (8x8 scans upsampled to 32x32 PNG)", **counts, "classes": 10},
        "model": {"name": cfg.model.name, "spec": cfg.model.spec, "params": summary["params"],
                  "params_fused": sum(p.numel() for p in model.fuse().parameters())},
        "train": {"epochs": cfg.train.epochs, "seconds": round(train_s, 1), "steps": summary["step"],
                  "stopped": summary["stopped"], "last": summary["last"]},
        "eval_ema": {k: ev[k] for k in ("top1", "top5", "loss", "samples")},
        "eval_ema_fused": {k: ev_fused[k] for k in ("top1", "top5", "loss", "samples")},
        "export": {fmt: {"path": export[fmt]["path"], "max_abs_diff": export[fmt]["max_abs_diff"]}
                   for fmt in ("onnx", "torchscript")},
        "predict": {"images": len(preds), "top1_correct": correct, "examples": preds[:2]},
        "total_seconds": round(time.time() - t_start, 1),
        "threads": torch.get_num_threads(),
    }
    write_results(out / "results.json", metrics={k: ev_fused[k] for k in ("top1", "top5", "loss")},
                  data=f"{val} (sklearn digits, {counts['val']} images)", checkpoint=best,
                  protocol={"weights": "ema", "form": "fused", "input_size": 32, "crop_pct": 1.0},
                  wall_s=result["total_seconds"], quickstart=result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser("ffnet-cls-quickstart", __doc__.splitlines()[0], config=False)
    p.add_argument("--output", default="runs/cls_quickstart", help="folder for data, run, exports, results.json")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the recipe's 8 epochs")
    p.add_argument("--threads", type=positive_int, default=None)
    a = p.parse_args(argv)
    quickstart_config(a.output, a.epochs, a.threads, a.overrides)  # every input checked before anything is written
    keep_freed_memory()  # trains on the CPU
    r = run_quickstart(a.output, a.epochs, a.threads, a.overrides)
    print(
        f"\nFFNet quick start (digits, {r['dataset']['train']} train / {r['dataset']['val']} val images)\n"
        f"  model      {r['model']['name']} custom size: {r['model']['params']:,} params "
        f"({r['model']['params_fused']:,} fused)\n"
        f"  train      {r['train']['epochs']} epochs in {r['train']['seconds']} s\n"
        f"  val top-1  {r['eval_ema']['top1']:.2f}% (EMA)   fused: {r['eval_ema_fused']['top1']:.2f}%   "
        f"loss {r['eval_ema']['loss']:.4f}\n"
        f"  export     ONNX max|diff| {r['export']['onnx']['max_abs_diff']:.2e}   "
        f"TorchScript max|diff| {r['export']['torchscript']['max_abs_diff']:.2e}\n"
        f"  predict    {r['predict']['top1_correct']}/{r['predict']['images']} sample images correct\n"
        f"  total      {r['total_seconds']} s  ->  {Path(a.output) / 'results.json'}"
    )
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
