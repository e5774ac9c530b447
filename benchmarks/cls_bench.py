"""FFNet-1 vs ConvNeXt-T CPU throughput + the params/MACs table (results: docs/classification.md).

    python benchmarks/cls_bench.py [--out runs/cls_bench] [--threads 2] [--quick] [--summary PATH]

Runs, in one process and interleaved per setting (see ffnet_classification.bench):
  1. params / MACs of FFNet-1..4 (train and fused, 256 and 384) and of the ConvNeXt-T peer;
  2. fp32 eager, batch 1/16/64, contiguous and channels-last: FFNet-1 train form, fused, fused+CPU layout;
  3. bf16 (autocast) eager, channels-last, batch 1/16;
  4. torch.compile (inductor, freezing) fp32 channels-last, batch 1/16 (fused forms and the peer).
Every row records the 1-minute load average: on a shared machine, compare ratios, not absolute img/s.
``--summary PATH`` writes the fused-vs-ConvNeXt-T rows of every part in core's speed-summary form
(``metamixer.bench``; ``scripts/speed_table.py`` runs ``--quick --parts fp32_eager --layouts channels_last
--forms deploy``).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ffnet_classification.bench import flops_table, markdown, run_benchmark, speed_summary
from metamixer.bench import write_summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/cls_bench")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="bs 1/16 only, fewer rounds, no compile")
    p.add_argument("--parts", nargs="+", default=None, help="subset of: fp32_eager bf16_eager fp32_compile")
    p.add_argument("--layouts", nargs="+", default=None, choices=["contiguous", "channels_last"],
                   help="only these layouts in every part")
    p.add_argument("--forms", nargs="+", default=None, choices=["train", "fused", "fused_cpu", "deploy"],
                   help="only these forms of ours in every part (deploy is timed in eager parts only)")
    p.add_argument("--summary", default=None, help="speed-summary JSON (metamixer.bench) for scripts/speed_table.py")
    a = p.parse_args()
    if a.summary and a.forms and not {"fused", "fused_cpu", "deploy"} & set(a.forms):
        p.error("--summary quotes a fused form: add fused, fused_cpu or deploy to --forms")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"flops": flops_table()}
    (out / "flops.json").write_text(json.dumps(report["flops"], indent=2))
    for r in report["flops"]:
        print(f"{r['model']:<18} {r['resolution']}px params {r['params_train']:,}/{r['params_fused']:,} "
              f"MACs {r['gmacs_train']:.3f}/{r['gmacs_fused']:.3f} G (train/fused)")
    rounds = 3 if a.quick else a.rounds
    parts = {
        "fp32_eager": dict(batch_sizes=[1, 16] if a.quick else [1, 16, 64], modes=["eager"], dtypes=["fp32"],
                           layouts=["contiguous", "channels_last"]),
        "bf16_eager": dict(batch_sizes=[1, 16], modes=["eager"], dtypes=["bf16"], layouts=["channels_last"],
                           forms=["fused", "fused_cpu"]),
    }
    if not a.quick:
        parts["fp32_compile"] = dict(batch_sizes=[1, 16], modes=["compile"], dtypes=["fp32"],
                                     layouts=["channels_last"], forms=["fused", "fused_cpu"])
    if a.parts:
        if a.quick and "fp32_compile" in a.parts:
            parts["fp32_compile"] = dict(batch_sizes=[1, 16], modes=["compile"], dtypes=["fp32"],
                                         layouts=["channels_last"], forms=["fused", "fused_cpu"])
        parts = {k: v for k, v in parts.items() if k in a.parts}
    for kw in parts.values():
        kw.update({k: v for k, v in (("layouts", a.layouts), ("forms", a.forms)) if v})
    summary = []
    for name, kw in parts.items():
        print(f"== {name} (load {os.getloadavg()[0]:.1f})", flush=True)
        rep = run_benchmark("ffnet_1", threads=a.threads, rounds=rounds, min_round_s=0.5, **kw)
        report[name] = rep
        (out / f"{name}.json").write_text(json.dumps(rep, indent=2))
        (out / f"{name}.md").write_text(markdown(rep) + "\n")
        print(markdown(rep), flush=True)
        summary += speed_summary(rep)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if a.summary:
        write_summary(a.summary, summary)


if __name__ == "__main__":
    main()
