"""Latency / peak memory / MACs of FFNetSR for a 1280x720 output (the paper's measurement size).

``ffnet-sr-bench --scales 2 4 --models ffnetsr_light ffnetsr --modes eager compiled --precisions fp32 bf16``
measures, in one process and on the same input, every combination plus the peers:

- ``whole`` vs ``tiled`` (exact tiles of ``--tile`` LR pixels, context = receptive radius; bounded memory);
- ``eager`` vs ``compiled`` (``torch.compile``; needs a C++ compiler on CPU);
- ``fp32`` vs ``bf16`` (autocast);
- peers: MATLAB-exact bicubic (this package's NumPy ``imresize``) and ``torch`` bicubic interpolation.

Latency = median of ``--repeats`` timed runs after ``--warmup`` runs (batch 1, no grad). Peak memory = the
CUDA allocator peak on GPU; on CPU the peak resident-set growth over the run, sampled every 2 ms (an
approximation: freed heap pages are returned to the OS with ``malloc_trim`` before each measurement, other
threads' allocations are included). MACs are counted on the ``meta`` device
(no compute), convs only. Results print as a Markdown table and, with ``--output``, as JSON.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from metamixer.bench import peak_memory_mib, summary_entry
from metamixer.nn.flops import count_macs, count_params
from metamixer.train.amp import autocast
from metamixer.train.device import resolve_device
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_json

from .imresize import imresize
from .inference import forward_tiled, prepare_for_inference
from .models import create_model

__all__ = ["measure", "model_macs", "run_benchmark", "compare_with_authors", "main"]

OUT_H, OUT_W = 720, 1280


def measure(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    """Median/min latency (ms) and peak memory (MiB, core's :func:`~metamixer.bench.peak_memory_mib`) of ``fn``."""
    for _ in range(warmup):
        fn()
    times = []

    def timed() -> None:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) * 1000.0)

    _, peak = peak_memory_mib(timed, device)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "peak_mem_mib": peak}


def model_macs(name: str, scale: int, lr_hw: tuple[int, int]) -> int:
    """MACs of one forward pass at LR size ``lr_hw``, counted on the meta device (no real compute)."""
    with torch.device("meta"):
        model = create_model(name, scale)
        x = torch.empty(1, 3, *lr_hw)
    return count_macs(model, x)


def _output_mib(lr_size: str, scale: int) -> float:
    """MiB of the float32 RGB output of an ``HxW`` LR input at ``scale``: the part of the tiled path's peak that
    must grow with the image."""
    h, w = (int(v) for v in lr_size.split("x"))
    return 3 * h * scale * w * scale * 4 / 2**20


def run_benchmark(
    models: Sequence[str],
    scales: Sequence[int],
    modes: Sequence[str],
    precisions: Sequence[str],
    tile: int,
    device: torch.device,
    warmup: int,
    repeats: int,
    log: Callable[[str], None] = print,
    tilings: Sequence[str] = ("whole", "tiled"),
    tile_pad: int | None = None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for scale in scales:
        lr_hw = (OUT_H // scale, OUT_W // scale)
        rng = np.random.default_rng(0)
        lr_np = rng.integers(0, 256, size=(*lr_hw, 3), dtype=np.uint8)
        x = torch.from_numpy(lr_np.transpose(2, 0, 1).copy()).float().div(255).unsqueeze(0).to(device)

        stats = measure(lambda a=lr_np, s=scale: imresize(a, float(s)), torch.device("cpu"), 1, repeats)
        rows.append({"method": "bicubic (MATLAB-exact, NumPy)", "scale": scale, "mode": "-", "precision": "fp64",
                     "tiling": "whole", "params": 0, "macs_g": 0.0, **stats})
        log(f"x{scale} bicubic numpy: {stats['median_ms']:.1f} ms")
        stats = measure(lambda t=x, s=scale: F.interpolate(t, scale_factor=s, mode="bicubic", align_corners=False),
                        device, 1, repeats)
        rows.append({"method": "bicubic (torch.interpolate)", "scale": scale, "mode": "eager",
                     "precision": "fp32", "tiling": "whole", "params": 0, "macs_g": 0.0, **stats})

        for name in models:
            macs = model_macs(name, scale, lr_hw)
            torch.manual_seed(0)
            model = create_model(name, scale).to(device).eval()
            params = count_params(model)
            for mode in modes:
                runner = prepare_for_inference(model, compile=mode == "compiled")  # the deploy path users get
                for precision in precisions:
                    for tiling in tilings:
                        def fn(runner=runner, precision=precision, tiling=tiling, x=x, scale=scale) -> torch.Tensor:
                            with torch.no_grad(), autocast(device, precision):
                                if tiling == "whole":
                                    return runner(x)
                                return forward_tiled(runner, x, scale, tile=tile, tile_pad=tile_pad)

                        try:
                            stats = measure(fn, device, warmup, repeats)
                        except Exception as exc:  # e.g. no C++ compiler for torch.compile on CPU
                            log(f"x{scale} {name} {mode} {precision} {tiling}: FAILED ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:120]})")
                            continue
                        row = {"method": name, "scale": scale, "mode": mode, "precision": precision,
                               "tiling": (f"tile {tile}" + ("" if tile_pad is None else f" pad {tile_pad}")) if tiling == "tiled" else "whole", "params": params,
                               "macs_g": macs / 1e9, **stats}
                        rows.append(row)
                        log(f"x{scale} {name} {mode} {precision} {row['tiling']}: {stats['median_ms']:.0f} ms, "
                            f"peak +{stats['peak_mem_mib']:.0f} MiB")
    return rows


def compare_with_authors(name: str = "ffnetsr_light", scale: int = 4, lr_hw: tuple[int, int] = (90, 160),
                         rounds: int = 5, tile: int = 32, tile_pad: int = 8,
                         log: Callable[[str], None] = print,
                         device: torch.device | str = "cpu", compiled: bool = False) -> dict[str, Any]:
    """Our deploy path (:func:`~ffnet_sr.inference.prepare_for_inference`) against the authors' architecture
    (the same weights run as the plain PyTorch module sequence on a contiguous NCHW input, which is what their
    BasicSR code executes) in one process: ``rounds`` interleaved rounds (authors, ours, authors, ...), medians;
    the largest relative output difference; peak memory of one whole-image run each; and the tiled deploy
    path's peak at the given size and at 2x each side (tiles of ``tile`` LR pixels with ``tile_pad`` context:
    once the image is larger than one window the peak depends on the window, not the image; the exact pad,
    the 110-pixel receptive radius, makes windows of 2·110 + tile pixels, larger than the quick image).

    ``compiled``: also time ``prepare_for_inference(model, compile=True)`` in the same rounds, after its one-time
    compile (timed and reported in the notes): the steady state a folder of same-shape images or tiles gets.

    On a CUDA ``device`` both run there (ours: the fused channels-last PyTorch path, core's C kernels being
    CPU-only), each timed with a device synchronisation, and peaks are CUDA allocator peaks."""
    device = torch.device(device)
    cuda = device.type == "cuda"

    def run(model: Callable[[torch.Tensor], torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
        out = model(inp)
        if cuda:
            torch.cuda.synchronize(device)
        return out

    def peak(fn: Callable[[], Any]) -> float:
        return peak_memory_mib(fn, device)[1]

    torch.manual_seed(0)
    authors = create_model(name, scale).eval()
    with torch.no_grad():  # trained-like weights: the init's zero biases would hide bias/epilogue mistakes
        for p in authors.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    authors = authors.to(device)
    ours = prepare_for_inference(authors)
    x = torch.rand(1, 3, *lr_hw).to(device)
    models = {"authors": authors, "ours": ours}
    times: dict[str, list[float]] = {"authors": [], "ours": []}
    compile_s, rel_compiled = None, None
    with torch.inference_mode():
        reference, got = run(authors, x), run(ours, x)
        rel = float((got - reference).abs().max() / reference.abs().max())
        if compiled:
            models["compiled"], times["compiled"] = prepare_for_inference(authors, compile=True), []
            start = time.perf_counter()
            out = run(models["compiled"], x)
            compile_s = time.perf_counter() - start
            rel_compiled = float((out - reference).abs().max() / reference.abs().max())
        if cuda:  # cuDNN autotuning and lazy module loading happen on the first calls, not in the timed rounds
            run(authors, x), run(ours, x)
        for _ in range(rounds):
            for label, model in models.items():
                start = time.perf_counter()
                run(model, x)
                times[label].append(time.perf_counter() - start)
            log("round: " + ", ".join(f"{label} {t[-1]:.4f} s" for label, t in times.items()))
        peaks = {"authors": peak(lambda: run(authors, x)), "ours": peak(lambda: run(ours, x))}
        tiled = {}
        for factor in (1, 2):
            big = torch.rand(1, 3, lr_hw[0] * factor, lr_hw[1] * factor).to(device)
            tiled[f"{big.shape[-2]}x{big.shape[-1]}"] = peak(lambda b=big: forward_tiled(ours, b, scale, tile, tile_pad))
    med = {k: statistics.median(v) for k, v in times.items()}
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} threads"
    what = f"{name} x{scale}, LR {lr_hw[0]}x{lr_hw[1]}, fp32, batch 1, {where}"
    rows = [summary_entry(
        "super_resolution", what,
        ("prepare_for_inference (fused, channels-last" + (")" if cuda else " kernels)"), med["ours"]),
        ("authors' architecture (plain PyTorch, NCHW)", med["authors"]), "s", higher_is_better=False,
        peak_mib=(peaks["ours"], peaks["authors"]))]
    notes = [f"outputs: max relative difference {rel:.1e} (ours vs the authors' module sequence)",
             f"tiled deploy path (tile {tile}, pad {tile_pad}), peak memory growth by LR size, the output image "
             "included (the working memory beside it stays flat): " + ", ".join(
                 f"{size} -> {mib:.1f} MiB (output {_output_mib(size, scale):.1f})" for size, mib in tiled.items())]
    if compiled:
        rows.append(summary_entry(
            "super_resolution", f"{what}, compiled, steady state",
            ("prepare_for_inference(compile=True) (inductor, frozen weights)", med["compiled"]),
            ("authors' architecture (plain PyTorch, NCHW)", med["authors"]), "s", higher_is_better=False))
        notes.append(f"compile=True: one-time compile {compile_s:.0f} s for this shape (cached on disk for later "
                     f"runs), then outputs within {rel_compiled:.1e} of the authors'")
    return {
        "what": what, "median_s": med, "ratio": med["authors"] / med["ours"], "max_rel_diff": rel,
        "peak_mem_mib": peaks, "tiled_peak_mem_mib": {"tile": tile, "tile_pad": tile_pad, **tiled}, "rounds": rounds,
        "speed_summary": rows, "notes": notes, "compile_s": compile_s,
    }


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| method | scale | mode | precision | tiling | params | MACs (G) | median ms | min ms | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | x{r['scale']} | {r['mode']} | {r['precision']} | {r['tiling']} | "
            f"{r['params'] / 1e6:.3f}M | {r['macs_g']:.1f} | {r['median_ms']:.0f} | {r['min_ms']:.0f} | "
            f"{r['peak_mem_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffnet-sr-bench", description="FFNetSR latency/memory for 1280x720 outputs.")
    p.add_argument("--models", nargs="+", default=["ffnetsr_light", "ffnetsr"], choices=["ffnetsr_light", "ffnetsr"])
    p.add_argument("--scales", nargs="+", type=int, default=[2, 4])
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--tilings", nargs="+", default=["whole", "tiled"], choices=["whole", "tiled"])
    p.add_argument("--tile", type=int, default=128, help="LR tile side for the tiled rows")
    p.add_argument("--tile-pad", type=int, default=None, help="tile context (default: receptive radius = exact)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", default=None, help="JSON file for the rows")
    p.add_argument("--compare-authors", action="store_true",
                   help="only our deploy path vs the authors' architecture, interleaved (FFNetSR-light x4)")
    p.add_argument("--quick", action="store_true", help="with --compare-authors: 3 rounds instead of 7")
    p.add_argument("--compiled", action="store_true",
                   help="with --compare-authors: also time the compile=True deploy path (after its one-time compile)")
    p.add_argument("--summary", default=None, help="JSON file for the speed summary (scripts/speed_table.py)")
    args = p.parse_args(argv)
    if any(s < 1 for s in args.scales):
        raise FFNetError("--scales must be positive integers")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, key="--device")
    env = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print(f"environment: {env}")
    if args.compare_authors:
        if device.type not in ("cpu", "cuda"):
            raise FFNetError(f"--compare-authors runs on cpu or cuda, got --device {device}")
        result = compare_with_authors(rounds=(3 if args.quick else 7) * (5 if device.type == "cuda" else 1),
                                      device=device, compiled=args.compiled)
        print(f"{result['what']}: authors {result['median_s']['authors']:.3f} s, ours "
              f"{result['median_s']['ours']:.3f} s -> {result['ratio']:.2f}x; max rel diff "
              f"{result['max_rel_diff']:.1e}; peak MiB {result['peak_mem_mib']}; tiled {result['tiled_peak_mem_mib']}")
        for path in filter(None, (args.output, args.summary)):
            write_json(path, {"environment": env, **result})
        return 0
    rows = run_benchmark(args.models, args.scales, args.modes, args.precisions, args.tile, device,
                         args.warmup, args.repeats, tilings=args.tilings, tile_pad=args.tile_pad)
    print(format_markdown(rows))
    if args.output:
        write_json(args.output, {"environment": env, "rows": rows})
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
