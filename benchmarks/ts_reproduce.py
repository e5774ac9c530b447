"""Reproduce the FFNet-TS paper numbers (issue 5) with the authors' recipes, one process per core.

    nice -n 10 python benchmarks/ts_reproduce.py [--output runs/ts_repro] [--processes 2] [--max-epochs 25] \
        [--archive docs/timeseries_runs] [--plan paper] [--datasets ETTm1 ETTm2 --horizons 96 192]

Plan (seed-first, see ``ffnet_timeseries.reproduce.PLANS``): ETTh1, ETTh2, Exchange, ETTm2, ETTm1, Weather x 4
horizons at seed 2021, then ETTh1/ETTh2 at seeds 2022 and 2023. ``--processes`` copies of ``ffnet-ts-reproduce``
(1 intra-op thread each: on small CPUs separate jobs scale better than threads) share the plan through lock files;
restartable (finished jobs are read back, interrupted ones resume from ``last.pth``). ``--max-epochs`` caps
``train.epochs`` (0 = the recipe's 100; the table notes a cap). ``--archive`` (the repository keeps
``docs/timeseries_runs``) copies every finished run there and skips jobs already archived, so results add up
across sessions and machines. ``--datasets``/``--horizons``/``--seeds`` replace the plan by an explicit job list;
trailing ``key=value`` overrides reach every job (``run.device=cuda`` on a GPU machine: several processes can
share one GPU).
Writes ``<output>/table.md`` and ``table.json`` (archive included), and each process's log to
``<output>/worker<k>.log``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ffnet_timeseries.reproduce import main as reproduce
from metamixer.train.cli import build_parser


def main() -> None:
    parser = build_parser("ts_reproduce.py", __doc__.split("\n\n")[0], config=False)  # overrides: passed to every job
    parser.add_argument("--output", default="runs/ts_repro")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument("--max-epochs", type=int, default=0)
    parser.add_argument("--archive", default=None, help="folder of per-run result files (docs/timeseries_runs)")
    parser.add_argument("--plan", default="paper")
    parser.add_argument("--datasets", nargs="+", default=None, help="an explicit job list instead of the plan")
    parser.add_argument("--horizons", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", default=None)
    args = parser.parse_args()
    jobs = ["--plan", args.plan]
    if args.datasets:
        jobs = ["--datasets", *args.datasets]
        jobs += ["--horizons", *args.horizons] if args.horizons else []
        jobs += ["--seeds", *args.seeds] if args.seeds else []
    archive = ["--archive", args.archive] if args.archive else []
    command = [sys.executable, "-m", "ffnet_timeseries.reproduce", "--output", args.output, *archive,
               f"run.threads={args.threads}", "train.progress=false", *args.overrides]
    if args.max_epochs > 0:
        command.append(f"train.epochs={args.max_epochs}")
    command += jobs  # last: `--seeds 2021 train.x=y` would read the override as a seed
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
    reproduce(["--output", args.output, *archive, "--collect"])
    if any(codes):
        raise SystemExit(f"a reproduce process failed (exit codes {codes}); see {root}/worker*.log")


if __name__ == "__main__":
    main()
