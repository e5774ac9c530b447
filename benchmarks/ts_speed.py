"""Speed of FFNet-TS on CPU against the authors' formulation, in the same run.

    python benchmarks/ts_speed.py [--threads 1] [--batch 512] [--ffn-ratio 2]

1. The depthwise k=51 conv at the ETTh1 shape ([B, 448, 48]): Toeplitz matmul (through core's C product kernel,
   and through ``torch.bmm``: ``toeplitz_bmm``) vs PyTorch's ``conv1d``.
2. One Adam step of the full FFNet-TS model (ETTh1: 7 variables, ``--ffn-ratio 2``; ETTm1/ETTm2:
   ``--ffn-ratio 12``; Weather: ``--n-vars 21 --ffn-ratio 12 --batch 256``; train mode, dropout 0.7), five ways
   with the same weights: ``ours`` (channel-major activations, FFNs through core's cache-sliced ``grouped_ffn``
   with its fused C kernels, Toeplitz depthwise convs through the C product kernel, FastDropout),
   ``ours_without_c_kernels`` (the same with core's C kernels off: the sliced FFNs' element-wise work as PyTorch
   ops and the Toeplitz products through ``torch.bmm``, as on a machine without a C compiler),
   ``ours_unsliced_ffn`` (the FFNs as
   whole-tensor ops), ``grouped_conv+toeplitz`` (grouped ``Conv1d`` on ``[B, C, N]``) and ``authors`` (the
   authors' formulation: grouped ``Conv1d``, native depthwise ``conv1d``, ``F.dropout``). Prints seconds per
   step (median over ``--repeats`` rounds that run every variant once), the speed-up ratios and the activation memory each keeps for the backward pass (MiB of tensors saved by
   autograd). The allocator is tuned as in training
   (``metamixer.train.allocator.keep_freed_memory``) unless ``--default-malloc``. ``--ablate-kernels`` adds
   ``ours`` with one of core's C kernels off for the whole step (``ours_without_product_kernel``: ``small_bmm.c``,
   ``ours_without_dwconv_kernel``: ``dwconv_small.c``; ``ours_ffn_gelu_only``: both, which is what an AVX2 CPU ran
   before those two had AVX2 code). The output names the CPU and the code path (ISA) each kernel was built with.
3. The arithmetic floor of that step: its multiply-adds with no algorithmic waste (``ts_floor.forward_macs`` /
   ``train_macs``: the count ``benchmarks/ts_floor.py`` cross-checks against ``torch.utils.flop_counter``) at this
   machine's float32 GEMM rate with the same threads (best of 2048^3 ``mm``), measured in this run; ``ours`` and
   ``authors`` are reported as a percentage of it (floor time / step time: 100 % would be a step that does only
   its products, each at GEMM speed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn.functional as F

from ffnet_timeseries import create_model
from ffnet_timeseries.models import DepthwiseConv1dToeplitz, ffnet_ts
from metamixer.bench import cpu_model, summary_entry, write_summary
from metamixer.kernels import native
from metamixer.kernels.fastconv import toeplitz_depthwise_conv1d
from metamixer.kernels.native import ffn_gelu_kernels
from metamixer.train.allocator import keep_freed_memory
from ts_floor import forward_macs, train_macs


def _time(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def gemm_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """This process's float32 GEMM rate at ``threads`` threads (best of ``repeats`` ``size``^3 products)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ffn-ratio", type=int, default=2)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--n-vars", type=int, default=7, help="variables (7: ETT; 21 with --ffn-ratio 12 --batch 256: Weather)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's allocator as is (training calls metamixer.train.allocator.keep_freed_memory)")
    parser.add_argument("--ablate-kernels", action="store_true",
                        help="also time ours with the product and/or short-conv C kernels off for the whole step")
    parser.add_argument("--summary", default=None,
                        help="also write ours vs the authors' step time as a speed summary (metamixer.bench)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    malloc_tuned = False if args.default_malloc else keep_freed_memory()
    torch.manual_seed(0)
    results = {}
    x = torch.randn(args.batch, 448, 48, requires_grad=True)
    conv = DepthwiseConv1dToeplitz(448, 51)
    for mode in ("toeplitz", "toeplitz_bmm", "conv"):
        conv.mode = "toeplitz" if mode.startswith("toeplitz") else mode
        kernels = native.disabled() if mode == "toeplitz_bmm" else contextlib.nullcontext()

        def fwd() -> None:
            with torch.no_grad():
                conv(x)

        def fwd_bwd() -> None:
            conv(x).sum().backward()

        with kernels:
            results[f"dwconv51_{mode}_fwd_s"] = _time(fwd, args.repeats)
            results[f"dwconv51_{mode}_fwd_bwd_s"] = _time(fwd_bwd, args.repeats)
    conv.mode = "toeplitz"
    ref = F.conv1d(x, conv.weight, conv.bias, padding=25, groups=448)
    results["max_abs_diff"] = float((conv(x) - ref).abs().max().detach())
    model = create_model(args.n_vars, 96, 96, ffn_ratio=args.ffn_ratio, dropout=0.7)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = torch.randn(args.batch, 96, args.n_vars)
    variants = {
        "ours": model,
        "ours_without_c_kernels": lambda x: _without_c_kernels(model, x),
        "ours_unsliced_ffn": lambda x: _without_sliced_ffn(model, x),
        "grouped_conv+toeplitz": lambda x: _grouped_conv_forward(model, x, toeplitz=True),
        "authors": lambda x: _grouped_conv_forward(model, x, toeplitz=False),
    }
    # kernels off for forward and backward alike (the backward of core's operators asks for them again)
    off = {"ours_without_product_kernel": ("small_bmm.c",), "ours_without_dwconv_kernel": ("dwconv_small.c",),
           "ours_ffn_gelu_only": ("small_bmm.c", "dwconv_small.c")} if args.ablate_kernels else {}
    variants.update({name: model for name in off})

    def context(name: str) -> contextlib.AbstractContextManager:
        return native.disabled(*off[name]) if name in off else contextlib.nullcontext()

    def step(name: str) -> float:
        start = time.perf_counter()
        opt.zero_grad()
        with context(name):
            variants[name](batch).pow(2).mean().backward()
        opt.step()
        return time.perf_counter() - start

    # rounds over all variants, median per variant: a slow spell of a shared machine hits every variant alike
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.repeats + 1):
        for name in variants:
            elapsed = step(name)
            if round_index:  # round 0 warms up
                times[name].append(elapsed)
    for name, forward in variants.items():
        results[f"train_step_{name}_s"] = statistics.median(times[name])
        with context(name):
            results[f"saved_activations_{name}_MiB"] = _saved_mib(forward, batch)
    for name in variants:
        if name != "ours":
            results[f"speedup_vs_{name}"] = results[f"train_step_{name}_s"] / results["train_step_ours_s"]
    step_gflop = 2 * train_macs(forward_macs(model)) * args.batch / 1e9
    peak = gemm_gflops(args.threads)
    floor_s = step_gflop / peak
    results.update(step_gflop=step_gflop, gemm_gflops=peak, floor_s=floor_s,
                   floor_pct_ours=100 * floor_s / results["train_step_ours_s"],
                   floor_pct_authors=100 * floor_s / results["train_step_authors_s"])
    built = {source: native._loaded.get(source) for source in ("ffn_gelu.c", "small_bmm.c", "dwconv_small.c")}
    results.update(threads=args.threads, batch=args.batch, ffn_ratio=args.ffn_ratio, n_vars=args.n_vars,
                   malloc_tuned=malloc_tuned, c_kernels=ffn_gelu_kernels() is not None, cpu=cpu_model(),
                   cpu_isa=native.cpu_isa(),
                   kernel_isa={source: getattr(kernel, "isa", "built" if kernel else None)
                               for source, kernel in built.items()},
                   kernels_offered={"small_bmm.c": native.small_bmm_kernel() is not None,
                                    "dwconv_small.c": native.dwconv_kernels() is not None})
    print(json.dumps(results, indent=2))
    if args.summary:  # the row of scripts/speed_table.py
        what = (f"one Adam training step, {args.n_vars} variables, ffn_ratio {args.ffn_ratio}, batch {args.batch}, "
                f"{args.threads} thread{'s' if args.threads > 1 else ''}")
        ours = ("ours (channel-major, sliced FFNs, core's C kernels)", results["train_step_ours_s"])
        rows = [summary_entry("timeseries", what, ours, ("authors' formulation (grouped Conv1d, conv1d, F.dropout)",
                                                         results["train_step_authors_s"]), "s", higher_is_better=False)]
        if "train_step_ours_without_c_kernels_s" in results:  # the native path vs pure PyTorch on this CPU's ISA
            rows.append(summary_entry(
                "timeseries", f"{what}: core's C kernels ({native.cpu_isa()} build) vs none", ours,
                ("ours without C kernels (pure PyTorch, as without a compiler)",
                 results["train_step_ours_without_c_kernels_s"]), "s", higher_is_better=False))
        notes = [f"arithmetic floor: {step_gflop:.1f} GFLOP per step at {peak:.0f} GFLOP/s (float32 GEMM, "
                 f"{args.threads} threads, this run) = {floor_s:.3f} s; ours runs at {results['floor_pct_ours']:.0f} % "
                 f"of it, the authors' formulation at {results['floor_pct_authors']:.0f} %"]
        write_summary(args.summary, rows, notes=notes)


def _saved_mib(forward, batch: torch.Tensor) -> float:  # noqa: ANN001
    """MiB of distinct tensors autograd keeps for the backward pass of one forward (parameters excluded)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.nn.Parameter):
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = forward(batch)
    # grouped_ffn keeps its 1-byte dropout masks on the autograd node, out of the hooks' sight: count them too
    nodes, visited, masks = [out.grad_fn], set(), 0
    while nodes:
        node = nodes.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        masks += sum(keep.numel() for keep in getattr(node, "keeps", None) or ())
        nodes.extend(next_node for next_node, _ in node.next_functions)
    return (sum(seen.values()) + masks) / 2**20


def _without_sliced_ffn(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with the FFNs run op by op (whole tensors) instead of core's cache-sliced ``grouped_ffn``."""
    sliced = ffnet_ts._ffn
    ffnet_ts._ffn = lambda *args, **kwargs: None  # the model's "run it op by op" answer
    try:
        return model(x)
    finally:
        ffnet_ts._ffn = sliced


def _without_c_kernels(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with core's fused C kernels off (their backward follows the forward's choice)."""
    with native.disabled():
        return model(x)


def _depthwise(conv: torch.nn.Conv1d, x: torch.Tensor, toeplitz: bool) -> torch.Tensor:
    if toeplitz:
        return toeplitz_depthwise_conv1d(x, conv.weight, conv.bias, conv.padding[0])
    return F.conv1d(x, conv.weight, conv.bias, padding=conv.padding, groups=conv.groups)


def _grouped_conv_forward(model: torch.nn.Module, x: torch.Tensor, toeplitz: bool) -> torch.Tensor:
    """The FFNet-TS forward as the authors write it: activations ``[B, M*D, N]``, grouped ``Conv1d`` 1x1 layers,
    ``F.dropout``; same modules and weights as ``model`` (single stage, cross-variable mixing, train mode)."""
    net = model.model
    b, _, m = x.shape
    mean, std = x.mean(1, keepdim=True), torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5)
    y = ((x - mean) / std).transpose(1, 2).reshape(b * m, 1, -1)
    y = torch.cat([y, y[:, :, -1:].expand(-1, -1, net.patch_size - net.patch_stride)], dim=-1)
    y = net.downsample_layers[0](y)
    d, n = y.shape[1], y.shape[2]
    for block in net.stages[0].blocks:
        tm, cm = block.token_mixer, block.channel_mixer
        z = y.reshape(b, m, d, n)
        h = z.transpose(1, 2).reshape(b, d * m, n)
        h = F.gelu(F.dropout(F.conv1d(h, tm.ffnpw1.weight, tm.ffnpw1.bias, groups=d), tm.ffn_drop1.p))
        h = h.reshape(b, d, 2 * m, n).transpose(1, 2).reshape(b, -1, n)
        h = F.dropout(F.conv1d(h, tm.ffnpw2.weight, tm.ffnpw2.bias, groups=m), tm.ffn_drop2.p)
        h = tm.norm(h.reshape(b * m, d, n)).reshape(b, m * d, n)
        h = _depthwise(tm.dw2, F.gelu(_depthwise(tm.dw1, h, toeplitz)), toeplitz)
        z = z.reshape(b, m * d, n) + h
        h = sum(br.bn_module(_depthwise(br.conv_module, z, toeplitz and br.conv_module.kernel_size[0] > 5))
                for br in cm.dw.branches())
        h = cm.norm(h.reshape(b * m, d, n)).reshape(b, m * d, n)
        h = F.gelu(F.dropout(F.conv1d(h, cm.ffnpw1.weight, cm.ffnpw1.bias, groups=m), cm.ffn_drop1.p))
        r = cm.ffn_ratio
        h = h.reshape(b, m, d * r, n).transpose(1, 2).reshape(b, -1, n)
        h = F.dropout(F.conv1d(h, cm.ffnpw2.weight, cm.ffnpw2.bias, groups=d), cm.ffn_drop2.p)
        y = (z.reshape(b, m, d, n) + h.reshape(b, d, m, n).transpose(1, 2)).reshape(b * m, d, n)
    out = net.head(y.reshape(b, m, d, n))  # [B, M, H]
    return out.transpose(1, 2) * std + mean


if __name__ == "__main__":
    main()
