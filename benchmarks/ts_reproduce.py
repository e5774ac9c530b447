"""Reproduce the FFNet-TS paper numbers (issue 5): ETTh1/ETTh2 x 4 horizons x 3 seeds, then ETTm1, ETTm2,
Weather, Exchange x 4 horizons x 1 seed, with the authors' recipes. Restartable (finished jobs are read back).

    nice -n 10 python benchmarks/ts_reproduce.py [--output runs/ts_repro] [--threads 2]

Writes ``<output>/table.md`` and ``<output>/table.json`` after every job; copy them into docs/timeseries.md.
"""

from __future__ import annotations

import argparse

from ffnet_timeseries.reproduce import main as reproduce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/ts_repro")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    reproduce(["--plan", "paper", "--output", args.output, "--table", f"{args.output}/table",
               f"train.threads={args.threads}", "train.progress=false"])


if __name__ == "__main__":
    main()
