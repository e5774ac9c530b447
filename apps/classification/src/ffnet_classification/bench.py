"""Benchmark: ``ffnet-cls-bench [--flops] [--batch-sizes 1 16 64] [--modes eager compile] [--dtypes fp32 bf16]``.

Reports parameters, MACs and inference throughput (img/s) of FFNet in train form and fused (deploy) form next
to a peer, ConvNeXt-T, implemented here in plain PyTorch (or timm's when installed and ``--peer timm``), in
the same process and under the same settings. Throughput is measured in interleaved rounds (each round times
every model once, the median round counts), so a shared, fluctuating machine biases the ratios as little as
possible. The machine load (``os.getloadavg``) is recorded with the results. ``--summary PATH`` writes the
fused-vs-ConvNeXt-T rows in core's speed-summary form (:mod:`metamixer.bench`) for ``scripts/speed_table.py``.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metamixer.bench import summary_entry, write_summary
from metamixer.nn.flops import count_macs, count_params
from metamixer.train.cli import build_eval_parser, positive_float, positive_int
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.outputs import check_output_file
from metamixer.train.results import write_json

from .models import create_model, list_models
from .models.cpu_opt import optimize_for_cpu, prepare_for_inference

# --------------------------------------------------------------------------------------------- peer: ConvNeXt-T


class _LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW map (permute, normalize, permute back), as ConvNeXt does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class _ConvNeXtBlock(nn.Module):
    """DW7x7 -> LN -> Linear 4x -> GELU -> Linear -> LayerScale, residual (the reference implementation)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt (Liu et al. 2022); ``convnext_tiny()``: depths 3-3-9-3, dims 96-768, 28.6M params."""

    def __init__(self, depths: Sequence[int] = (3, 3, 9, 3), dims: Sequence[int] = (96, 192, 384, 768),
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.downsample = nn.ModuleList([nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4),
                                                       _LayerNorm2d(dims[0], eps=1e-6))])
        for i in range(3):
            self.downsample.append(nn.Sequential(_LayerNorm2d(dims[i], eps=1e-6),
                                                 nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)))
        self.stages = nn.ModuleList([nn.Sequential(*[_ConvNeXtBlock(d) for _ in range(n)])
                                     for d, n in zip(dims, depths)])
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample, self.stages):
            x = stage(down(x))
        return self.head(self.norm(x.mean((2, 3))))


def convnext_tiny(num_classes: int = 1000) -> ConvNeXt:
    return ConvNeXt(num_classes=num_classes)


def build_peer(kind: str) -> nn.Module:
    if kind == "timm":
        try:
            import timm
        except ImportError:
            raise FFNetError("--peer timm needs timm installed; use --peer builtin") from None
        return timm.create_model("convnext_tiny", pretrained=False)
    return convnext_tiny()


# -------------------------------------------------------------------------------------------------- timing


def _prepare(model: nn.Module, dtype: str, channels_last: bool, mode: str, x: torch.Tensor) -> Callable:
    model = model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if mode == "compile":
        import torch._inductor.config as inductor_config

        # freezing = constant-fold weights, prepack them for oneDNN and fuse conv/linear + GELU/add (CPU inference)
        inductor_config.freezing = True
        model = torch.compile(model)
    elif mode == "jit":
        with torch.no_grad():
            model = torch.jit.freeze(torch.jit.trace(model, x))
    elif mode != "eager":
        raise FFNetError(f"unknown mode {mode!r}; expected eager, compile or jit")
    amp = dtype == "bf16"

    def step() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            return model(x)

    return step


def time_interleaved(steps: dict[str, Callable], rounds: int, min_round_s: float,
                     warmup: int) -> dict[str, tuple[float, float]]:
    """Median (wall s, process-CPU s) per call of each step; each round runs every step back to back.

    Interleaving makes the *ratios* robust to slowly varying machine load; the CPU time (all threads of this
    process) is reported too because on a shared machine it is far less load-dependent than wall time.
    """
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    per_call: dict[str, list[tuple[float, float]]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            n, t0, c0 = 0, time.perf_counter(), time.process_time()
            while True:
                fn()
                n += 1
                dt = time.perf_counter() - t0
                if dt >= min_round_s:
                    break
            per_call[name].append((dt / n, (time.process_time() - c0) / n))
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in per_call.items()}


def flops_table(resolutions: dict[str, Sequence[int]] | None = None) -> list[dict[str, Any]]:
    """Params and MACs (FlopCounterMode/2) of every variant, train and fused form, on the meta device."""
    resolutions = resolutions or {"ffnet_1": [256], "ffnet_2": [256], "ffnet_3": [256, 384], "ffnet_4": [256, 384]}
    rows = []
    for name, sizes in resolutions.items():
        with torch.device("meta"):
            model = create_model(name).eval()
        fused = model.fuse()
        for size in sizes:
            x = torch.empty(1, 3, size, size, device="meta")
            rows.append({"model": name, "resolution": size, "params_train": count_params(model),
                         "params_fused": count_params(fused), "gmacs_train": count_macs(model, x) / 1e9,
                         "gmacs_fused": count_macs(fused, x) / 1e9})
    with torch.device("meta"):
        peer = convnext_tiny().eval()
    rows.append({"model": "convnext_t (peer)", "resolution": 256, "params_train": count_params(peer),
                 "params_fused": count_params(peer),
                 "gmacs_train": count_macs(peer, torch.empty(1, 3, 256, 256, device="meta")) / 1e9,
                 "gmacs_fused": count_macs(peer, torch.empty(1, 3, 256, 256, device="meta")) / 1e9})
    return rows


def run_benchmark(
    model_name: str = "ffnet_1",
    batch_sizes: Sequence[int] = (1, 16, 64),
    modes: Sequence[str] = ("eager",),
    dtypes: Sequence[str] = ("fp32",),
    layouts: Sequence[str] = ("contiguous", "channels_last"),
    forms: Sequence[str] = ("train", "fused", "fused_cpu", "deploy"),
    peer: str = "builtin",
    resolution: int = 256,
    threads: int = 2,
    rounds: int = 5,
    min_round_s: float = 0.5,
    warmup: int = 2,
    log: Callable[[str], None] = print,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Interleaved throughput of ``model_name`` (or of ``model``, e.g. a checkpoint's custom size) in the
    requested forms next to ConvNeXt-T, for every batch size / dtype / mode / layout."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = (model if model is not None else create_model(model_name)).eval()
    models: dict[str, nn.Module] = {}
    if "train" in forms:
        models[f"{model_name}"] = base
    if "fused" in forms:
        models[f"{model_name}_fused"] = base.fuse()
    if "fused_cpu" in forms:
        models[f"{model_name}_fused_cpu"] = optimize_for_cpu(base, channels_last=False)
    if "deploy" in forms:  # what ffnet-cls-predict/-eval run on CPU (cpu_opt.prepare_for_inference)
        models[f"{model_name}_fused_deploy"] = prepare_for_inference(base)
    models["convnext_t"] = build_peer(peer).eval()
    info = {
        "model": model_name, "resolution": resolution, "threads": threads, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_start": os.getloadavg(), "rounds": rounds, "min_round_s": min_round_s,
        "params": {k: count_params(m) for k, m in models.items()},
    }
    results = []
    for bs in batch_sizes:
        x = torch.randn(bs, 3, resolution, resolution)
        for dtype in dtypes:
            for mode in modes:
                for layout in layouts:
                    cl = layout == "channels_last"
                    xin = x.contiguous(memory_format=torch.channels_last) if cl else x
                    t0 = time.time()
                    steps = {k: _prepare(m, dtype, cl, mode, xin) for k, m in models.items()
                             if mode == "eager" or not k.endswith("_deploy")}  # its C kernels run eager only
                    secs = time_interleaved(steps, rounds, min_round_s, warmup)
                    row = {"batch": bs, "dtype": dtype, "mode": mode, "layout": layout,
                           "img_s": {k: bs / v[0] for k, v in secs.items()},
                           "cpu_ms_per_img": {k: 1000 * v[1] / bs for k, v in secs.items()},
                           "loadavg": os.getloadavg()[0],
                           "wall_s": time.time() - t0}
                    peer_ips = row["img_s"]["convnext_t"]
                    row["ratio_vs_convnext_t"] = {k: v / peer_ips for k, v in row["img_s"].items() if k != "convnext_t"}
                    peer_cpu = row["cpu_ms_per_img"]["convnext_t"]
                    row["cpu_ratio_vs_convnext_t"] = {k: peer_cpu / v for k, v in row["cpu_ms_per_img"].items()
                                                      if k != "convnext_t"}
                    results.append(row)
                    log(f"bs={bs:<3} {dtype} {mode:<7} {layout:<13} " + "  ".join(
                        f"{k}={v:8.1f} img/s" for k, v in row["img_s"].items()) + "  ratio " + " ".join(
                        f"{k}={v:.2f}x" for k, v in row["ratio_vs_convnext_t"].items()) + "  cpu-time ratio " + " ".join(
                        f"{k}={v:.2f}x" for k, v in row["cpu_ratio_vs_convnext_t"].items()) + f"  load={row['loadavg']:.1f}")
                    for m in models.values():  # undo channels_last for the next layout
                        m.to(memory_format=torch.contiguous_format)
    info["loadavg_end"] = os.getloadavg()
    return {"info": info, "results": results}


def markdown(report: dict[str, Any]) -> str:
    """Table: img/s (wall) per model, best fused ratio by wall time and by process CPU time, load average."""
    names = list(report["results"][0]["img_s"])
    lines = ["| batch | dtype | mode | layout | " + " | ".join(f"{n} img/s" for n in names)
             + " | best fused / ConvNeXt-T (wall) | (CPU time) | load |",
             "|---" * (7 + len(names)) + "|"]
    for r in report["results"]:
        wall = [v for k, v in r["ratio_vs_convnext_t"].items() if "_fused" in k]
        cpu = [v for k, v in r["cpu_ratio_vs_convnext_t"].items() if "_fused" in k]
        cells = " | ".join(f"{v:.1f}" for v in r["img_s"].values())
        lines.append(f"| {r['batch']} | {r['dtype']} | {r['mode']} | {r['layout']} | {cells} | "
                     f"{max(wall) if wall else float('nan'):.2f}x | {max(cpu) if cpu else float('nan'):.2f}x | "
                     f"{r['loadavg']:.1f} |")
    return "\n".join(lines)


#: which of our forms a summary row quotes, best first: the CLIs' CPU path, then the other fused forms
SUMMARY_FORMS = ("fused_deploy", "fused_cpu", "fused")
_FORM_NAMES = {"fused_deploy": "fused, CPU deploy form (prepare_for_inference)",
               "fused_cpu": "fused + optimize_for_cpu", "fused": "fused (model.fuse())"}


def speed_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``scripts/speed_table.py`` (metamixer.bench contract): per (batch, dtype, mode), our form named
    first in :data:`SUMMARY_FORMS` that was timed vs ConvNeXt-T, in img/s, from the channels-last row when one
    was timed (ConvNeXt-T's faster layout here), else the contiguous one. The form is fixed in advance, not the
    best of the run, so the ratio is not a maximum over noisy candidates."""
    info, chosen = report["info"], {}
    for row in report["results"]:
        key = (row["batch"], row["dtype"], row["mode"])
        if key not in chosen or row["layout"] == "channels_last":
            chosen[key] = row
    rows = []
    for (batch, dtype, mode), row in chosen.items():
        form = next((f for f in SUMMARY_FORMS if f"{info['model']}_{f}" in row["img_s"]), None)
        if form is None:
            continue
        what = (f"{info['model']} vs ConvNeXt-T, {info['resolution']} px, batch {batch}, {dtype}, {mode}, "
                f"{row['layout'].replace('_', '-')}, {info['threads']} threads")
        rows.append(summary_entry("classification", what,
                                  (f"{info['model']} {_FORM_NAMES[form]}", row["img_s"][f"{info['model']}_{form}"]),
                                  ("ConvNeXt-T (same process, interleaved)", row["img_s"]["convnext_t"]),
                                  "img/s", higher_is_better=True))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = build_eval_parser("ffnet-cls-bench", __doc__.splitlines()[0], checkpoint_required=False, overrides=False)
    p.add_argument("--model", default=None, choices=list_models(),
                   help="variant to benchmark (default ffnet_1); with --checkpoint: the architecture of an official file")
    p.add_argument("--flops", action="store_true", help="print params/MACs of all variants (fact-sheet check)")
    p.add_argument("--no-throughput", action="store_true", help="only --flops")
    p.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1, 16, 64])
    p.add_argument("--modes", nargs="+", default=["eager"], choices=["eager", "compile", "jit"])
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--layouts", nargs="+", default=["contiguous", "channels_last"],
                   choices=["contiguous", "channels_last"])
    p.add_argument("--forms", nargs="+", default=["train", "fused", "fused_cpu", "deploy"],
                   choices=["train", "fused", "fused_cpu", "deploy"],
                   help="fused_cpu = fused + ffnet_classification.models.cpu_opt.optimize_for_cpu; deploy = "
                        "cpu_opt.prepare_for_inference (the CLIs' CPU path)")
    p.add_argument("--peer", default="builtin", choices=["builtin", "timm"])
    p.add_argument("--resolution", type=positive_int, default=256)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--min-round-s", type=positive_float, default=0.5)
    p.add_argument("--summary", default=None, help="JSON speed summary for scripts/speed_table.py (also put "
                   "into --output as 'speed_summary')")
    a = p.parse_args(argv)
    check_output_file(a.output, "--output")
    check_output_file(a.summary, "--summary")
    if a.summary and (a.no_throughput or not {"fused", "fused_cpu", "deploy"} & set(a.forms)):
        raise FFNetError("--summary needs the throughput run with a fused form (--forms fused, fused_cpu or deploy)")
    model, name = None, a.model or "ffnet_1"
    if a.checkpoint:  # its architecture (a custom size too); the weights do not change the speed
        from .models.registry import load_model

        model = load_model(a.checkpoint, model_name=a.model, fused=False).model
        name = getattr(model, "model_name", name)
    report: dict[str, Any] = {}
    if a.flops:
        report["flops"] = flops_table()
        for r in report["flops"]:
            print(f"{r['model']:<18} {r['resolution']}px  params {r['params_train']:>11,} train / "
                  f"{r['params_fused']:>11,} fused   MACs {r['gmacs_train']:.3f} G train / {r['gmacs_fused']:.3f} G fused")
    if not a.no_throughput:
        report.update(run_benchmark(name, a.batch_sizes, a.modes, a.dtypes, a.layouts, a.forms, a.peer,
                                    a.resolution, a.threads, a.rounds, a.min_round_s, model=model))
        print(markdown(report))
        report["speed_summary"] = speed_summary(report)
        if a.summary:
            write_summary(a.summary, report["speed_summary"])
    if a.output:
        write_json(a.output, report)
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
