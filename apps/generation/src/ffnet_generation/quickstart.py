"""Offline CPU quick start: train U-FFNet on real handwritten digits, sample, and measure sample quality.

``python -m ffnet_generation.quickstart --output runs/gen_quickstart`` (or ``ffnet-gen-quickstart``):
1. trains a small CNN classifier on scikit-learn's bundled digits (1797 real 8x8 scans, upsampled to 16x16) —
   the feature extractor of "digits-FID" and the judge of class accuracy;
2. trains ``u_ffnet_tiny`` in pixel mode with the real training loop (``ffnet_generation.train`` on core's
   Trainer: AdamW, EMA, label dropout, hybrid loss, checkpoints, tensorboard), stopping once at the early step
   (``run.max_steps``) to keep that checkpoint and resuming from it;
3. samples from an early and the final checkpoint with ``ffnet-gen-sample`` (DDIM, ADM-layout ``.npz``, every
   class in turn), the final one also with classifier-free guidance (``--cfg-scale``), and reports digits-FID
   (Fréchet distance in the CNN's feature space, samples vs all real digits) and the CNN's accuracy on the
   samples w.r.t. the labels they were conditioned on, overall and per class. digits-FID is NOT comparable to
   ImageNet FID; it only tracks progress within this setting. ``final_grid.png`` (guided) and
   ``final_grid_no_guidance.png`` show one row per class (0 at the top), upscaled 4x; everything else lands in
   ``<output>/results.json``.
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
from .data.images import class_rows_grid, save_png
from .files import copy_file
from .metrics.digits import DigitsReference
from .models import model_kwargs
from .sample import sample_to_npz
from .sampling import CLI_NAMES, check_sampler_options, check_steps
from .train import train

__all__ = ["run_quickstart", "main", "cli", "DEFAULT_CFG_SCALE"]

#: guidance of the quick start's guided samples. Measured on the final checkpoint (250 samples, ddim20): class
#: accuracy rises with the scale while digits-FID rises too past ~1.5 (less diverse, over-saturated strokes);
#: 2 is where accuracy passes 90 % (docs/generation.md §4 has the sweep)
DEFAULT_CFG_SCALE = 2.0


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
                   model: str, threads: int, cfg_scale: float) -> None:
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
    check_sampler_options(num=num_samples, labels="all", steps=sample_steps, cfg_scale=cfg_scale, eta=0.0,
                          guided_channels=None, batch_size=num_samples,
                          names={**CLI_NAMES, "num": "--num-samples", "steps": "--sample-steps",
                                 "batch_size": "--num-samples"})
    try:
        model_kwargs(model)
    except FFNetError as exc:
        raise FFNetError(f"--model: {exc}") from None
    check_output_folder(output)


def run_quickstart(output: str | Path, *, steps: int = 400, early_step: int = 50, num_samples: int = 250,
                   sample_steps: str = "ddim20", model: str = "u_ffnet_tiny", seed: int = 0,
                   threads: int = 1, cfg_scale: float = DEFAULT_CFG_SCALE) -> dict:
    """Train (stopping once at ``early_step`` to keep that checkpoint, then resuming), sample both checkpoints
    (the final one also with guidance ``cfg_scale``), score them, and write ``<output>/results.json``; returns
    the results record."""
    _check_options(output, steps=steps, early_step=early_step, num_samples=num_samples, sample_steps=sample_steps,
                   model=model, threads=threads, cfg_scale=cfg_scale)
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
    runs = [("early", early, 1.0), ("final", last, 1.0)] + ([("final_cfg", last, cfg_scale)] if cfg_scale != 1.0
                                                             else [])
    for tag, ckpt, scale in runs:
        info = sample_to_npz(str(ckpt), out / f"samples_{tag}", num=num_samples, labels="all", seed=seed,
                             steps=sample_steps, cfg_scale=scale, batch_size=num_samples, device="cpu")
        data = np.load(info["npz"])
        results[tag] = {"train_step": info["train_step"], "cfg_scale": scale,
                        **yardstick.score(data["arr_0"], data["arr_1"]), "num_samples": num_samples,
                        "sampling_s": info["seconds"]}
        if tag != "early":
            name = "final_grid.png" if scale != 1.0 or cfg_scale == 1.0 else "final_grid_no_guidance.png"
            save_png(class_rows_grid(data["arr_0"], data["arr_1"], 10), out / name)
    guided = results.get("final_cfg", results["final"])

    history = [{"step": h["step"], "loss": h["train_loss"]} for h in fit.history]
    metrics = {"digits_fid_early": results["early"]["digits_fid"], "digits_fid_final": results["final"]["digits_fid"],
               "class_accuracy_early": results["early"]["class_accuracy"],
               "class_accuracy_final": results["final"]["class_accuracy"],
               "digits_fid_final_cfg": guided["digits_fid"], "class_accuracy_final_cfg": guided["class_accuracy"],
               "cfg_scale": cfg_scale,
               "digits_fid_real_half_vs_half": yardstick.real_half_vs_half(),
               "classifier_val_accuracy": yardstick.classifier_accuracy,
               "loss_first": history[0]["loss"] if history else None,
               "loss_last": history[-1]["loss"] if history else None}
    seconds = {"classifier": t_clf, "train": t_train, "total": time.perf_counter() - t_start}
    record = {"metrics": metrics, **results, "loss_history": history,
              "train_steps": steps, "batch_size": cfg.train.batch_size, "num_samples": num_samples,
              "sampler": f"{sample_steps}, EMA weights, labels 0..9 in turn", "seconds": seconds,
              "grid_png": str(out / "final_grid.png"),
              "grid_png_no_guidance": str(out / ("final_grid_no_guidance.png" if cfg_scale != 1.0
                                                 else "final_grid.png")),
              "checkpoint": str(last)}
    write_results(out / "results.json", metrics=metrics,
                  data="scikit-learn digits, 1797 real 8x8 scans upsampled to 16x16 (pixel mode)", checkpoint=last,
                  protocol={"model": model, "sampler": record["sampler"], "num_samples": num_samples,
                            "cfg_scale": cfg_scale,
                            "metric_note": "digits-FID = Frechet distance of a digits-CNN's 64-d features (samples "
                                           "vs all 1797 real digits); NOT comparable to ImageNet FID. class "
                                           "accuracy = the same CNN's accuracy w.r.t. the conditioning labels"},
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
    p.add_argument("--cfg-scale", type=float, default=DEFAULT_CFG_SCALE,
                   help="classifier-free guidance of the final checkpoint's guided samples (1 = only unguided)")
    a = p.parse_args(argv)
    s = run_quickstart(a.output, steps=a.steps, early_step=a.early_step, num_samples=a.num_samples,
                       sample_steps=a.sample_steps, model=a.model, seed=a.seed, threads=a.threads,
                       cfg_scale=a.cfg_scale)
    print("\n=== U-FFNet quick start (digits 16x16, CPU) ===")
    m = s["metrics"]
    print(f"digits CNN (feature extractor, judge of class accuracy) held-out accuracy: "
          f"{m['classifier_val_accuracy']:.3f}")
    print(f"diffusion loss: {m['loss_first']:.4f} (first {s['loss_history'][0]['step']} steps) -> "
          f"{m['loss_last']:.4f} (step {s['train_steps']})")
    for tag in ("early", "final", "final_cfg"):
        if tag not in s:
            continue
        r = s[tag]
        guidance = f"guidance {r['cfg_scale']:g}" if r["cfg_scale"] != 1.0 else "no guidance"
        print(f"step {r['train_step']:>5}, {guidance:<13}: digits-FID {r['digits_fid']:8.3f} | class accuracy of "
              f"samples {r['class_accuracy']:.3f}")
        if tag != "early":
            print("    per class " + " ".join(f"{c}:{a:.2f}" for c, a in enumerate(r["class_accuracy_per_class"])
                                          if a is not None))
    print(f"({s['num_samples']} samples each, {s['sampler']})")
    print(f"digits-FID between two halves of the real digits (floor): {m['digits_fid_real_half_vs_half']:.3f}")
    print("digits-FID: Frechet distance in a small digits-CNN feature space; NOT comparable to ImageNet FID")
    print(f"sample grids (one row per class, 0 at the top): {s['grid_png']}"
          + (f", {s['grid_png_no_guidance']}" if s["grid_png_no_guidance"] != s["grid_png"] else ""))
    print(f"results: {Path(a.output) / 'results.json'}")
    print(f"time: {s['seconds']['total']:.0f} s")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
