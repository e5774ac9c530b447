"""Offline CPU quick start: train U-FFNet on real handwritten digits, sample, and measure sample quality.

``python -m ffnet_generation.quickstart --output runs/gen_quickstart`` (or ``ffnet-gen-quickstart``):
1. trains a small CNN classifier on scikit-learn's bundled digits (1797 real 8x8 scans, upsampled to 16x16) —
   the feature extractor of "digits-FID";
2. trains ``u_ffnet_tiny`` in pixel mode with the real training loop (``ffnet_generation.train`` on core's
   Trainer: AdamW, EMA, label dropout, hybrid loss, checkpoints, tensorboard), stopping once at the early step
   (``run.max_steps``) to keep that checkpoint and resuming from it;
3. samples from an early and the final checkpoint with ``ffnet-gen-sample`` (DDIM, ADM-layout ``.npz``) and
   reports digits-FID (Fréchet distance in the CNN's feature space, samples vs all real digits) and the CNN's
   accuracy on the samples w.r.t. the labels they were conditioned on. digits-FID is NOT comparable to ImageNet
   FID; it only tracks progress within this setting. Everything lands in ``<output>/results.json``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from metamixer.train.cli import OverrideParser
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.outputs import check_output_folder
from metamixer.train.results import write_results
from metamixer.train.sections import RunConfig

from .config import (
    DataConfig,
    DiffusionConfig,
    EvalConfig,
    GenerationConfig,
    GenOptimConfig,
    GenTrainConfig,
    ModelConfig,
)
from .files import copy_file
from .metrics.digits import DigitsReference
from .models import model_kwargs
from .sample import sample_to_npz
from .sampling import check_steps
from .train import train

__all__ = ["run_quickstart", "main", "cli"]


def quickstart_config(output: Path, steps: int, model: str, seed: int) -> GenerationConfig:
    """u_ffnet_tiny on digits, batch 32 (one process), lr 2e-3, EMA 0.999 with warm-up, a validation (the
    window's mean train loss) every 25 steps, no sample grids."""
    return GenerationConfig(
        run=RunConfig(output_dir=str(output / "train"), seed=seed, device="cpu"),
        data=DataConfig(mode="digits", num_workers=0),
        model=ModelConfig(name=model, input_size=16, in_channels=1, num_classes=10, class_dropout=0.1,
                          ffnified_kernel=5, rep_ffn=False, diffusion=DiffusionConfig()),
        optim=GenOptimConfig(lr=2e-3),
        train=GenTrainConfig(batch_size=32, steps=steps, ema_decay=0.999, ema_warmup=True, log_every=25,
                             val_every=25, save_every=None, progress=False),
        eval=EvalConfig(grid_count=None))


def _check_options(output: str | Path, *, steps: int, early_step: int, num_samples: int, sample_steps: str,
                   model: str, threads: int) -> None:
    """All options, before the old ``<output>/train`` is removed or anything is trained (a typo in
    ``--sample-steps`` must not cost a finished training)."""
    if steps < 2:
        raise FFNetError(f"--steps must be >= 2 (an early and a final checkpoint), got {steps}")
    if not 0 < early_step < steps:
        raise FFNetError(f"--early-step must be in (0, --steps={steps}), got {early_step}")
    for key, value in (("--num-samples", num_samples), ("--threads", threads)):
        if value < 1:
            raise FFNetError(f"{key} must be >= 1, got {value}")
    check_steps(sample_steps, DiffusionConfig().num_steps, "--sample-steps")
    try:
        model_kwargs(model)
    except FFNetError as exc:
        raise FFNetError(f"--model: {exc}") from None
    check_output_folder(output)


def run_quickstart(output: str | Path, *, steps: int = 400, early_step: int = 50, num_samples: int = 250,
                   sample_steps: str = "ddim20", model: str = "u_ffnet_tiny", seed: int = 0,
                   threads: int = 1) -> dict:
    """Train (stopping once at ``early_step`` to keep that checkpoint, then resuming), sample both checkpoints,
    score them, and write ``<output>/results.json``; returns the results record."""
    _check_options(output, steps=steps, early_step=early_step, num_samples=num_samples, sample_steps=sample_steps,
                   model=model, threads=threads)
    torch.set_num_threads(threads)
    out = Path(output)
    if (out / "train").exists():
        shutil.rmtree(out / "train")  # a fresh run each time (the quick start is a demo, not a resumable job)
    t_start = time.perf_counter()
    yardstick = DigitsReference(16, seed=seed)
    t_clf = time.perf_counter() - t_start

    cfg = quickstart_config(out, steps, model, seed)
    last = out / "train" / "last.pth"
    early = out / "train" / f"step_{early_step:07d}.pth"
    # run.max_steps stops at the early step with a resumable last.pth; the resumed run equals an uninterrupted one
    train(replace(cfg, run=replace(cfg.run, max_steps=early_step)))
    copy_file(last, early)
    fit = train(cfg, resume=str(last))
    t_train = time.perf_counter() - t_start - t_clf

    results = {}
    for tag, ckpt in (("early", early), ("final", last)):
        info = sample_to_npz(str(ckpt), out / f"samples_{tag}", num=num_samples, labels="all", seed=seed,
                             steps=sample_steps, cfg_scale=1.0, batch_size=num_samples, device="cpu")
        data = np.load(info["npz"])
        results[tag] = {"train_step": info["train_step"], **yardstick.score(data["arr_0"], data["arr_1"]),
                        "num_samples": num_samples}
    copy_file(out / "samples_final" / "grid.png", out / "final_grid.png")

    history = [{"step": h["step"], "loss": h["train_loss"]} for h in fit.history]
    metrics = {"digits_fid_early": results["early"]["digits_fid"], "digits_fid_final": results["final"]["digits_fid"],
               "class_accuracy_final": results["final"]["class_accuracy"],
               "digits_fid_real_half_vs_half": yardstick.real_half_vs_half(),
               "classifier_val_accuracy": yardstick.classifier_accuracy,
               "loss_first": history[0]["loss"] if history else None,
               "loss_last": history[-1]["loss"] if history else None}
    seconds = {"classifier": t_clf, "train": t_train, "total": time.perf_counter() - t_start}
    record = {"metrics": metrics, "early": results["early"], "final": results["final"], "loss_history": history,
              "train_steps": steps, "batch_size": cfg.train.batch_size, "num_samples": num_samples,
              "sampler": f"{sample_steps}, no guidance, EMA weights", "seconds": seconds,
              "grid_png": str(out / "final_grid.png"), "checkpoint": str(last)}
    write_results(out / "results.json", metrics=metrics,
                  data="scikit-learn digits, 1797 real 8x8 scans upsampled to 16x16 (pixel mode)", checkpoint=last,
                  protocol={"model": model, "sampler": record["sampler"], "num_samples": num_samples,
                            "metric_note": "digits-FID = Frechet distance of a digits-CNN's 64-d features (samples "
                                           "vs all 1797 real digits); NOT comparable to ImageNet FID"},
                  wall_s=seconds["total"], **{k: v for k, v in record.items() if k not in ("metrics", "checkpoint")})
    return record


def main(argv: Sequence[str] | None = None) -> int:
    p = OverrideParser(prog="ffnet-gen-quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="on failure show the full traceback")
    p.add_argument("--output", default="runs/gen_quickstart", metavar="FOLDER",
                   help="folder for the run, samples, final_grid.png and results.json")
    p.add_argument("--steps", type=int, default=400, help="training steps (>= 2)")
    p.add_argument("--early-step", type=int, default=50, help="the early checkpoint kept and scored, in (0, --steps)")
    p.add_argument("--num-samples", type=int, default=250, help="images sampled per checkpoint (>= 1)")
    p.add_argument("--sample-steps", default="ddim20", help="sampler: N (DDPM respaced) or ddimN")
    p.add_argument("--model", default="u_ffnet_tiny", help="a registered model name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (1 is fastest for this small model, and on a busy machine)")
    a = p.parse_args(argv)
    s = run_quickstart(a.output, steps=a.steps, early_step=a.early_step, num_samples=a.num_samples,
                       sample_steps=a.sample_steps, model=a.model, seed=a.seed, threads=a.threads)
    print("\n=== U-FFNet quick start (digits 16x16, CPU) ===")
    m = s["metrics"]
    print(f"digits CNN (feature extractor) held-out accuracy: {m['classifier_val_accuracy']:.3f}")
    print(f"diffusion loss: {m['loss_first']:.4f} (first {s['loss_history'][0]['step']} steps) -> "
          f"{m['loss_last']:.4f} (step {s['train_steps']})")
    for tag in ("early", "final"):
        r = s[tag]
        print(f"step {r['train_step']:>5}: digits-FID {r['digits_fid']:8.3f} | class accuracy of samples "
              f"{r['class_accuracy']:.3f}  ({r['num_samples']} samples, {s['sampler']})")
    print(f"digits-FID between two halves of the real digits (floor): {m['digits_fid_real_half_vs_half']:.3f}")
    print("digits-FID: Frechet distance in a small digits-CNN feature space; NOT comparable to ImageNet FID")
    print(f"sample grid: {s['grid_png']}   results: {Path(a.output) / 'results.json'}")
    print(f"time: {s['seconds']['total']:.0f} s")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
