"""Speed of FFNet-TS on CPU: depthwise k=51 conv as Toeplitz matmul vs PyTorch's conv1d, and one training step.

    python benchmarks/ts_speed.py [--threads 2] [--batch 512]

Prints forward and forward+backward times of the depthwise conv at the ETTh1 shape ([B, 448, 48]), and the time
of one Adam step of the full ETTh1-96 model, for both implementations (same outputs; see the tests).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from ffnet_timeseries import create_model
from ffnet_timeseries.models import DepthwiseConv1dToeplitz


def _time(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    x = torch.randn(args.batch, 448, 48, requires_grad=True)
    conv = DepthwiseConv1dToeplitz(448, 51)
    for mode in ("toeplitz", "conv"):
        conv.mode = mode

        def fwd() -> None:
            with torch.no_grad():
                conv(x)

        def fwd_bwd() -> None:
            conv(x).sum().backward()

        results[f"dwconv51_{mode}_fwd_s"] = _time(fwd, args.repeats)
        results[f"dwconv51_{mode}_fwd_bwd_s"] = _time(fwd_bwd, args.repeats)
    conv.mode = "toeplitz"
    ref = F.conv1d(x, conv.weight, conv.bias, padding=25, groups=448)
    results["max_abs_diff"] = float((conv(x) - ref).abs().max().detach())
    for mode in ("toeplitz", "conv"):
        model = create_model(7, 96, 96, ffn_ratio=2, dropout=0.7)
        for m in model.modules():
            if isinstance(m, DepthwiseConv1dToeplitz):
                m.mode = mode
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        batch = torch.randn(args.batch, 96, 7)

        def step(model=model, opt=opt, batch=batch) -> None:  # noqa: ANN001
            opt.zero_grad()
            model(batch).pow(2).mean().backward()
            opt.step()

        results[f"train_step_{mode}_s"] = _time(step, args.repeats)
    results.update(threads=args.threads, batch=args.batch)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
