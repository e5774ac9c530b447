"""Core quick start: train a small MetaMixer network on real handwritten digits, then re-parameterize it.

Shows the two things the core gives every app — FFNet blocks and ``reparameterize`` — on real data bundled
with scikit-learn (no download): train accuracy climbs in seconds, the fused network gives the same logits and
runs faster. ``python -m metamixer.demo``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metamixer.nn.blocks import ffnet_block
from metamixer.nn.flops import count_macs, count_params
from metamixer.nn.reparam import ConvBN, count_fusable, reparameterize
from metamixer.train.seed import seed_everything


class TinyFFNet(nn.Module):
    """Stem (stride-2 ConvBN) -> FFNet blocks with 5x5 (+3x3 re-param) mixers -> pooled linear head.

    Sized so that training takes well under a minute on 2 CPU cores (depthwise-conv backward is slow on CPU)."""

    def __init__(self, num_classes: int = 10, dim: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBN(1, dim, 3, stride=2), nn.GELU())
        self.blocks = nn.Sequential(*[ffnet_block(dim, 5, expansion=2, rep_kernels=(3,)) for _ in range(depth)])
        self.norm = nn.BatchNorm2d(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.stem(x))).mean((2, 3)))


def load_digits_tensors(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - dev extra installs it
        raise SystemExit("the demo needs scikit-learn (pip install scikit-learn)") from e
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5, torch.tensor(d.target)


def _latency(model: nn.Module, x: torch.Tensor, reps: int = 10) -> float:
    with torch.inference_mode():
        model(x)
        t = time.perf_counter()
        for _ in range(reps):
            model(x)
    return (time.perf_counter() - t) / reps


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m metamixer.demo", description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--output", type=Path, default=None, help="write a JSON summary here")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads; 1 is fastest for these small tensors, and on a busy machine")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(0)
    x, y = load_digits_tensors()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    tr, te = perm[:1400], perm[1400:]
    model = TinyFFNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for idx in tr[torch.randperm(len(tr), generator=g)].split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.3f}")
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.inference_mode():
        logits = model(x[te])
    fused = reparameterize(model)
    with torch.inference_mode():
        logits_f = fused(x[te])
    batch = x[te[:64]]
    result = {
        "dataset": "scikit-learn digits (1,797 real 8x8 scans, upsampled to 16x16), 397 held out",
        "train_seconds": round(train_s, 1),
        "test_accuracy": (logits.argmax(1) == y[te]).float().mean().item(),
        "fused_test_accuracy": (logits_f.argmax(1) == y[te]).float().mean().item(),
        "max_abs_logit_diff_fused": (logits - logits_f).abs().max().item(),
        "params_train_form": count_params(model),
        "params_fused": count_params(fused),
        "macs_train_form": count_macs(model, batch[:1]),
        "macs_fused": count_macs(fused, batch[:1]),
        "unfused_modules_left": count_fusable(fused),
        "latency_ms_bs64_train_form": round(_latency(model, batch) * 1e3, 2),
        "latency_ms_bs64_fused": round(_latency(fused, batch) * 1e3, 2),
    }
    for k, v in result.items():
        print(f"{k:>28}: {v}")
    if args.output:  # the one results.json shape of every FFNet quick start and evaluation
        from metamixer.train.results import write_results

        metrics = {k: v for k, v in result.items() if k != "dataset"}
        write_results(args.output / "results.json", metrics=metrics, data=result["dataset"],
                      protocol={"epochs": args.epochs, "threads": args.threads, "held_out": len(te)},
                      wall_s=round(time.perf_counter() - t0, 1))
    return result


if __name__ == "__main__":
    main()
