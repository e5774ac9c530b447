"""Reproduce the FFNet-TS paper numbers (issue 5) with the authors' recipes, one process per core.

    nice -n 10 python benchmarks/ts_reproduce.py [--output runs/ts_repro] [--processes 2] [--max-epochs 25]

Plan (seed-first, see ``ffnet_timeseries.reproduce.PLANS``): ETTh1, ETTh2, Exchange, ETTm2, ETTm1, Weather x 4
horizons at seed 2021, then ETTh1/ETTh2 at seeds 2022 and 2023. ``--processes`` copies of ``ffnet-ts-reproduce``
(1 intra-op thread each: on small CPUs separate jobs scale better than threads) share the plan through lock files;
restartable (finished jobs are read back, interrupted ones resume from ``last.pth``). ``--max-epochs`` caps
``train.epochs`` (0 = the recipe's 100; the table notes a cap). Writes ``<output>/table.md`` and ``table.json``,
and each process's log to ``<output>/worker<k>.log``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ffnet_timeseries.reproduce import main as reproduce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/ts_repro")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument("--max-epochs", type=int, default=0)
    args = parser.parse_args()
    command = [sys.executable, "-m", "ffnet_timeseries.reproduce", "--plan", "paper", "--output", args.output,
               f"train.threads={args.threads}", "train.progress=false"]
    if args.max_epochs > 0:
        command.append(f"train.epochs={args.max_epochs}")
    root = Path(args.output)
    root.mkdir(parents=True, exist_ok=True)
    workers = []
    for k in range(args.processes):
        log = open(root / f"worker{k}.log", "a")  # noqa: SIM115 - closed below
        workers.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    for process, log in workers:
        codes.append(process.wait())
        log.close()
    reproduce(["--output", args.output, "--collect"])
    if any(codes):
        raise SystemExit(f"a reproduce process failed (exit codes {codes}); see {root}/worker*.log")


if __name__ == "__main__":
    main()
