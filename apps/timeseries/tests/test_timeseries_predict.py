"""``ffnet-ts-predict`` (forecast past the end of a CSV), ``ffnet-ts-eval --save-predictions`` and the ILI recipes.

The forecasts are checked against a computation made here from the raw CSV (train-split mean/std with numpy, the
last window, the model, inverse scaling by column name), not against the command's own helpers; the commands run
in fresh interpreters."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ffnet_timeseries.builders import build_model
from ffnet_timeseries.config import (
    DataConfig,
    ModelConfig,
    TSConfig,
    TSOptimConfig,
    TSRunConfig,
    TSTrainConfig,
)
from ffnet_timeseries.data.timestamps import continue_time_axis
from ffnet_timeseries.engine import train
from ffnet_timeseries.metrics import forecast_metrics
from ffnet_timeseries.predict import forecast_csv
from ffnet_timeseries.recipes import ILI_HORIZONS, ILI_LABEL_LEN, ILI_SEQ_LEN, recipe_config
from metamixer.train.config import config_from_dict, load_config
from metamixer.train.datadir import data_root
from metamixer.train.errors import FFNetError

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))  # the shared bad-input corpus and CLI helpers
from corpus import assert_one_line_error, checkpoint_corpus, csv_corpus, run_cli  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:train.batch_size=.* optimizer steps? per epoch:UserWarning")

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
ETTH1 = data_root() / "ts" / "ETT-small" / "ETTh1.csv"
ILI_COLUMNS = ["% WEIGHTED ILI", "%UNWEIGHTED ILI", "AGE 0-4", "AGE 5-24", "ILITOTAL", "NUM. OF PROVIDERS", "OT"]


def _hourly(path: Path, rows: int = 300) -> Path:
    """Hourly CSV with the target *not* last in the file (TSLib moves it last; the forecast keeps the file's order)."""
    t = np.arange(rows)
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"date": pd.date_range("2021-03-01", periods=rows, freq="h").astype(str),
                          "OT": 5 + 2 * np.cos(2 * np.pi * t / 24) + 0.1 * rng.normal(size=rows)})
    for i in range(3):
        frame[f"f{i}"] = 10 * i + np.sin(2 * np.pi * t / (12 + 5 * i)) + 0.1 * rng.normal(size=rows)
    frame.to_csv(path, index=False)
    return path


def _ili_like(path: Path, rows: int = 400) -> Path:
    """Weekly rows with national_illness.csv's header and date format (the real file is not shipped)."""
    t = np.arange(rows)
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"date": pd.date_range("2002-01-01", periods=rows, freq="7D").strftime("%Y-%m-%d %H:%M:%S")})
    for i, name in enumerate(ILI_COLUMNS):
        frame[name] = 100 * (i + 1) + 30 * np.sin(2 * np.pi * t / 52 + i) + rng.normal(size=rows)
    frame.to_csv(path, index=False)
    return path


def _train(tmp: Path, csv: Path, seq_len: int, pred_len: int, features: str = "M", **data: object) -> Path:
    cfg = TSConfig(
        run=TSRunConfig(output_dir=str(tmp / f"run_{csv.stem}_{features}"), seed=5, threads=1),
        data=DataConfig(dataset="custom", path=str(csv), seq_len=seq_len, pred_len=pred_len, features=features, **data),
        model=ModelConfig(dims=[8], large_kernel=7, small_kernel=3, ffn_ratio=1, dropout=0.1),
        optim=TSOptimConfig(lr=3e-3, schedule="constant"),
        train=TSTrainConfig(epochs=None, steps=6, val_every=6, batch_size=16, progress=False),
    )
    train(cfg, quiet=True)
    return Path(cfg.run.output_dir) / "best.pth"


def _expected(ckpt: Path, csv: Path) -> pd.DataFrame:
    """The forecast computed independently: TSLib's custom split (70 % train rows), population mean/std of those
    rows, columns in TSLib's order [others..., target], the model on the last window, then data units."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = config_from_dict(TSConfig, state["config"])
    raw = pd.read_csv(csv)
    target, features = cfg.data.target, cfg.data.features
    names = [target] if features == "S" else [c for c in raw.columns if c not in ("date", target)] + [target]
    values = raw[names].to_numpy(np.float64)
    train_rows = values[: int(len(values) * 0.7)]
    mean, std = train_rows.mean(axis=0), train_rows.std(axis=0)
    x = (values[-cfg.data.seq_len:] - mean) / std
    model = build_model(cfg.model, len(names), cfg.data.seq_len, cfg.data.pred_len)
    model.load_state_dict(state["model"])
    with torch.no_grad():
        out = model.eval()(torch.tensor(x, dtype=torch.float32)[None])[0].double().numpy()
    if features == "MS":
        return pd.DataFrame({target: out[:, -1] * std[-1] + mean[-1]})
    return pd.DataFrame(out * std + mean, columns=names)


@pytest.fixture(scope="module")
def hourly(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("hourly")
    csv = _hourly(tmp / "hourly.csv")
    return csv, _train(tmp, csv, seq_len=24, pred_len=12)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    """A model trained on the corpus's good.csv (hourly, date,a,b,OT), so every defect file is its kind of CSV."""
    tmp = tmp_path_factory.mktemp("corpus")
    files = csv_corpus(tmp / "csv")
    return files, _train(tmp, files["good.csv"], seq_len=24, pred_len=12)


def test_forecast_continues_hourly_in_data_units_with_the_input_columns(hourly: tuple[Path, Path], tmp_path: Path) -> None:
    csv, ckpt = hourly
    out, png = tmp_path / "out" / "forecast.csv", tmp_path / "out" / "forecast.png"
    result = run_cli("ffnet-ts-predict", "--checkpoint", str(ckpt), "--output", str(out), "--plot", str(png))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "forecast 12 steps" in result.stdout and "step 1h" in result.stdout
    got = pd.read_csv(out)
    assert list(got.columns) == list(pd.read_csv(csv).columns) == ["date", "OT", "f0", "f1", "f2"]  # the file's order
    assert len(got) == 12
    last = pd.Timestamp(pd.read_csv(csv)["date"].iloc[-1])
    assert got["date"].tolist() == [str(last + pd.Timedelta(hours=k)) for k in range(1, 13)]
    assert got["date"].iloc[0] == "2021-03-13 12:00:00"  # 300 hourly rows from 2021-03-01 00:00, written alike
    expected = _expected(ckpt, csv)
    for name in ("OT", "f0", "f1", "f2"):
        np.testing.assert_allclose(got[name].to_numpy(), expected[name].to_numpy(), rtol=1e-5, atol=1e-5)
    assert abs(got["f2"].mean() - 20) < 5 and abs(got["OT"].mean() - 5) < 5  # data units, not the scaled space
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # atomic writes leave no temporaries


def test_other_column_order_and_a_longer_file_forecast_by_name(hourly: tuple[Path, Path], tmp_path: Path) -> None:
    """Variables are matched by name; --data forecasts after *its* last row (the training CSV is not read)."""
    csv, ckpt = hourly
    frame = pd.read_csv(csv)
    shuffled = frame[["f2", "date", "f0", "OT", "f1"]].iloc[:250]
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    result = forecast_csv(ckpt, tmp_path / "shuffled.csv")
    assert list(result.frame.columns) == ["f2", "date", "f0", "OT", "f1"]
    frame.iloc[:250].to_csv(tmp_path / "plain.csv", index=False)
    expected = _expected(ckpt, csv)  # scaler of the training CSV, window of rows 226..249
    plain = forecast_csv(ckpt, tmp_path / "plain.csv").frame
    for name in ("OT", "f0", "f1", "f2"):
        np.testing.assert_array_equal(result.frame[name].to_numpy(), plain[name].to_numpy())
    assert plain["date"].iloc[0] == "2021-03-11 10:00:00"  # row 250 of the file would be the first forecast step
    assert not np.allclose(plain["OT"], expected["OT"])  # another window, another forecast


def test_weekly_ili_like_csv_continues_by_weeks_with_the_recipe_shape(tmp_path: Path) -> None:
    csv = _ili_like(tmp_path / "national_illness.csv")
    ckpt = _train(tmp_path, csv, seq_len=ILI_SEQ_LEN, pred_len=ILI_HORIZONS[0])
    out = tmp_path / "ili_forecast.csv"
    result = run_cli("ffnet-ts-predict", "--checkpoint", str(ckpt), "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    got = pd.read_csv(out)
    assert list(got.columns) == ["date", *ILI_COLUMNS] and len(got) == 24
    last = pd.Timestamp(pd.read_csv(csv)["date"].iloc[-1])  # a Tuesday, as the real file's dates
    assert got["date"].tolist() == [(last + pd.Timedelta(weeks=k)).strftime("%Y-%m-%d %H:%M:%S") for k in range(1, 25)]
    assert "step W-TUE" in result.stdout
    expected = _expected(ckpt, csv)
    np.testing.assert_allclose(got[ILI_COLUMNS].to_numpy(), expected[ILI_COLUMNS].to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("features", ["S", "MS"])
def test_univariate_and_multi_to_one_forecast_the_target_only(hourly: tuple[Path, Path], tmp_path: Path,
                                                                features: str) -> None:
    csv, _ = hourly
    ckpt = _train(tmp_path, csv, seq_len=24, pred_len=12, features=features)
    result = forecast_csv(ckpt)
    assert list(result.frame.columns) == ["date", "OT"] and len(result.frame) == 12
    np.testing.assert_allclose(result.frame["OT"].to_numpy(), _expected(ckpt, csv)["OT"].to_numpy(), rtol=1e-5, atol=1e-5)
    if features == "S":  # S reads only the target: other columns may be missing
        pd.read_csv(csv)[["date", "OT"]].to_csv(tmp_path / "target_only.csv", index=False)
        alone = forecast_csv(ckpt, tmp_path / "target_only.csv").frame
        np.testing.assert_array_equal(alone["OT"].to_numpy(), result.frame["OT"].to_numpy())


@pytest.mark.parametrize(("dates", "expected", "step"), [
    (pd.date_range("2016-07-01", periods=5, freq="h").astype(str), ["2016-07-01 05:00:00", "2016-07-01 06:00:00"], "1h"),
    (pd.date_range("2016-07-01", periods=5, freq="15min").astype(str), ["2016-07-01 01:15:00", "2016-07-01 01:30:00"], "15min"),
    (pd.date_range("2002-01-01", periods=5, freq="7D").strftime("%Y-%m-%d"), ["2002-02-05", "2002-02-12"], "W-TUE"),
    (["2019-11-30", "2019-12-31", "2020-01-31"], ["2020-02-29", "2020-03-31"], "ME"),  # month ends, leap February
    (["2020-01-01", "2020-02-01", "2020-03-01"], ["2020-04-01", "2020-05-01"], "MS"),
    (["2020-01-15", "2020-02-15", "2020-03-15", "2020-04-15"], ["2020-05-15", "2020-06-15"], "1 month"),
    (["2024-01-04", "2024-01-05", "2024-01-08", "2024-01-09"], ["2024-01-10", "2024-01-11"], "B"),
    (["2024-01-11", "2024-01-12"], ["2024-01-13", "2024-01-14"], "1 day"),
    (["01/30/2020 10:00", "01/30/2020 11:00", "01/30/2020 12:00"], ["01/30/2020 13:00", "01/30/2020 14:00"], "1h"),
    (["2020-10-24T23:00:00+02:00", "2020-10-25T00:00:00+02:00", "2020-10-25T01:00:00+02:00"],
     ["2020-10-25T02:00:00+02:00", "2020-10-25T03:00:00+02:00"], "1h"),  # in UTC steps, the last row's offset
    ([3, 5, 7, 9], ["11", "13"], "2"),
])
def test_timestamps_continue_at_the_series_own_step(dates: list, expected: list[str], step: str) -> None:
    axis = continue_time_axis(pd.Series(list(dates)), 2)
    assert (axis.values, axis.step) == (expected, step)


def test_an_irregular_history_names_its_rows() -> None:
    rows = np.arange(41, 45)  # the file's data rows of these four values
    dates = pd.Series(["2021-01-01 00:00", "2021-01-01 01:00", "2021-01-01 03:00", "2021-01-01 04:00"])
    with pytest.raises(FFNetError, match=r"data row 43 \('2021-01-01 03:00'\) follows data row 42 .* expected step is 1h"):
        continue_time_axis(dates, 3, "f.csv", rows=rows)
    with pytest.raises(FFNetError, match="data row 3"):
        continue_time_axis(pd.Series([1, 2, 4]), 3)


def test_allow_irregular_run_still_refuses_a_gap_in_the_forecast_history(hourly: tuple[Path, Path], tmp_path: Path) -> None:
    csv, _ = hourly
    ckpt = _train(tmp_path, csv, seq_len=24, pred_len=12, allow_irregular=True)
    frame = pd.read_csv(csv)
    frame.drop(index=290).to_csv(tmp_path / "late_gap.csv", index=False)  # inside the last 24 rows
    with pytest.raises(FFNetError, match=r"late_gap.csv: column 'date' is not evenly spaced .* data row 290 "):
        forecast_csv(ckpt, tmp_path / "late_gap.csv")
    frame.drop(index=20).to_csv(tmp_path / "early_gap.csv", index=False)  # accepted, as in training
    assert len(forecast_csv(ckpt, tmp_path / "early_gap.csv").frame) == 12


def test_bad_inputs_and_outputs_give_one_line(corpus_run: tuple[dict[str, Path], Path], tmp_path: Path) -> None:
    files, ckpt = corpus_run
    good = pd.read_csv(files["good.csv"])
    short, wide = tmp_path / "short.csv", tmp_path / "wide.csv"
    good.iloc[:23].to_csv(short, index=False)
    good.assign(extra=1.0).to_csv(wide, index=False)
    (tmp_path / "a_file").write_text("x")
    cases = [
        (["--data", str(short)], (str(short), "has 23 data rows", "seq_len=24")),
        (["--data", str(wide)], (str(wide), "columns differ from the checkpoint's", "'extra'")),
        (["--data", str(files["missing_column.csv"])], ("columns differ", "missing ['OT']")),
        (["--data", str(files["gap.csv"])], ("not evenly spaced", "data row 101")),
        (["--data", str(files["bad_dates.csv"])], ("'yesterday'", "data row 11")),
        (["--data", str(tmp_path / "nope.csv")], ("nope.csv", "not found")),
        (["--output", str(tmp_path)], ("--output", "is a folder")),
        (["--output", str(tmp_path / "a_file" / "f.csv")], ("--output", "is a file")),
        (["--plot", str(tmp_path / "a_file" / "f.png")], ("--plot", "is a file")),
        (["--data", str(files["good.csv"]), "--output", str(files["good.csv"])], ("--output", "input CSV")),
    ]
    for extra, needles in cases:
        argv = ["--checkpoint", str(ckpt), "--output", str(tmp_path / "fc.csv"), *extra]
        if "--output" in extra:
            argv = ["--checkpoint", str(ckpt), *extra]
        assert_one_line_error(run_cli("ffnet-ts-predict", *argv), *needles)
    assert not (tmp_path / "fc.csv").exists()
    text = checkpoint_corpus(tmp_path / "ckpts")["text.pth"]
    assert_one_line_error(run_cli("ffnet-ts-predict", "--checkpoint", str(text), "--output", str(tmp_path / "x.csv")),
                          "text.pth")
    assert_one_line_error(run_cli("ffnet-ts-predict", "--checkpoint", str(ckpt)), "--output")


def test_an_older_checkpoint_without_a_stored_scaler_rebuilds_it(hourly: tuple[Path, Path], tmp_path: Path) -> None:
    csv, ckpt = hourly
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["extra"]["task"]["columns"] == ["f0", "f1", "f2", "OT"]  # the model's order: TSLib's
    for key in ("columns", "scaler"):
        del state["extra"]["task"][key]
    torch.save(state, tmp_path / "old.pth")
    np.testing.assert_array_equal(forecast_csv(tmp_path / "old.pth").frame["OT"].to_numpy(),
                                  forecast_csv(ckpt).frame["OT"].to_numpy())


def test_save_predictions_writes_tslib_arrays_that_reproduce_the_metrics(hourly: tuple[Path, Path], tmp_path: Path) -> None:
    csv, ckpt = hourly
    out = tmp_path / "ev" / "eval.json"
    result = run_cli("ffnet-ts-eval", "--checkpoint", str(ckpt), "--output", str(out), "--unscaled",
                     "--save-predictions", "--windows", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads(out.read_text())
    n_rows = len(pd.read_csv(csv))
    windows = n_rows - (n_rows - int(0.2 * n_rows) - 24) - 24 - 12 + 1  # test split incl. its look-back
    arrays = {name: np.load(out.parent / name) for name in ("pred.npy", "true.npy", "pred_unscaled.npy", "true_unscaled.npy")}
    for array in arrays.values():
        assert array.shape == (windows, 12, 4) and array.dtype == np.float32
    assert saved["predictions_shape"] == [windows, 12, 4] and saved["data"]["windows"] == windows
    assert set(saved["predictions"]) == set(arrays)
    scaled = forecast_metrics(arrays["pred.npy"], arrays["true.npy"])
    unscaled = forecast_metrics(arrays["pred_unscaled.npy"], arrays["true_unscaled.npy"])
    for key in ("mse", "mae"):
        assert scaled[key] == pytest.approx(saved["metrics"][key], rel=1e-6)
        assert unscaled[key] == pytest.approx(saved["metrics_unscaled"][key], rel=1e-6)
    assert abs(arrays["true.npy"].mean()) < 1.5 < abs(arrays["true_unscaled.npy"][..., 2].mean())  # scaled vs f2 ~ 20
    # window 0's truth is rows [test start + 24, +12) of the file, in data units (f1 is the model's 2nd column)
    start = n_rows - int(0.2 * n_rows)
    np.testing.assert_allclose(arrays["true_unscaled.npy"][0, :, 1], pd.read_csv(csv)["f1"].to_numpy()[start:start + 12],
                               rtol=1e-5)


def test_ili_recipes_follow_tslib_ili_scripts() -> None:
    assert ILI_HORIZONS == (24, 36, 48, 60) and (ILI_SEQ_LEN, ILI_LABEL_LEN) == (36, 18)
    for horizon in ILI_HORIZONS:
        cfg = load_config(TSConfig, RECIPE_DIR / f"ILI_{horizon}.yaml")
        assert cfg == recipe_config("ILI", horizon)
        assert (cfg.data.dataset, cfg.data.seq_len, cfg.data.pred_len, cfg.data.target) == ("ILI", 36, horizon, "OT")
        assert (cfg.train.batch_size, cfg.optim.lr, cfg.train.epochs, cfg.train.patience) == (32, 1e-4, 10, 3)
        assert cfg.optim.schedule == "type1" and cfg.data.layout is None and cfg.data.path is None
    with pytest.raises(FFNetError, match="ILI recipes exist for"):
        recipe_config("ILI", 96)


def test_ili_recipe_trains_on_a_user_csv_and_names_the_missing_file(tmp_path: Path) -> None:
    from ffnet_timeseries.builders import build_data

    csv = _ili_like(tmp_path / "national_illness.csv", rows=966)
    cfg = load_config(TSConfig, RECIPE_DIR / "ILI_24.yaml", [f"data.path={csv}"])
    data = build_data(cfg.data)
    assert data.columns == ILI_COLUMNS and len(data.train) == 617  # TSLib's 966-row file: 617 training windows
    model = build_model(cfg.model, data.n_vars, cfg.data.seq_len, cfg.data.pred_len)
    x, _ = data.train.get_batch(torch.arange(2))
    assert model.eval()(x).shape == (2, 24, 7)
    if not (data_root() / "ts" / "illness" / "national_illness.csv").exists():
        with pytest.raises(FFNetError, match=r"ILI CSV not found at .*ts/illness/national_illness.csv"):
            build_data(load_config(TSConfig, RECIPE_DIR / "ILI_24.yaml").data)


@pytest.mark.skipif(not ETTH1.exists(), reason="ETTh1.csv not found (set FFNET_DATA)")
def test_a_benchmark_checkpoint_forecasts_after_its_own_file(tmp_path: Path) -> None:
    """data.dataset=ETTh1, no --data: the forecast starts one hour after the file's last row (2018-06-26 19:00)."""
    cfg = recipe_config("ETTh1", 96, output_dir=str(tmp_path / "run"))
    cfg.model = ModelConfig(dims=[8], large_kernel=7, small_kernel=3, ffn_ratio=1)
    cfg.train = TSTrainConfig(epochs=None, steps=2, val_every=2, batch_size=64, progress=False)
    cfg.run.threads, cfg.eval.batch_size = 1, 1024
    train(cfg, quiet=True)
    result = forecast_csv(tmp_path / "run" / "best.pth")
    assert result.frame["date"].iloc[0] == "2018-06-26 20:00:00" and len(result.frame) == 96
    assert list(result.frame.columns) == list(pd.read_csv(ETTH1, nrows=0).columns)
