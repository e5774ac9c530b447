"""The reproduction archive: per-run result files that add up across sessions, pooled exactly with older tables."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from ffnet_timeseries.reproduce import load_archive, render_markdown, summarize
from ffnet_timeseries.reproduce import main as reproduce_main
from metamixer.train.errors import FFNetError


def _run(seed: int, mse: float, dataset: str = "ETTm1", horizon: int = 96, **train: object) -> dict:
    return {"dataset": dataset, "pred_len": horizon, "seed": seed, "test": {"mse": mse, "mae": mse / 2},
            "repeat_last": {"mse": 1.3, "mae": 0.7}, "wall_s": 60.0, "epochs_run": 25, "best_epoch": 20,
            "params": 821664, "best_val_mse": 0.5,
            "config": {"train": {"epochs": 25, "seed": seed, "lr": 1e-4, **train}, "output_dir": f"runs/{seed}"}}


def test_prior_rows_pool_exactly_with_new_seeds() -> None:
    values = [0.381, 0.386, 0.392]
    prior = summarize([_run(2021, values[0]), _run(2022, values[1])])["rows"][0]
    pooled = summarize([_run(2023, values[2])], prior_rows=[prior])["rows"][0]
    assert pooled["seeds"] == [2021, 2022, 2023]
    assert pooled["mse"] == pytest.approx(np.mean(values), abs=1e-12)
    assert pooled["mse_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert pooled["mae_std"] == pytest.approx(np.std(np.array(values) / 2, ddof=1), abs=1e-12)
    assert pooled["wall_s"] == [60.0, 60.0, 60.0] and pooled["max_epochs"] == [25]
    only_prior = summarize([], prior_rows=[prior])["rows"][0]
    assert only_prior["mse"] == pytest.approx(prior["mse"]) and only_prior["seeds"] == [2021, 2022]


def test_a_row_never_mixes_recipes_or_counts_a_seed_twice() -> None:
    with pytest.raises(FFNetError, match=r"ETTm1-96: seeds 2021 and 2022 .*optim\.lr \(0\.0001 vs 0\.001\)"):
        summarize([_run(2021, 0.4), _run(2022, 0.4, lr=1e-3)])
    prior = summarize([_run(2021, 0.4)])["rows"][0]
    with pytest.raises(FFNetError, match=r"seeds \[2021\] are both in an archived table"):
        summarize([_run(2021, 0.4)], prior_rows=[prior])
    with pytest.raises(FFNetError, match="seed 2021 was run twice"):
        summarize([_run(2021, 0.4), _run(2021, 0.41)])
    # a field added later (precision) reads as its default in configs archived before it existed; old-shape
    # configs compare in today's keys (train.precision -> run.precision), also against today's shape
    assert summarize([_run(2021, 0.4), _run(2022, 0.42, precision="fp32")])["rows"][0]["seeds"] == [2021, 2022]
    with pytest.raises(FFNetError, match=r"run\.precision \('fp32' vs 'bf16'\)"):
        summarize([_run(2021, 0.4), _run(2022, 0.42, precision="bf16")])
    today = _run(2022, 0.42)
    today["config"] = {"run": {"seed": 2022, "output_dir": "elsewhere"}, "optim": {"lr": 1e-4}, "train": {"epochs": 25}}
    assert summarize([_run(2021, 0.4), today])["rows"][0]["seeds"] == [2021, 2022]
    today["config"]["optim"]["schedule"] = "type3"
    with pytest.raises(FFNetError, match=r"optim\.schedule \('official_type3' vs 'type3'\)"):
        summarize([_run(2021, 0.4), today])


def test_collect_archives_runs_and_reads_them_back_from_a_fresh_output(tmp_path: Path) -> None:
    out, archive, fresh = tmp_path / "runs", tmp_path / "archive", tmp_path / "fresh"
    (out / "ETTm1_96_s2021").mkdir(parents=True)
    (out / "ETTm1_96_s2021" / "results.json").write_text(json.dumps(_run(2021, 0.33)))
    archive.mkdir()
    prior = summarize([_run(2021, 0.30, dataset="ETTh1"), _run(2022, 0.32, dataset="ETTh1")])
    (archive / "table_earlier.json").write_text(json.dumps({"rows": prior["rows"]}))
    assert reproduce_main(["--output", str(out), "--archive", str(archive), "--collect"]) == 0
    assert json.loads((archive / "ETTm1_96_s2021.json").read_text())["test"]["mse"] == 0.33
    runs, rows = load_archive(archive)
    assert [r["dataset"] for r in runs] == ["ETTm1"] and [r["dataset"] for r in rows] == ["ETTh1"]
    fresh.mkdir()
    assert reproduce_main(["--output", str(fresh), "--archive", str(archive), "--collect"]) == 0
    md = (fresh / "table.md").read_text()
    assert "| ETTh1 | 96 | 2 | 0.3100 ± 0.0141 |" in md and "| ETTm1 | 96 | 1 | 0.3300 |" in md
    (archive / "junk.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(FFNetError, match="junk.json: neither a run's results"):
        load_archive(archive)


def test_a_job_in_the_archive_is_not_trained_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "ETTm1_96_s2021.json").write_text(json.dumps(_run(2021, 0.33)))
    tabled = summarize([_run(2022, 0.31)])  # seed 2022 only in an older table
    (archive / "table_earlier.json").write_text(json.dumps({"rows": tabled["rows"]}))
    code = reproduce_main(["--datasets", "ETTm1", "--horizons", "96", "--seeds", "2021", "2022",
                           "--output", str(tmp_path / "out"), "--archive", str(archive)])
    assert code == 0
    out = capsys.readouterr().out
    assert "ETTm1-96 seed 2021: already done" in out and "ETTm1-96 seed 2022: already done (in an archived table)" in out
    assert not (tmp_path / "out" / "ETTm1_96_s2021").exists()  # nothing was trained
    assert "| ETTm1 | 96 | 2 | 0.3200 ± 0.0141 |" in (tmp_path / "out" / "table.md").read_text()  # pooled


def test_dry_run_tells_what_each_job_would_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from metamixer.train.checkpoint import save_checkpoint

    out, archive = tmp_path / "runs", tmp_path / "archive"
    archive.mkdir()
    (archive / "ETTm1_96_s2021.json").write_text(json.dumps(_run(2021, 0.33)))
    prior = summarize([_run(2021, 0.45, dataset="ETTm1", horizon=192)])
    (archive / "table_earlier.json").write_text(json.dumps({"rows": prior["rows"]}))
    (out / "ETTm1_336_s2021").mkdir(parents=True)
    (out / "ETTm1_336_s2021" / "results.json").write_text(json.dumps(_run(2021, 0.4, horizon=336)))
    (out / "ETTm1_720_s2021").mkdir()
    save_checkpoint(out / "ETTm1_720_s2021" / "last.pth", model=torch.nn.Linear(2, 2), epoch=7)
    (out / "ETTm1_96_s2022").mkdir()
    (out / "ETTm1_96_s2022" / "last.pth").write_bytes(b"truncated")
    (out / "ETTm1_192_s2022").mkdir()
    (out / "ETTm1_192_s2022" / "reproduce.lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    (out / "ETTm1_336_s2022").mkdir()  # a lock whose process is gone is not "running"
    (out / "ETTm1_336_s2022" / "reproduce.lock").write_text(f"{socket.gethostname()} {2**22 + 12345}\n")
    argv = ["--datasets", "ETTm1", "--seeds", "2021", "2022", "--output", str(out), "--archive", str(archive), "--dry-run"]
    assert reproduce_main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    states = {line.split(" -> ")[0]: line.rsplit("[", 1)[1].rstrip("]") for line in lines[:-1]}
    assert states == {
        "ETTm1 pred_len=96 seed=2021": "done (archived)",
        "ETTm1 pred_len=192 seed=2021": "done (in an archived table)",
        "ETTm1 pred_len=336 seed=2021": "done",
        "ETTm1 pred_len=720 seed=2021": "resumes after epoch 7",
        "ETTm1 pred_len=96 seed=2022": "resumes",
        "ETTm1 pred_len=192 seed=2022": f"running ({socket.gethostname()} pid {os.getpid()})",
        "ETTm1 pred_len=336 seed=2022": "new",
        "ETTm1 pred_len=720 seed=2022": "new",
    }
    assert lines[-1] == "5 of 8 jobs left to train"
    # an override may follow the job list (as in `ffnet-ts-reproduce ... --seeds 2021 run.precision=bf16`)
    assert reproduce_main([*argv, "run.precision=bf16"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "5 of 8 jobs left to train"
    with pytest.raises(FFNetError, match="run.precison"):
        reproduce_main([*argv, "run.precison=bf16"])


def test_committed_results_table_is_the_archive_summarized() -> None:
    """docs/timeseries_results.{json,md} must be what the committed per-run archive gives (no hand edits, no
    stale table after a new run was archived), and every archived run must obey the one-recipe-per-row rule."""
    docs = Path(__file__).resolve().parents[3] / "docs"
    runs, rows = load_archive(docs / "timeseries_runs")
    expected = summarize(runs, rows)
    committed = json.loads((docs / "timeseries_results.json").read_text())
    key = lambda r: (r["dataset"], r["pred_len"])  # noqa: E731
    assert [key(r) for r in committed["rows"]] == [key(r) for r in expected["rows"]]
    for got, want in zip(committed["rows"], expected["rows"]):
        assert got["seeds"] == want["seeds"]
        for metric in ("mse", "mae", "mse_std", "mae_std"):
            assert got[metric] == pytest.approx(want[metric], rel=1e-9, abs=1e-12), (key(got), metric)
    assert (docs / "timeseries_results.md").read_text() == render_markdown(expected)
