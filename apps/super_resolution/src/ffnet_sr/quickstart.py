"""Offline quick start on real images: ``python -m ffnet_sr.quickstart --output DIR`` (``ffnet-sr-quickstart``).

1. Trains a reduced FFNetSR-light x2 on the 91 T91 HR images (:data:`TRAIN_DIR`; a training set, never an
   evaluation set: LR generated from each image's mod-2 crop with the MATLAB-exact ``imresize``) on CPU: the same
   96-channel FFNet block as the published model but only ``--depth`` (default 2) of its 36 blocks, and a fixed
   number of steps (default 100, batch 16, LR patches 32), so the result is the same on every machine.
   This is a smoke-scale run, not the published model (which trains 500k steps on DIV2K with 4 GPUs).
2. Evaluates it on Set5, Set14 and B100 x2 (:data:`EVAL_SETS`) with the paper protocol (PSNR/SSIM on Y, crop 2)
   next to MATLAB bicubic; exits 1 if it does not beat bicubic on Set5.
3. Upscales one Set5 LR image (butterfly) with the trained model and with bicubic.
4. Writes ``DIR/results.json`` (the results shape every FFNet evaluation writes) and the run folder ``DIR/run``
   (config.yaml, last.pth, best.pth, tensorboard).

A few minutes on a 2-core CPU (training ~1-2 min, scoring the 119 benchmark images ~1-2 min; the numbers do not
change with the machine's load).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from metamixer.train.allocator import keep_freed_memory
from metamixer.train.config import load_config
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_results

from .config import SRConfig
from .data.dataset import load_benchmark
from .data.io import write_png
from .inference import bicubic_upscaler, load_model_for_inference, model_upscaler
from .scoring import evaluate_pairs, protocol
from .train import train

__all__ = ["TRAIN_DIR", "EVAL_SETS", "quickstart_overrides", "run_quickstart", "main"]

#: the quick start's (and the CPU recipe's) training folder, under the data root: T91, HR only
TRAIN_DIR = "sr/T91/HR"
#: the sets it is scored on (never trained on: the training guard refuses them)
EVAL_SETS = ("Set5", "Set14", "B100")


def quickstart_overrides(output_dir: Path, steps: int = 100, depth: int = 2, threads: int = 2) -> list[str]:
    """The CPU recipe (recipes/cpu_t91_x2.yaml) as overrides, so the package needs no recipe file."""
    return [
        "model.name=ffnetsr_light",
        "model.scale=2",
        f"model.depth={depth}",
        f"data.train_dirs=[{TRAIN_DIR}]",
        "data.lr_source=auto",
        "data.patch_size=32",
        "data.num_workers=0",
        "data.cache_images=true",
        "data.val_sets=[Set5]",
        "optim.name=adam",
        "optim.lr=2.0e-3",
        "optim.betas=[0.9,0.99]",
        "optim.min_lr=2.0e-5",
        "optim.warmup_steps=20",
        "optim.warmup_lr=1.0e-4",
        "train.fft_weight=0.02",
        f"train.steps={steps}",
        "train.batch_size=16",
        f"train.val_every={steps}",
        f"train.save_every={steps}",
        f"train.log_every={max(steps // 10, 1)}",
        f"run.output_dir={output_dir}",
        "run.seed=0",
        "run.device=cpu",
        f"run.threads={threads}",
    ]


def run_quickstart(output: Path, steps: int = 100, depth: int = 2, threads: int = 2,
                   eval_sets: Sequence[str] = EVAL_SETS) -> dict[str, Any]:
    """Train on T91, evaluate against bicubic on ``eval_sets`` x2 (Set5 always: the beats-bicubic check), upscale
    a sample; returns (and saves) the summary."""
    eval_sets = ["Set5", *(s for s in eval_sets if s != "Set5")]
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = load_config(SRConfig, None, quickstart_overrides(output / "run", steps, depth, threads))
    fit = train(cfg)
    train_s = time.perf_counter() - t0

    device = torch.device("cpu")
    model = load_model_for_inference(output / "run" / "last.pth", device)
    metrics: dict[str, dict[str, float]] = {}
    per_image: dict[str, dict[str, dict[str, float]]] = {}
    counts: dict[str, int] = {}
    for name in eval_sets:
        pairs = load_benchmark(name, 2)
        ours = evaluate_pairs(model_upscaler(model, 2, device), pairs, 2)
        bicubic = evaluate_pairs(bicubic_upscaler(2), pairs, 2)
        key = f"{name.lower()}_x2"
        metrics[key] = {"psnr": round(ours["psnr"], 3), "ssim": round(ours["ssim"], 4)}
        metrics[f"{key}_bicubic"] = {"psnr": round(bicubic["psnr"], 3), "ssim": round(bicubic["ssim"], 4)}
        per_image[name] = {k: {"psnr": round(v["psnr"], 3), "ssim": round(v["ssim"], 4)}
                           for k, v in ours["per_image"].items()}
        counts[name] = len(pairs)
    eval_s = time.perf_counter() - t0 - train_s

    sample = next(p for p in load_benchmark("Set5", 2) if p.name == "butterfly")
    write_png(output / "butterfly_x2_ffnetsr.png", model_upscaler(model, 2, device)(sample.lr))
    write_png(output / "butterfly_x2_bicubic.png", bicubic_upscaler(2)(sample.lr))
    write_png(output / "butterfly_hr.png", sample.hr)

    params = sum(p.numel() for p in model.parameters())
    result = {
        "metrics": metrics,
        "data": {"train": f"{TRAIN_DIR} (HR only; LR = MATLAB-exact imresize of each mod-2 crop)",
                 "sets": list(eval_sets), "scale": 2, "num_images": counts},  # as ffnet-sr-eval writes it
        "beats_bicubic": bool(metrics["set5_x2"]["psnr"] > metrics["set5_x2_bicubic"]["psnr"]),
        "task": f"FFNetSR-light (reduced depth) x2, trained on T91 on CPU, evaluated on {', '.join(eval_sets)}",
        "model": {"name": "ffnetsr_light", "depth": depth, "published_depth": 36, "dim": 96, "scale": 2,
                  "params": params},
        "train": {"steps": fit.step, "batch": 16, "lr_patch": 32, "seconds": round(train_s, 1)},
        "eval_seconds": round(eval_s, 1),
        "per_image": per_image,
        "files": {"sample": str(output / "butterfly_x2_ffnetsr.png"), "bicubic": str(output / "butterfly_x2_bicubic.png")},
    }
    checkpoint = output / "run" / "last.pth"
    write_results(output / "results.json", checkpoint=checkpoint, protocol=protocol(2, "auto"),
                  wall_s=round(time.perf_counter() - t0, 1), **result)
    return {**result, "checkpoint": str(checkpoint)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffnet-sr-quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True, help="folder for the run, sample images and results.json")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--depth", type=int, default=2, help="FFNet blocks (the published light model has 36)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.steps < 1 or args.depth < 1:
        raise FFNetError("--steps and --depth must be >= 1")
    keep_freed_memory()  # CPU training
    r = run_quickstart(Path(args.output), args.steps, args.depth, args.threads)
    m = r["metrics"]
    print()
    print(f"FFNetSR-light, {args.depth} of 36 blocks, x2, {r['train']['steps']} CPU steps on T91 "
          f"({r['train']['seconds']:.0f} s training, {r['eval_seconds']:.0f} s scoring)")
    print("| x2 (Y, crop 2), PSNR / SSIM | " + " | ".join(EVAL_SETS) + " |\n|---|" + "---|" * len(EVAL_SETS))
    for label, suffix in (("Bicubic (MATLAB)", "_bicubic"), ("FFNetSR quick start", "")):
        cells = [f"{m[f'{s.lower()}_x2{suffix}']['psnr']:.2f} / {m[f'{s.lower()}_x2{suffix}']['ssim']:.4f}"
                 for s in EVAL_SETS]
        print(f"| {label} | " + " | ".join(cells) + " |")
    gain = m["set5_x2"]["psnr"] - m["set5_x2_bicubic"]["psnr"]
    verdict = "beats" if r["beats_bicubic"] else "does NOT beat"
    print(f"-> the trained model {verdict} bicubic on Set5 by {gain:+.2f} dB")
    print(f"sample: {r['files']['sample']}; results: {Path(args.output) / 'results.json'}")
    return 0 if r["beats_bicubic"] else 1


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
