"""``ffnet-ts-reproduce``: run a list of (dataset, horizon, seed) jobs with the authors' recipes and write a
paper-style table (mean +- std over seeds) as Markdown + JSON.

Restartable: a job whose ``results.json`` exists is read, not re-run; a job with a ``last.pth`` resumes exactly.
The table is rewritten after every job, so an interrupted reproduction still documents what finished.

    ffnet-ts-reproduce --plan paper --output runs/ts_repro --table docs/timeseries_results train.threads=2
    ffnet-ts-reproduce --datasets ETTh1 --horizons 96 192 --seeds 2021 --output runs/x --table runs/x/table
    ffnet-ts-reproduce --output runs/x --collect     # table of everything finished under runs/x

Parallel jobs: start the same command once per core (with ``train.threads=1``); the processes share the plan
through lock files in the job folders (each job is trained once) and each rewrites the table when it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ffnet_timeseries.config import TSConfig
from ffnet_timeseries.recipes import HORIZONS, RECIPES, recipe_config
from metamixer.config import apply_overrides, config_from_dict, config_to_dict
from metamixer.errors import FFNetError, run_cli
from metamixer.paths import write_json

__all__ = ["main", "cli", "plan_jobs", "plan_paper_jobs", "claim_job", "collect_results", "summarize", "render_markdown", "PAPER"]

#: published reference numbers (MSE, MAE): FFNet paper Table 7 averages over the 4 horizons (ETT: over the 4
#: subsets too), iTransformer's ETTh1-96, and the authors' code run here (fact sheet, one seed).
PAPER: dict[str, Any] = {
    "ffnet_table7_avg": {"ETT": (0.376, 0.390), "ECL": (0.182, 0.277), "Exchange": (0.359, 0.403),
                         "Traffic": (0.494, 0.328), "Weather": (0.244, 0.274)},
    "itransformer_ETTh1_96": (0.386, 0.405),
    "authors_code_here_ETTh1_96": (0.3876, 0.3954),
}

PLANS = {
    # the reproduction: ETTh1/ETTh2 x 4 horizons x 3 seeds, the rest x 4 horizons x 1 seed. Jobs run
    # seed-first (every dataset/horizon gets its first seed before any gets a second), cheapest datasets first.
    "paper": [("ETTh1", (2021, 2022, 2023)), ("ETTh2", (2021, 2022, 2023)), ("Exchange", (2021,)),
              ("ETTm2", (2021,)), ("ETTm1", (2021,)), ("Weather", (2021,))],
}


def plan_paper_jobs(plan: str, horizons: Sequence[int]) -> list[tuple[str, int, int]]:
    """A predefined plan's jobs, ordered seed rank first, then dataset, then horizon."""
    entries = PLANS[plan]
    rounds = max(len(seeds) for _, seeds in entries)
    return [(d, h, seeds[k]) for k in range(rounds) for d, seeds in entries if k < len(seeds) for h in horizons]


def plan_jobs(datasets: Sequence[str], horizons: Sequence[int], seeds: Sequence[int]) -> list[tuple[str, int, int]]:
    """Jobs ordered dataset, then seed, then horizon: every horizon gets one seed before any gets a second."""
    return [(d, h, s) for d in datasets for s in seeds for h in horizons]


def _job_dir(root: Path, dataset: str, horizon: int, seed: int) -> Path:
    return root / f"{dataset}_{horizon}_s{seed}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Group finished runs by (dataset, horizon): mean/std of test MSE/MAE, wall time, epochs; plus averages."""
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        rows.setdefault((r["dataset"], int(r["pred_len"])), []).append(r)
    table = []
    for (dataset, horizon), runs in sorted(rows.items(), key=lambda kv: (list(RECIPES).index(kv[0][0]) if kv[0][0] in RECIPES else 99, kv[0][1])):
        mse_m, mse_s = _mean_std([r["test"]["mse"] for r in runs])
        mae_m, mae_s = _mean_std([r["test"]["mae"] for r in runs])
        table.append({
            "dataset": dataset, "pred_len": horizon, "seeds": sorted(r["seed"] for r in runs),
            "mse": mse_m, "mse_std": mse_s, "mae": mae_m, "mae_std": mae_s,
            "repeat_last_mse": runs[0]["repeat_last"]["mse"], "repeat_last_mae": runs[0]["repeat_last"]["mae"],
            "wall_s": [round(r["wall_s"], 1) for r in runs], "epochs": [r["epochs_run"] for r in runs],
            "best_epoch": [r["best_epoch"] for r in runs], "params": runs[0]["params"],
            "max_epochs": sorted({int(r.get("config", {}).get("train", {}).get("epochs", 0)) for r in runs}),
        })
    averages = {}
    for dataset in {row["dataset"] for row in table}:
        mine = [row for row in table if row["dataset"] == dataset]
        if {row["pred_len"] for row in mine} == set(HORIZONS):
            averages[dataset] = {"mse": statistics.fmean(r["mse"] for r in mine), "mae": statistics.fmean(r["mae"] for r in mine)}
    ett = [d for d in ("ETTh1", "ETTh2", "ETTm1", "ETTm2") if d in averages]
    if len(ett) == 4:
        averages["ETT"] = {k: statistics.fmean(averages[d][k] for d in ett) for k in ("mse", "mae")}
    return {"rows": table, "averages": averages, "reference": PAPER}


def _cap_note(row: dict[str, Any]) -> str:
    caps = [c for c in row.get("max_epochs", []) if 0 < c < 100]
    return f", cap {'/'.join(map(str, caps))}" if caps else ""


def render_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| dataset | horizon | seeds | test MSE | test MAE | repeat-last MSE / MAE | epochs (best) | wall time per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        many = len(r["seeds"]) > 1

        def std(v: float, many: bool = many) -> str:
            return f" ± {v:.4f}" if many else ""

        lines.append(
            f"| {r['dataset']} | {r['pred_len']} | {len(r['seeds'])} | {r['mse']:.4f}{std(r['mse_std'])} | "
            f"{r['mae']:.4f}{std(r['mae_std'])} | {r['repeat_last_mse']:.3f} / {r['repeat_last_mae']:.3f} | "
            f"{', '.join(f'{e} ({b})' for e, b in zip(r['epochs'], r['best_epoch']))}{_cap_note(r)} | "
            f"{', '.join(f'{w / 60:.1f} min' for w in r['wall_s'])} |"
        )
    if any(_cap_note(r) for r in summary["rows"]):
        lines += ["", "'cap N': train.epochs was lowered to N (the authors' recipe allows 100 epochs with early "
                  "stopping); 'epochs (best)' = epochs run and the validation-selected epoch."]
    paper = summary["reference"]["ffnet_table7_avg"]
    if summary["averages"]:
        lines += ["", "| average over the 4 horizons | ours MSE | ours MAE | paper (Table 7) MSE | paper MAE |", "|---|---|---|---|---|"]
        for name, avg in sorted(summary["averages"].items()):
            ref = paper.get(name)
            ref_txt = f"{ref[0]:.3f} | {ref[1]:.3f}" if ref else "– | –"
            lines.append(f"| {name} | {avg['mse']:.4f} | {avg['mae']:.4f} | {ref_txt} |")
    return "\n".join(lines) + "\n"


def _write_table(results: list[dict[str, Any]], table: Path) -> None:
    summary = summarize(results)
    write_json(table.with_suffix(".json"), summary)
    table.with_suffix(".md").write_text(render_markdown(summary))


def _load_result(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FFNetError(f"{path}: unreadable results file ({exc}); delete it to re-run the job") from None


def claim_job(job_dir: Path) -> Path | None:
    """Claim ``job_dir`` for this process with an exclusive lock file; ``None`` if a live process holds it.

    This lets several ``ffnet-ts-reproduce`` processes (one per core, or per machine on a shared disk) work
    through the same plan and ``--output``: each job is trained by exactly one of them. A lock left by a process
    that died (same host, pid gone) is taken over, and the job resumes from its ``last.pth``.
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    lock = job_dir / "reproduce.lock"
    host = socket.gethostname()
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner_host, owner_pid = lock.read_text().split()
            except (OSError, ValueError):
                return None  # being written right now
            if owner_host != host or _alive(int(owner_pid)):
                return None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{host} {os.getpid()}\n")
        return lock
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_results(root: Path) -> list[dict[str, Any]]:
    """Every finished job under ``root`` (its ``*/results.json``), e.g. from several reproduce processes run in
    parallel on disjoint job lists."""
    return [_load_result(path) for path in sorted(root.glob("*/results.json"))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ffnet-ts-reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", choices=sorted(PLANS), default=None, help="a predefined job list")
    parser.add_argument("--datasets", nargs="+", default=["ETTh1"])
    parser.add_argument("--horizons", nargs="+", type=int, default=list(HORIZONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[2021])
    parser.add_argument("--output", default="runs/ts_repro", help="one run folder per job under here")
    parser.add_argument("--table", default=None, help="table path without suffix (.md and .json are written)")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and exit")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: write the table from every finished job under --output (after parallel runs)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="applied to every job's recipe")
    args = parser.parse_args(argv)
    for d in args.datasets:
        if d not in RECIPES:
            raise FFNetError(f"--datasets: no recipe for {d!r}; known: {', '.join(RECIPES)}")
    if args.plan:
        jobs = plan_paper_jobs(args.plan, args.horizons)
    else:
        jobs = plan_jobs(args.datasets, args.horizons, args.seeds)
    root = Path(args.output)
    table = Path(args.table) if args.table else root / "table"
    if args.collect:
        results = collect_results(root)
        if not results:
            raise FFNetError(f"--collect: no finished job (*/results.json) under {root}")
        _write_table(results, table)
        print(render_markdown(summarize(results)), end="", flush=True)
        return 0
    if args.dry_run:
        for d, h, s in jobs:
            print(f"{d} pred_len={h} seed={s} -> {_job_dir(root, d, h, s)}")
        return 0
    from ffnet_timeseries.engine import train  # heavy import only when running

    results: list[dict[str, Any]] = []
    for i, (dataset, horizon, seed) in enumerate(jobs, 1):
        job_dir = _job_dir(root, dataset, horizon, seed)
        done = job_dir / "results.json"
        if done.exists():
            results.append(_load_result(done))
            print(f"[{i}/{len(jobs)}] {dataset}-{horizon} seed {seed}: already done", flush=True)
            _write_table(results, table)
            continue
        cfg = recipe_config(dataset, horizon, seed=seed, output_dir=str(job_dir))
        if args.overrides:
            merged = apply_overrides(config_to_dict(cfg), args.overrides, cls=TSConfig, source="command line")
            cfg = config_from_dict(TSConfig, merged, source="command line")
        cfg.output_dir = str(job_dir)
        lock = claim_job(job_dir)
        if lock is None:
            print(f"[{i}/{len(jobs)}] {dataset}-{horizon} seed {seed}: claimed by another process, skipped", flush=True)
            continue
        try:
            if done.exists():  # finished by another process between the check above and the claim
                results.append(_load_result(done))
                continue
            last = job_dir / "last.pth"
            t0 = time.time()
            print(f"[{i}/{len(jobs)}] {dataset}-{horizon} seed {seed}: {'resuming' if last.exists() else 'training'}",
                  flush=True)
            result = train(cfg, resume=str(last) if last.exists() else None, quiet=False)
        finally:
            lock.unlink(missing_ok=True)
        results.append(result.to_dict())
        print(f"[{i}/{len(jobs)}] {dataset}-{horizon} seed {seed}: test mse {result.test['mse']:.4f} "
              f"mae {result.test['mae']:.4f} ({(time.time() - t0) / 60:.1f} min)", flush=True)
        _write_table(results, table)
    # the plan's table covers every job finished so far, by this process or by others sharing --output
    results = [_load_result(p) for p in (_job_dir(root, *job) / "results.json" for job in jobs) if p.exists()]
    if results:
        _write_table(results, table)
    print(render_markdown(summarize(results)) if results else "no finished jobs", flush=True)
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
