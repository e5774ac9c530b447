"""Offline CPU quick start: train U-FFNet on real handwritten digits, sample, and measure sample quality.

``python -m ffnet_generation.quickstart --output runs/gen_quickstart`` (or ``ffnet-gen-quickstart``):
1. trains a small CNN classifier on scikit-learn's bundled digits (1797 real 8x8 scans, upsampled to 16x16) —
   the feature extractor of "digits-FID";
2. trains ``u_ffnet_tiny`` in pixel mode with the real training loop (``ffnet_generation.train``: AdamW, EMA,
   label dropout, hybrid loss, checkpoints, tensorboard);
3. samples from an early and the final checkpoint with ``ffnet-gen-sample`` (DDIM, ADM-layout ``.npz``) and
   reports digits-FID (Fréchet distance in the CNN's feature space, samples vs all real digits) and the CNN's
   accuracy on the samples w.r.t. the labels they were conditioned on. digits-FID is NOT comparable to ImageNet
   FID; it only tracks progress within this setting.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_json

from .config import DataConfig, DiffusionConfig, GenerationConfig, ModelConfig, TrainConfig
from .data.images import digits_arrays
from .metrics.digits import extract_features, train_digits_classifier
from .metrics.fid import FeatureStats, frechet_distance
from .sample import sample_to_npz
from .train import train

__all__ = ["run_quickstart", "main", "cli"]


def quickstart_config(output: Path, steps: int, early: int, model: str, seed: int) -> GenerationConfig:
    return GenerationConfig(
        output_dir=str(output / "train"), seed=seed, device="cpu",
        model=ModelConfig(name=model, input_size=16, in_channels=1, num_classes=10, class_dropout=0.1,
                          ffnified_kernel=5, rep_ffn=False),
        data=DataConfig(mode="digits", num_workers=0),
        diffusion=DiffusionConfig(),
        train=TrainConfig(batch_size=32, steps=steps, lr=2e-3, ema_decay=0.999, ema_warmup=True, log_every=25,
                          ckpt_every=early, keep_checkpoints=True, sample_every=0))


def _digits_metrics(npz: Path, classifier, real_stats: tuple[np.ndarray, np.ndarray]) -> dict:
    data = np.load(npz)
    images = torch.from_numpy(data["arr_0"]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    feats, logits = extract_features(classifier, images)
    stats = FeatureStats()
    stats.update(feats)
    mu, sigma = stats.mean_cov()
    return {"digits_fid": frechet_distance(mu, sigma, *real_stats),
            "class_accuracy": float((logits.argmax(1) == data["arr_1"]).mean()), "num_samples": len(images)}


def run_quickstart(output: str | Path, *, steps: int = 400, early_step: int = 50, num_samples: int = 250,
                   sample_steps: str = "ddim20", model: str = "u_ffnet_tiny", seed: int = 0,
                   threads: int = 1) -> dict:
    if not 0 < early_step < steps:
        raise FFNetError(f"--early-step must be in (0, --steps={steps}), got {early_step}")
    torch.set_num_threads(threads)
    out = Path(output)
    if (out / "train").exists():
        shutil.rmtree(out / "train")  # a fresh run each time (the quick start is a demo, not a resumable job)
    t_start = time.perf_counter()

    images_u8, labels = digits_arrays(16)
    real = torch.from_numpy(images_u8).float()[:, None] / 127.5 - 1.0
    classifier, clf_acc = train_digits_classifier(real, torch.from_numpy(labels), seed=seed)
    real_feats, _ = extract_features(classifier, real)
    real_stats = FeatureStats()
    real_stats.update(real_feats)
    ref = real_stats.mean_cov()
    t_clf = time.perf_counter() - t_start

    cfg = quickstart_config(out, steps, early_step, model, seed)
    summary_train = train(cfg)
    t_train = time.perf_counter() - t_start - t_clf

    results = {}
    for tag, ckpt in (("early", out / "train" / f"step_{early_step:07d}.pth"), ("final", out / "train" / "last.pth")):
        info = sample_to_npz(str(ckpt), out / f"samples_{tag}", num=num_samples, labels="all", seed=seed,
                             steps=sample_steps, cfg_scale=1.0, batch_size=num_samples, device="cpu")
        results[tag] = {"train_step": info["train_step"], **_digits_metrics(Path(info["npz"]), classifier, ref)}
    # a reference point: the same metric between two disjoint halves of the real digits
    half = len(real_feats) // 2
    a, b = FeatureStats(), FeatureStats()
    a.update(real_feats[:half])
    b.update(real_feats[half:])
    real_vs_real = frechet_distance(*a.mean_cov(), *b.mean_cov())
    shutil.copyfile(out / "samples_final" / "grid.png", out / "final_grid.png")

    history = summary_train["history"]
    summary = {
        "what": "U-FFNet (u_ffnet_tiny) trained on scikit-learn digits 16x16 (pixel mode), CPU",
        "metric_note": "digits-FID = Frechet distance of a digits-CNN's 64-d features (samples vs all 1797 real "
                       "digits); NOT comparable to ImageNet FID",
        "classifier_val_accuracy": clf_acc,
        "train_steps": steps, "batch_size": cfg.train.batch_size,
        "loss_first": history[0]["loss"] if history else None, "loss_last": history[-1]["loss"] if history else None,
        "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in history],
        "early": results["early"], "final": results["final"],
        "digits_fid_real_half_vs_half": real_vs_real,
        "sampler": f"{sample_steps}, no guidance, EMA weights", "num_samples": num_samples,
        "seconds": {"classifier": t_clf, "train": t_train, "total": time.perf_counter() - t_start},
        "grid_png": str(out / "final_grid.png"), "checkpoint": str(out / "train" / "last.pth"),
    }
    write_json(out / "quickstart_summary.json", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="ffnet-gen-quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--output", default="runs/gen_quickstart")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--early-step", type=int, default=50)
    p.add_argument("--num-samples", type=int, default=250)
    p.add_argument("--sample-steps", default="ddim20")
    p.add_argument("--model", default="u_ffnet_tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (1 is fastest for this small model, and on a busy machine)")
    a = p.parse_args(argv)
    s = run_quickstart(a.output, steps=a.steps, early_step=a.early_step, num_samples=a.num_samples,
                       sample_steps=a.sample_steps, model=a.model, seed=a.seed, threads=a.threads)
    print("\n=== U-FFNet quick start (digits 16x16, CPU) ===")
    print(f"digits CNN (feature extractor) held-out accuracy: {s['classifier_val_accuracy']:.3f}")
    print(f"diffusion loss: {s['loss_first']:.4f} (first {s['loss_history'][0]['step']} steps) -> "
          f"{s['loss_last']:.4f} (step {s['train_steps']})")
    for tag in ("early", "final"):
        r = s[tag]
        print(f"step {r['train_step']:>5}: digits-FID {r['digits_fid']:8.3f} | class accuracy of samples "
              f"{r['class_accuracy']:.3f}  ({r['num_samples']} samples, {s['sampler']})")
    print(f"digits-FID between two halves of the real digits (floor): {s['digits_fid_real_half_vs_half']:.3f}")
    print("digits-FID: Frechet distance in a small digits-CNN feature space; NOT comparable to ImageNet FID")
    print(f"sample grid: {s['grid_png']}   summary: {Path(a.output) / 'quickstart_summary.json'}")
    print(f"time: {s['seconds']['total']:.0f} s")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
