"""Longer CPU training check (not a test): the quick-start recipe (T91) with more blocks and steps, then Set5/Set14/B100.

    python benchmarks/sr_train_cpu.py --output runs/sr_train_cpu --depth 6 --steps 600

Prints PSNR/SSIM-Y next to MATLAB bicubic for each set (about 30x the quick start's compute; not run for the docs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ffnet_sr.config import SRConfig
from ffnet_sr.inference import bicubic_upscaler, load_model_for_inference, model_upscaler
from ffnet_sr.quickstart import quickstart_overrides
from ffnet_sr.scoring import evaluate_sets, format_table
from ffnet_sr.train import train
from metamixer.train.config import load_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="runs/sr_train_cpu")
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    out = Path(args.output)
    cfg = load_config(SRConfig, None, quickstart_overrides(out, args.steps, args.depth, args.threads)
                         + [f"train.val_every={max(args.steps // 4, 1)}"])
    train(cfg)
    model = load_model_for_inference(out / "last.pth", torch.device("cpu"))
    sets = ["Set5", "Set14", "B100"]
    print(format_table("Bicubic", 2, evaluate_sets(bicubic_upscaler(2), sets, 2)))
    print(format_table(f"FFNetSR-light d{args.depth} {args.steps} steps", 2,
                       evaluate_sets(model_upscaler(model, 2, torch.device("cpu")), sets, 2)))


if __name__ == "__main__":
    main()
