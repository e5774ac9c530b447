"""``ffnet-ts-reproduce``: run a list of (dataset, horizon, seed) jobs with the authors' recipes and write a
paper-style table (mean +- std over seeds) as Markdown + JSON.

Restartable: a job whose ``results.json`` exists is read, not re-run; a job with a ``last.pth`` resumes exactly.
The table is rewritten after every job, so an interrupted reproduction still documents what finished.

    ffnet-ts-reproduce --plan paper --output runs/ts_repro --table docs/timeseries_results run.threads=2
    ffnet-ts-reproduce --datasets ETTh1 --horizons 96 192 --seeds 2021 --output runs/x --table runs/x/table
    ffnet-ts-reproduce --output runs/x --collect     # table of everything finished under runs/x
    ffnet-ts-reproduce --output runs/x --archive docs/timeseries_runs --collect --table docs/timeseries_results

``--archive DIR`` keeps one small JSON per finished run (metrics, history, resolved config) in a folder that is
committed, so results add up across sessions and machines: every job that finishes is copied there, and the
table is built from the archive plus ``--output``. Runs of one (dataset, horizon) row must share their config up
to the seed; an archive file with ``rows`` (a table whose per-run files were not kept) contributes its rows'
seeds through their mean/std, combined exactly with the runs of other seeds. Configs are compared in today's
shape: an archived run's config of the old shape is read through :func:`ffnet_timeseries.config.upgrade_config`
and the config class (so a key added since reads as its default, e.g. ``run.precision: fp32``).

Parallel jobs: start the same command once per core (with ``run.threads=1``); the processes share the plan
through lock files in the job folders (each job is trained once) and each rewrites the table when it finishes.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ffnet_timeseries.config import TSConfig, upgrade_config
from ffnet_timeseries.recipes import HORIZONS, RECIPES, recipe_config
from metamixer.train.cli import build_parser
from metamixer.train.config import ConfigError, apply_overrides, config_from_dict, config_to_dict
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_json

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


#: config fields that may differ between the seeds of one table row (they do not change what is trained)
_RUN_ONLY_FIELDS = {("run", "seed"), ("run", "threads"), ("run", "device"), ("run", "output_dir"),
                    ("run", "max_time"), ("run", "max_steps"), ("train", "progress"), ("train", "log_every"),
                    ("train", "save_every")}


def normalized_config(config: dict[str, Any], source: str = "results") -> dict[str, Any]:
    """A run's config (today's shape or the old one, whole or partial) as the full config of today's shape."""
    try:
        return config_to_dict(config_from_dict(TSConfig, upgrade_config(config), source=source))
    except (ConfigError, FFNetError) as exc:
        raise FFNetError(f"{source}: config not readable as a TSConfig: {exc}") from None


def _config_differences(a: dict[str, Any], b: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        path = (*prefix, key)
        if path in _RUN_ONLY_FIELDS:
            continue
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _config_differences(x, y, path)
        elif x != y:
            out.append(f"{'.'.join(path)} ({x!r} vs {y!r})")
    return out


def _check_same_recipe(dataset: str, horizon: int, runs: list[dict[str, Any]]) -> None:
    configs = [(r["seed"], normalized_config(r["config"], f"{dataset}-{horizon} seed {r['seed']}"))
               for r in runs if r.get("config")]
    for seed, config in configs[1:]:
        diff = _config_differences(configs[0][1], config)
        if diff:
            raise FFNetError(
                f"{dataset}-{horizon}: seeds {configs[0][0]} and {seed} were trained with different configs "
                f"({', '.join(diff)}); one table row averages one recipe over seeds — keep them apart"
            )


def _pooled(prior: dict[str, Any] | None, key: str, values: list[float]) -> tuple[float, float]:
    """Mean and sample std over ``values`` plus the seeds a prior row summarizes by its mean/std (exact)."""
    n, total, squares = len(values), sum(values), sum(v * v for v in values)
    if prior is not None:
        k, mean, std = len(prior["seeds"]), prior[key], prior[f"{key}_std"]
        n, total, squares = n + k, total + k * mean, squares + (k - 1) * std * std + k * mean * mean
    mean = total / n
    var = (squares - n * mean * mean) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(max(var, 0.0))


def summarize(results: list[dict[str, Any]], prior_rows: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Group finished runs by (dataset, horizon): mean/std of test MSE/MAE, wall time, epochs; plus averages.

    ``prior_rows`` are rows of an earlier table whose per-run files were not kept: a row is kept as it is, or
    pooled with this table's runs of the same (dataset, horizon) if their seeds are disjoint."""
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        rows.setdefault((r["dataset"], int(r["pred_len"])), []).append(r)
    priors = {(p["dataset"], int(p["pred_len"])): p for p in prior_rows}
    order = list(RECIPES)
    table = []
    for dataset, horizon in sorted(set(rows) | set(priors), key=lambda k: (order.index(k[0]) if k[0] in order else 99, k[1])):
        runs, prior = rows.get((dataset, horizon), []), priors.get((dataset, horizon))
        seeds = [r["seed"] for r in runs]
        if len(set(seeds)) != len(seeds):
            raise FFNetError(f"{dataset}-{horizon}: seed {max(seeds, key=seeds.count)} was run twice (in --output and in the archive?)")
        if prior is not None and set(prior["seeds"]) & set(seeds):
            raise FFNetError(
                f"{dataset}-{horizon}: seeds {sorted(set(prior['seeds']) & set(seeds))} are both in an archived table "
                "and in per-run results; remove one of them"
            )
        _check_same_recipe(dataset, horizon, runs)
        mse_m, mse_s = _pooled(prior, "mse", [r["test"]["mse"] for r in runs])
        mae_m, mae_s = _pooled(prior, "mae", [r["test"]["mae"] for r in runs])
        first = runs[0] if runs else None
        caps = {int(r.get("config", {}).get("train", {}).get("epochs") or 0) for r in runs}
        table.append({
            "dataset": dataset, "pred_len": horizon, "seeds": sorted(seeds + list(prior["seeds"] if prior else [])),
            "mse": mse_m, "mse_std": mse_s, "mae": mae_m, "mae_std": mae_s,
            "repeat_last_mse": first["repeat_last"]["mse"] if first else prior["repeat_last_mse"],
            "repeat_last_mae": first["repeat_last"]["mae"] if first else prior["repeat_last_mae"],
            "wall_s": (prior["wall_s"] if prior else []) + [round(r["wall_s"], 1) for r in runs],
            "epochs": (prior["epochs"] if prior else []) + [r["epochs_run"] for r in runs],
            "best_epoch": (prior["best_epoch"] if prior else []) + [r["best_epoch"] for r in runs],
            "params": first["params"] if first else prior["params"],
            "max_epochs": sorted(caps | set(prior.get("max_epochs", []) if prior else [])),
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


def _write_table(results: list[dict[str, Any]], table: Path, prior_rows: Sequence[dict[str, Any]] = ()) -> None:
    summary = summarize(results, prior_rows)
    write_json(table.with_suffix(".json"), summary)
    table.with_suffix(".md").write_text(render_markdown(summary))


def _archive_name(result: dict[str, Any]) -> str:
    return f"{result['dataset']}_{int(result['pred_len'])}_s{int(result['seed'])}.json"


def _archived_path(archive: Path, dataset: str, horizon: int, seed: int) -> Path:
    return archive / _archive_name({"dataset": dataset, "pred_len": horizon, "seed": seed})


def archive_result(result: dict[str, Any], archive: Path) -> Path:
    """Copy one finished run's results (metrics, history, resolved config) to ``archive/<dataset>_<h>_s<seed>.json``."""
    return write_json(archive / _archive_name(result), result)


def load_archive(archive: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The per-run results and the aggregated prior rows (files with ``rows``) kept in ``archive``."""
    runs, rows = [], []
    for path in sorted(archive.glob("*.json")):
        data = _load_result(path)
        if "rows" in data:
            rows += data["rows"]
        elif {"dataset", "pred_len", "seed", "test"} <= set(data):
            runs.append(data)
        else:
            raise FFNetError(f"{path}: neither a run's results (dataset, pred_len, seed, test) nor a table (rows)")
    return runs, rows


def _gather(root: Path, archive: Path | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs under ``root`` (finished jobs) merged with the archive's (a run in both counts once: ``root``'s)."""
    results = collect_results(root)
    if archive is None:
        return results, []
    archived, rows = load_archive(archive)
    here = {_archive_name(r) for r in results}
    return results + [r for r in archived if _archive_name(r) not in here], rows


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
            owner = _lock_owner(lock)
            if owner is None or _owner_alive(*owner):
                return None  # unreadable = being written right now
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{host} {os.getpid()}\n")
        return lock
    return None


def _lock_owner(lock: Path) -> tuple[str, int] | None:
    """``(host, pid)`` written in a job's lock file; ``None`` if there is none or it is being written."""
    try:
        host, pid = lock.read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _owner_alive(host: str, pid: int) -> bool:
    """A lock's owner counts as alive unless it is on this host and its pid is gone (other hosts can't be checked)."""
    return host != socket.gethostname() or _alive(pid)


def _lock_holder(lock: Path) -> str | None:
    """``"host pid N"`` of the live process holding ``lock``, else ``None`` (for ``--dry-run``)."""
    owner = _lock_owner(lock)
    return f"{owner[0]} pid {owner[1]}" if owner is not None and _owner_alive(*owner) else None


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


def _tabled_seeds(prior_rows: list[dict[str, Any]]) -> set[tuple[str, int, int]]:
    return {(r["dataset"], int(r["pred_len"]), s) for r in prior_rows for s in r["seeds"]}


def job_state(root: Path, archive: Path | None, tabled: set[tuple[str, int, int]], dataset: str, horizon: int,
              seed: int) -> str:
    """What running this job would do, so that a session can plan what it still has to train (``--dry-run``):
    ``done (…)`` when a result exists, ``resumes after epoch N`` for an interrupted run, ``new`` otherwise."""
    if (dataset, horizon, seed) in tabled:
        return "done (in an archived table)"
    if archive is not None and _archived_path(archive, dataset, horizon, seed).exists():
        return "done (archived)"
    job_dir = _job_dir(root, dataset, horizon, seed)
    if (job_dir / "results.json").exists():
        return "done"
    holder = _lock_holder(job_dir / "reproduce.lock")
    if holder is not None:
        return f"running ({holder})"
    last = job_dir / "last.pth"
    if last.exists():
        from metamixer.train.checkpoint import (
            load_checkpoint,  # only here: the plan listing itself needs no torch
        )

        try:
            epoch = load_checkpoint(last).get("epoch")
        except FFNetError:  # an unreadable checkpoint is reported by the trainer when the job runs
            epoch = None
        return f"resumes after epoch {epoch}" if epoch is not None else "resumes"
    return "new"


def _job_config(dataset: str, horizon: int, seed: int, job_dir: Path, overrides: Sequence[str]) -> TSConfig:
    cfg = recipe_config(dataset, horizon, seed=seed, output_dir=str(job_dir))
    if overrides:
        merged = apply_overrides(config_to_dict(cfg), list(overrides), cls=TSConfig, source="command line")
        cfg = config_from_dict(TSConfig, merged, source="command line")
    cfg.run.output_dir = str(job_dir)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("ffnet-ts-reproduce", __doc__.split("\n\n")[0], config=False)  # overrides: every job's recipe
    parser.add_argument("--plan", choices=sorted(PLANS), default=None, help="a predefined job list")
    parser.add_argument("--datasets", nargs="+", default=["ETTh1"])
    parser.add_argument("--horizons", nargs="+", type=int, default=list(HORIZONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[2021])
    parser.add_argument("--output", default="runs/ts_repro", help="one run folder per job under here")
    parser.add_argument("--table", default=None, help="table path without suffix (.md and .json are written)")
    parser.add_argument("--archive", default=None,
                        help="folder of per-run result files (committed): finished jobs are copied there and read back")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and exit")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: write the table from every finished job under --output (after parallel runs)")
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
    archive = Path(args.archive) if args.archive else None
    if args.collect:
        results, prior = _gather(root, archive)
        if not results and not prior:
            raise FFNetError(f"--collect: no finished job (*/results.json) under {root}" + (f" nor in {archive}" if archive else ""))
        if archive is not None:
            for r in collect_results(root):
                archive_result(r, archive)
        _write_table(results, table, prior)
        print(render_markdown(summarize(results, prior)), end="", flush=True)
        return 0
    # every job's recipe + overrides is built now, so a mistyped override stops here, not hours into the list
    configs = {(d, h, s): _job_config(d, h, s, _job_dir(root, d, h, s), args.overrides) for d, h, s in jobs}
    if args.dry_run:
        tabled = _tabled_seeds(load_archive(archive)[1]) if archive else set()
        states = [job_state(root, archive, tabled, *job) for job in jobs]
        for (d, h, s), state in zip(jobs, states):
            print(f"{d} pred_len={h} seed={s} -> {_job_dir(root, d, h, s)}  [{state}]")
        left = sum(not state.startswith("done") for state in states)
        print(f"{left} of {len(jobs)} jobs left to train", flush=True)
        return 0
    from ffnet_timeseries.engine import train  # heavy import only when running
    from metamixer.train.allocator import keep_freed_memory
    from metamixer.train.device import resolve_device

    if any(resolve_device(cfg.run.device).type == "cpu" for cfg in configs.values()):
        keep_freed_memory()  # ~2x faster CPU steps: no page faults on every step's large activations

    results: list[dict[str, Any]] = []
    # seeds that only an archived table holds (their per-run files are gone): done, counted through the table
    prior_rows = load_archive(archive)[1] if archive else []
    tabled = _tabled_seeds(prior_rows)
    for i, (dataset, horizon, seed) in enumerate(jobs, 1):
        job_dir = _job_dir(root, dataset, horizon, seed)
        done = job_dir / "results.json"
        if (dataset, horizon, seed) in tabled:
            print(f"[{i}/{len(jobs)}] {dataset}-{horizon} seed {seed}: already done (in an archived table)", flush=True)
            continue
        archived = _archived_path(archive, dataset, horizon, seed) if archive else None
        if done.exists() or (archived is not None and archived.exists()):
            results.append(_load_result(done if done.exists() else archived))
            if archived is not None and not archived.exists():
                archive_result(results[-1], archive)
            print(f"[{i}/{len(jobs)}] {dataset}-{horizon} seed {seed}: already done", flush=True)
            _write_table(results, table, prior_rows)
            continue
        cfg = configs[(dataset, horizon, seed)]
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
        results.append(_load_result(done))
        if archive is not None:
            archive_result(results[-1], archive)
        print(f"[{i}/{len(jobs)}] {dataset}-{horizon} seed {seed}: test mse {result.test['mse']:.4f} "
              f"mae {result.test['mae']:.4f} ({(time.time() - t0) / 60:.1f} min)", flush=True)
        _write_table(results, table, prior_rows)
    # the plan's table covers every job finished so far, by this process or by others sharing --output
    finished = [_job_dir(root, *job) / "results.json" for job in jobs]
    if archive is not None:
        finished = [p if p.exists() else _archived_path(archive, d, h, sd)
                    for p, (d, h, sd) in zip(finished, jobs)]
    results = [_load_result(p) for p in finished if p.exists()]
    if results or prior_rows:
        _write_table(results, table, prior_rows)
    print(render_markdown(summarize(results, prior_rows)) if results or prior_rows else "no finished jobs", flush=True)
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
