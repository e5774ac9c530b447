"""ffnet-ts-train / ffnet-ts-eval in a fresh interpreter with the forecasting-CSV corpus: every defect gives
exit 2 and one line naming the file and the row, no traceback, and no run folder is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus import assert_one_line_error, csv_corpus, run_cli

#: corpus file -> words its message must contain
DEFECTS = {
    "duplicate_timestamps.csv": ("duplicate timestamp", "data row 51"),
    "unsorted_timestamps.csv": ("increasing time order", "data.sort_timestamps"),
    "gap.csv": ("not evenly spaced", "data row 101"),
    "missing_column.csv": ("missing target column 'OT'",),
    "not_numeric.csv": ("column 'OT'", "data row 21"),
    "bad_dates.csv": ("'yesterday'", "data row 11"),
    "header_only.csv": ("too few rows",),
    "empty.csv": ("",),
}
SMALL = ["data.dataset=custom", "data.seq_len=24", "data.pred_len=12", "train.batch_size=8", "run.max_steps=2"]


@pytest.fixture(scope="module")
def csvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return csv_corpus(tmp_path_factory.mktemp("csv"))


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_csv_defects_give_one_line_and_leave_no_run_folder(name: str, csvs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r"
    result = run_cli("ffnet-ts-train", "cpu_ETTh1_96", f"data.path={csvs[name]}", f"run.output_dir={run}", *SMALL)
    assert_one_line_error(result, str(csvs[name]), *DEFECTS[name])
    assert not (tmp_path / "runs").exists()


def test_semicolon_csv_trains_and_bad_eval_options_are_refused(csvs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli("ffnet-ts-train", "cpu_ETTh1_96", f"data.path={csvs['semicolon.csv']}", f"run.output_dir={run}",
                     *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "last.pth").exists()
    bad = run_cli("ffnet-ts-eval", "--checkpoint", str(run / "last.pth"), "--windows", "-1")
    assert_one_line_error(bad, "--windows")
    wrong_split = run_cli("ffnet-ts-eval", "--checkpoint", str(run / "last.pth"), "--split", "holdout")
    assert_one_line_error(wrong_split, "--split", "invalid choice")
    no_plot = run_cli("ffnet-ts-eval", "--checkpoint", str(run / "last.pth"), "--windows", "0")
    assert no_plot.returncode == 0, no_plot.stderr[-2000:]
