"""Forecasting CSV checks: time order, duplicates, even spacing, delimiters, the shipped benchmarks, few steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffnet_timeseries.builders import build_data
from ffnet_timeseries.config import (
    DataConfig,
    ModelConfig,
    TSConfig,
    TSOptimConfig,
    TSRunConfig,
    TSTrainConfig,
)
from ffnet_timeseries.data import DATASETS, few_steps_advice, load_forecast_data
from ffnet_timeseries.data.dataset import read_series_csv
from metamixer.train.config import load_config
from metamixer.train.datadir import data_root
from metamixer.train.errors import FFNetError

HOURS = pd.date_range("2021-01-01", periods=60, freq="h").astype(str).tolist()


def _write(path: Path, dates: list, sep: str = ",") -> Path:
    """A CSV whose value columns encode the data row (row r: a = r, OT = 10 r), so any reordering is visible."""
    rows = np.arange(1, len(dates) + 1, dtype=float)
    pd.DataFrame({"date": dates, "a": rows, "OT": 10 * rows}).to_csv(path, index=False, sep=sep)
    return path


def _error(path: Path, **options) -> str:
    with pytest.raises(FFNetError) as info:
        read_series_csv(path, **options)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_duplicate_timestamp_names_file_column_row_and_value_and_has_no_option(tmp_path: Path) -> None:
    csv = _write(tmp_path / "dup.csv", HOURS[:10] + [HOURS[9]] + HOURS[10:])
    for options in ({}, {"sort_timestamps": True}, {"allow_irregular": True}):
        message = _error(csv, **options)
        assert "column 'date' has a duplicate timestamp at data row 11 ('2021-01-01 09:00:00')" in message
        assert "the same as data row 10" in message and "no option accepts duplicates" in message


def test_out_of_order_rows_error_or_are_sorted_with_the_option(tmp_path: Path) -> None:
    shuffled = HOURS[:10] + [HOURS[12]] + HOURS[10:12] + HOURS[13:]
    csv = _write(tmp_path / "unsorted.csv", shuffled)
    message = _error(csv)
    assert "column 'date' is not in increasing time order: data row 12 ('2021-01-01 10:00:00') is earlier than " \
           "data row 11 ('2021-01-01 12:00:00')" in message
    assert "data.sort_timestamps=true" in message and "descending" not in message
    table = read_series_csv(csv, sort_timestamps=True)
    assert table.values[:, 0].tolist() == [*range(1, 11), 12, 13, 11, *range(14, 61)]  # file rows in time order
    assert np.array_equal(table.values[:, 1], 10 * table.values[:, 0]) and table.columns == ["a", "OT"]
    assert table.notes == [f"{csv}: sorted by 'date' (data.sort_timestamps=true): 3 rows moved"]
    newest_first = _error(_write(tmp_path / "desc.csv", HOURS[::-1]))
    assert "data row 2 ('2021-01-03 10:00:00') is earlier than data row 1" in newest_first
    assert "(the whole file is in descending order, newest first)" in newest_first
    assert read_series_csv(tmp_path / "desc.csv", sort_timestamps=True).values[0, 0] == 60


def test_a_gap_errors_with_the_expected_step_or_is_accepted_with_the_option(tmp_path: Path) -> None:
    csv = _write(tmp_path / "gap.csv", HOURS[:20] + HOURS[23:])
    message = _error(csv)
    assert "column 'date' is not evenly spaced: data row 21 ('2021-01-01 23:00:00') comes 4h after data row 20 " \
           "('2021-01-01 19:00:00'), but the expected step is 1h" in message
    assert "1 of 56 steps differs" in message and "data.allow_irregular=true" in message
    table = read_series_csv(csv, allow_irregular=True)
    assert len(table.values) == 57 and "accepted: data.allow_irregular=true" in table.notes[0]
    ten_min = pd.date_range("2020-05-29 09:00", periods=30, freq="10min").astype(str).tolist()
    assert "comes 1h 40min after" in _error(_write(tmp_path / "w.csv", ten_min[:10] + ten_min[19:]))
    index_gap = _error(_write(tmp_path / "i.csv", [*range(0, 40, 2), 41, *range(42, 80, 2)]))
    assert "data row 21 (41) comes 3 after data row 20 (38), but the expected step is 2" in index_gap


@pytest.mark.parametrize(
    "dates",
    [
        pd.date_range("2002-01-01", periods=40, freq="7D").astype(str).tolist(),  # weekly (ILI)
        pd.date_range("2015-01-01", periods=40, freq="MS").astype(str).tolist(),  # monthly: 28-31 days a step
        pd.date_range("2015-01-31", periods=40, freq="ME").astype(str).tolist(),  # month ends
        pd.date_range("2000-01-01", periods=40, freq="QS").astype(str).tolist(),  # quarterly
        pd.date_range("1990-01-01", periods=40, freq="YS").astype(str).tolist(),  # yearly (leap years)
        pd.bdate_range("2024-01-01", periods=40).astype(str).tolist(),  # business days: Friday -> Monday
        pd.date_range("1990-01-01", periods=40, freq="D").strftime("%Y/%-m/%-d 0:00").tolist(),  # Exchange's format
        list(range(100, 140)),  # a plain integer time index
        [round(0.1 * i, 10) for i in range(40)],  # a float time index
        pd.date_range("2020-03-27", periods=72, freq="h", tz="Europe/Berlin").strftime("%Y-%m-%dT%H:%M:%S%z").tolist(),
    ],
    ids=["weekly", "monthly", "month-end", "quarterly", "yearly", "business-days", "exchange-format", "int-index",
         "float-index", "utc-offsets-over-dst"],
)
def test_calendar_and_numeric_steps_count_as_regular(tmp_path: Path, dates: list) -> None:
    table = read_series_csv(_write(tmp_path / "ok.csv", dates))
    assert len(table.values) == len(dates) and table.notes == []


def test_calendar_gaps_are_named_in_calendar_units(tmp_path: Path) -> None:
    months = pd.date_range("2015-01-01", periods=40, freq="MS").astype(str).tolist()
    message = _error(_write(tmp_path / "m.csv", months[:5] + months[6:]))
    assert "data row 6 ('2015-07-01') comes 61 days after data row 5 ('2015-05-01'), but the expected step is " \
           "1 month" in message
    days = pd.bdate_range("2024-01-01", periods=40).astype(str).tolist()
    assert "the expected step is 1 business day" in _error(_write(tmp_path / "b.csv", days[:7] + days[8:]))
    local = pd.date_range("2020-03-28", periods=48, freq="h", tz="Europe/Berlin").strftime("%Y-%m-%d %H:%M:%S").tolist()
    assert "data row 27 ('2020-03-29 03:00:00') comes 2h after" in _error(_write(tmp_path / "dst.csv", local))


def test_dates_that_do_not_parse_are_named(tmp_path: Path) -> None:
    message = _error(_write(tmp_path / "bad.csv", HOURS[:5] + ["soon"] + HOURS[6:]))
    assert "column 'date' has 'soon' at data row 6, which is not a date or time in the format of data row 1" in message
    assert "does not hold dates or times (data row 1: 'week 0')" in _error(
        _write(tmp_path / "words.csv", [f"week {i}" for i in range(60)]))


@pytest.mark.parametrize("sep,name", [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_other_delimiters_are_detected_read_and_noted(tmp_path: Path, sep: str, name: str) -> None:
    reference = read_series_csv(_write(tmp_path / "comma.csv", HOURS))
    assert reference.notes == []
    csv = _write(tmp_path / f"{name}.csv", HOURS, sep=sep)
    table = read_series_csv(csv)
    assert np.array_equal(table.values, reference.values) and table.columns == ["a", "OT"]
    assert table.notes == [f"{csv} read as {name}-separated ({sep!r}, detected from the header); "
                           "set data.delimiter to choose another"]
    for setting in (sep, name):
        explicit = read_series_csv(csv, delimiter=setting)
        assert np.array_equal(explicit.values, reference.values) and explicit.notes == []
    wrong = _error(csv, delimiter=",")
    assert "missing date column 'date'" in wrong
    assert f"the header looks {name}-separated: set data.delimiter={name}" in wrong


def test_a_byte_order_mark_before_the_header_is_ignored(tmp_path: Path) -> None:
    for sep in (",", ";"):
        csv = tmp_path / "bom.csv"
        pd.DataFrame({"date": HOURS, "a": 1.0, "OT": 2.0}).to_csv(csv, index=False, sep=sep, encoding="utf-8-sig")
        assert csv.read_bytes().startswith(b"\xef\xbb\xbfdate")
        assert read_series_csv(csv).columns == ["a", "OT"]


def test_semicolon_file_with_decimal_commas_gets_a_hint(tmp_path: Path) -> None:
    csv = tmp_path / "eu.csv"
    csv.write_text("date;a;OT\n" + "".join(f"{d};{i},5;{i},25\n" for i, d in enumerate(HOURS)), encoding="utf-8")
    message = _error(csv)
    assert "column 'a' has a non-numeric value '0,5' at data row 1" in message and "decimal commas" in message


def test_a_benchmark_keeps_only_its_documented_irregular_rows(tmp_path: Path) -> None:
    dates = HOURS[:10] + [HOURS[9]] + HOURS[10:30] + HOURS[32:]  # a repeat at row 11, a gap at row 32
    csv = _write(tmp_path / "bench.csv", dates)
    table = read_series_csv(csv, known_irregular_rows=(11, 32))
    assert len(table.values) == len(dates)  # nothing dropped: the split borders stay those of the file
    assert table.notes == [f"{csv}: kept the benchmark file's known irregular steps as TSLib reads them (expected "
                           "step 1h): data row 11 ('2021-01-01 09:00:00'): a repeat, data row 32 "
                           "('2021-01-02 08:00:00'): a step of 3h"]
    assert "data row 32" in _error(csv, known_irregular_rows=(11,))
    assert "data row 11" in _error(csv, known_irregular_rows=(32,))


SHIPPED = ["ETTh1", "ETTh2", "ETTm1", "ETTm2", "Weather", "Exchange"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_benchmarks_load_with_default_settings(name: str) -> None:
    path = data_root() / DATASETS[name].path
    if not path.exists():
        pytest.skip(f"{path} not found (set FFNET_DATA)")
    rows = {"ETTh1": 17420, "ETTh2": 17420, "ETTm1": 69680, "ETTm2": 69680, "Weather": 52696, "Exchange": 7588}[name]
    assert len(read_series_csv(path, known_irregular_rows=DATASETS[name].known_irregular_rows).values) == rows  # MANIFEST
    data = build_data(DataConfig(dataset=name))
    assert data.n_vars == DATASETS[name].n_vars
    if name == "Weather":  # its repeated row and its 100-minute gap are kept, and said so
        assert len(data.notes) == 1 and "data row 19045 ('2020-05-12 06:00:00'): a repeat" in data.notes[0]
        assert "data row 21515 ('2020-05-29 11:10:00'): a step of 1h 40min" in data.notes[0]
        message = str(pytest.raises(FFNetError, build_data, DataConfig(dataset="custom", path=str(path))).value)
        assert "duplicate timestamp at data row 19045 ('2020-05-12 06:00:00')" in message  # as a user CSV: refused
    else:
        assert data.notes == []


def test_new_data_keys_are_checked(tmp_path: Path) -> None:
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    cfg = load_config(TSConfig, recipes / "ETTh1_96.yaml")
    assert (cfg.data.delimiter, cfg.data.sort_timestamps, cfg.data.allow_irregular) == (None, False, False)
    cfg = load_config(TSConfig, None, ["data.delimiter=semicolon", "data.sort_timestamps=true", "data.allow_irregular=true"])
    assert (cfg.data.delimiter, cfg.data.sort_timestamps, cfg.data.allow_irregular) == ("semicolon", True, True)
    for override, key in [("data.delimiter=colon", "data.delimiter"), ("data.sort_timestamps=maybe", "data.sort_timestamps"),
                          ("data.allow_irregular=2", "data.allow_irregular")]:
        with pytest.raises(FFNetError, match=key):
            load_config(TSConfig, None, [override])
    csv = _write(tmp_path / "semi.csv", pd.date_range("2021-01-01", periods=400, freq="h").astype(str).tolist(), sep=";")
    data = build_data(DataConfig(dataset="custom", path=str(csv), seq_len=24, pred_len=12, delimiter="semicolon"))
    assert data.n_vars == 2 and data.notes == []


def _illness_like(path: Path) -> Path:
    """966 weekly rows like TSLib's national_illness.csv (seq_len 36, pred_len 24: 617 training windows)."""
    rng = np.random.default_rng(0)
    dates = pd.date_range("2002-01-01", periods=966, freq="7D").astype(str)
    pd.DataFrame({"date": dates, "a": rng.normal(size=966), "OT": rng.normal(size=966)}).to_csv(path, index=False)
    return path


def test_few_steps_per_epoch_advice() -> None:
    advice = few_steps_advice(617, 512)
    assert advice is not None and "train.batch_size=512 gives only 2 optimizer steps per epoch (617 training windows)" in advice
    assert "use train.batch_size=64 (or any value up to 68) for at least 10 steps per epoch" in advice
    assert few_steps_advice(617, 68) is None and few_steps_advice(617, 69) is not None  # ceil(617 / 69) = 9
    assert few_steps_advice(8449, 512) is None  # ETTh1-96: 17 steps
    two_ranks = few_steps_advice(617, 64, accum_steps=2, world_size=2)  # 309 windows a rank: 5 batches, 3 steps
    assert "3 optimizer steps" in two_ranks and "train.batch_size=16 (or any value up to 17)" in two_ranks
    assert "too few windows" in few_steps_advice(5, 512)


def test_no_shipped_recipe_gets_the_few_steps_warning() -> None:
    from ffnet_timeseries.data import split_borders
    from ffnet_timeseries.recipes import HORIZONS, RECIPES, recipe_config

    rows = {"ETTh1": 17420, "ETTh2": 17420, "ETTm1": 69680, "ETTm2": 69680, "Weather": 52696, "Exchange": 7588,
            "ECL": 26304, "Traffic": 17544}  # the benchmark files' data rows (ECL/Traffic: TSLib's copies)
    for dataset in RECIPES:
        for horizon in HORIZONS:
            cfg = recipe_config(dataset, horizon)
            start, end = split_borders(rows[dataset], DATASETS[dataset].layout, cfg.data.seq_len)["train"]
            windows = end - start - cfg.data.seq_len - horizon + 1
            assert few_steps_advice(windows, cfg.train.batch_size, cfg.train.accum_steps) is None, (dataset, horizon)


def test_training_on_a_small_csv_warns_with_a_smaller_batch_size(tmp_path: Path) -> None:
    csv = _illness_like(tmp_path / "illness.csv")
    data = load_forecast_data(csv, "custom", 36, 24)
    assert len(data.train) == 617
    from ffnet_timeseries.engine import train

    cfg = TSConfig(
        run=TSRunConfig(output_dir=str(tmp_path / "run"), seed=1, threads=1),
        data=DataConfig(dataset="custom", path=str(csv), seq_len=36, pred_len=24),
        model=ModelConfig(dims=[8], large_kernel=7, small_kernel=3, ffn_ratio=1),
        optim=TSOptimConfig(lr=1e-3, schedule="constant"),
        train=TSTrainConfig(epochs=1, batch_size=512, progress=False),
    )
    with pytest.warns(UserWarning, match=r"only 2 optimizer steps per epoch .* use train.batch_size=64"):
        train(cfg, quiet=True)
    assert "warning: train.batch_size=512 gives only 2" in (tmp_path / "run" / "log.txt").read_text()


def test_cli_on_a_duplicate_timestamp_exits_2_with_one_line(tmp_path: Path) -> None:
    csv = _write(tmp_path / "dup.csv", HOURS[:10] + [HOURS[9]] + HOURS[10:])
    script = Path(sys.executable).parent / "ffnet-ts-train"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ffnet_timeseries.train"]
    proc = subprocess.run([*command, "data.dataset=custom", f"data.path={csv}", f"run.output_dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: {csv}: column 'date' has a duplicate timestamp at data row 11")
