"""The least wall time a dataset's 4-horizon FFNet-TS reproduction can take on this machine, from its arithmetic.

    FFNET_DATA=../shared/data python benchmarks/ts_floor.py [--dataset ETTh1] [--epochs 25] [--processes 2]
        [--json docs/timeseries_floor.json]

Why: the issue asks for the ETTh1 4-horizon run in <= 10 minutes on 2 CPU cores, and ours takes 19 (see
docs/timeseries.md). This says whether *any* implementation of the same model and recipe could do it here.

1. Work: for each horizon, the multiply-adds the recipe needs with no algorithmic waste: every 1x1 conv and the
   head count their weights once per position; a depthwise conv counts only the taps that touch real inputs
   (not the zero padding); the stem counts its patch products. A training step costs 3x the forward MACs
   (output, input gradient, weight gradient; the stem needs no input gradient, so 2x); validation and the final
   test pass 1x. Window counts come from the real data files, epochs from ``--epochs`` (the timed run used the
   cap of 25 and all four horizons ran all 25). BatchNorm, GELU, dropout, the optimizer and data handling are
   left out, so the true floor is higher.
2. Cross-check: the same count for the products our implementation really runs (dense Toeplitz convs, one
   recomputed matmul per FFN in backward) must equal ``torch.utils.flop_counter`` on one training step with the C
   kernels off (every product is then a counted torch op); the script stops if they differ by more than 0.5 %.
3. Peak: float32 GEMM throughput of this machine through PyTorch's BLAS (1024^3 and 2048^3 ``mm``, best of
   ``--repeats``), measured in ``--processes`` processes at once (one thread each) as the runs are laid out.
4. Floor: the four runs packed onto the processes as evenly as they go (a run is not split), each at that peak.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import time
from pathlib import Path

import torch
from torch import nn

TARGET_S = 600.0


def _valid_taps(length: int, kernel_size: int) -> int:
    """Taps of a 'same' depthwise conv over ``length`` positions that read a real input (summed over outputs)."""
    pad = kernel_size // 2
    return sum(min(length - 1, i + pad) - max(0, i - pad) + 1 for i in range(length))


def forward_macs(model: nn.Module, as_implemented: bool = False) -> dict[str, int]:
    """Forward multiply-adds per input window of an FFNet-TS model, by part.

    ``as_implemented``: count the products our CPU code runs instead (a depthwise conv over L positions as a dense
    ``L x L`` Toeplitz product; the FFN's first matmul once more, recomputed in backward, reported separately)."""
    net = model.model
    m, length = net.n_vars, net.seq_len + (net.patch_size - net.patch_stride)
    n = (length - net.patch_size) // net.patch_stride + 1
    parts = {"stem": net.downsample_layers[0][0].weight.numel() * m * n, "blocks": 0, "depthwise": 0, "recompute": 0}
    for i, stage in enumerate(net.stages):
        if i > 0:
            n = -(-n // net.downsample_ratio)
            parts["stem"] += net.downsample_layers[i][1].weight.numel() * m * n
        for module in stage.modules():
            if not isinstance(module, nn.Conv1d):
                continue
            if module.groups == module.in_channels == module.out_channels and module.kernel_size[0] > 1:
                k = module.kernel_size[0]
                taps = n * n if as_implemented else _valid_taps(n, k)
                parts["depthwise"] += module.out_channels * taps
            else:
                parts["blocks"] += module.weight.numel() * n
        if as_implemented:  # backward recomputes each FFN's first product (fused_ffn.grouped_ffn)
            for block in stage.blocks:
                parts["recompute"] += (block.token_mixer.ffnpw1.weight.numel() + block.channel_mixer.ffnpw1.weight.numel()) * n
    parts["head"] = net.head.linear.weight.numel() * m
    return parts


def train_macs(parts: dict[str, int]) -> int:
    """Multiply-adds of one training step per window: 3x forward (2x for the stem), plus the recomputation."""
    return 2 * parts["stem"] + 3 * (parts["blocks"] + parts["depthwise"] + parts["head"]) + parts["recompute"]


def eval_macs(parts: dict[str, int]) -> int:
    return parts["stem"] + parts["blocks"] + parts["depthwise"] + parts["head"]


def counted_train_flops(model: nn.Module, batch: int) -> int:
    """``torch.utils.flop_counter``'s FLOPs for one training step of ``batch`` windows (C kernels must be off).

    The counter has no formula for the in-place ``baddbmm_`` (the sliced FFNs accumulate their weight gradients
    with it), so it is given the out-of-place one."""
    from torch.utils import flop_counter

    model.train()
    x = torch.randn(batch, model.seq_len, model.n_vars)
    def baddbmm_flops(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:  # noqa: ANN001
        batch, m, k = a_shape
        return 2 * batch * m * k * b_shape[-1]

    in_place = {torch.ops.aten.baddbmm_: baddbmm_flops}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=in_place) as counter:
        model(x).square().mean().backward()
    return counter.get_total_flops()


def _gemm_peak(repeats: int, queue: multiprocessing.Queue | None = None) -> float:
    torch.set_num_threads(1)
    best = 0.0
    for size in (1024, 2048):
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    if queue is not None:
        queue.put(best)
    return best


def gemm_peak(processes: int, repeats: int) -> list[float]:
    """Per-process float32 GEMM GFLOP/s (one thread each), all processes measuring at the same time."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_gemm_peak, args=(repeats, queue)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    return sorted(results)


def best_packing(seconds: list[float], processes: int) -> float:
    """The least makespan of whole runs on ``processes`` processes (brute force; four runs)."""
    best = math.inf
    for assignment in itertools.product(range(processes), repeat=len(seconds)):
        loads = [0.0] * processes
        for run, proc in zip(seconds, assignment):
            loads[proc] += run
        best = min(best, max(loads))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ETTh1")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ["FFNET_NATIVE"] = "0"  # so the flop counter sees every product (only the cross-check runs a model)

    from ffnet_timeseries.builders import build_data, build_model
    from ffnet_timeseries.recipes import HORIZONS, recipe_config

    torch.set_num_threads(1)
    rows, total_flops = [], 0.0
    for horizon in HORIZONS:
        cfg = recipe_config(args.dataset, horizon)
        data = build_data(cfg.data)
        model = build_model(cfg.model, data.n_vars, cfg.data.seq_len, horizon)
        minimal, ours = forward_macs(model), forward_macs(model, as_implemented=True)
        batch = cfg.train.batch_size
        counted = counted_train_flops(model, batch)
        predicted = 2 * train_macs(ours) * batch
        if abs(counted - predicted) > 0.005 * counted:
            raise SystemExit(f"{args.dataset}-{horizon}: the analytic count of our products ({predicted / 1e9:.2f} "
                             f"GFLOP/step) disagrees with torch's flop counter ({counted / 1e9:.2f}); fix the count")
        windows = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
        flops = 2 * (args.epochs * (windows["train"] * train_macs(minimal) + windows["val"] * eval_macs(minimal))
                     + windows["test"] * eval_macs(minimal))
        total_flops += flops
        rows.append({
            "pred_len": horizon, "batch": batch, "windows": windows,
            "train_gflop_per_step": {"minimal": 2 * train_macs(minimal) * batch / 1e9, "ours": predicted / 1e9,
                                     "flop_counter": counted / 1e9},
            "run_tflop": flops / 1e12,
        })
        print(f"{args.dataset}-{horizon}: {rows[-1]['train_gflop_per_step']['minimal']:.1f} GFLOP per training step "
              f"at the minimum (ours computes {predicted / 1e9:.1f}; flop counter {counted / 1e9:.1f}); "
              f"{flops / 1e12:.1f} TFLOP for {args.epochs} epochs", flush=True)

    peaks = gemm_peak(args.processes, args.repeats)
    peak = min(peaks)  # the runs finish together only if the slowest process keeps up
    for row in rows:
        row["floor_s"] = row["run_tflop"] * 1e12 / (peak * 1e9)
    floor = best_packing([row["floor_s"] for row in rows], args.processes)
    needed = floor / TARGET_S
    summary = {
        "dataset": args.dataset, "epochs": args.epochs, "processes": args.processes,
        "gemm_gflops_per_process": peaks, "total_tflop": total_flops / 1e12,
        "floor_s": floor, "target_s": TARGET_S, "target_needs_fraction_of_peak": needed, "rows": rows,
        "left_out": "BatchNorm, GELU, dropout, Adam, data handling (memory-bound work; the real floor is higher)",
        "conditions": f"{os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    print(f"float32 GEMM peak per process ({args.processes} at once, 1 thread each): "
          + ", ".join(f"{p:.1f}" for p in peaks) + " GFLOP/s")
    print(f"{args.dataset} 4 horizons x {args.epochs} epochs: {total_flops / 1e12:.1f} TFLOP; floor on "
          f"{args.processes} processes at GEMM peak: {floor / 60:.1f} min (target {TARGET_S / 60:.0f} min: needs "
          f"{needed:.0%} of GEMM peak sustained over the whole run, element-wise work included)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
