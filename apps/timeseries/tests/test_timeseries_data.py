"""TSLib protocol: split borders, train-only scaling, window counts, loaders that keep every sample, bad CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ffnet_timeseries.data import WindowLoader, load_forecast_data, split_borders
from ffnet_timeseries.engine import evaluate_split
from metamixer.train.datadir import data_root
from metamixer.train.errors import FFNetError

ETTH1 = data_root() / "ts" / "ETT-small" / "ETTh1.csv"
needs_etth1 = pytest.mark.skipif(not ETTH1.exists(), reason=f"ETTh1 not found at {ETTH1} (set FFNET_DATA)")


def _write_csv(path: Path, rows: int, n_features: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, n_features)).cumsum(axis=0), columns=[f"f{i}" for i in range(n_features)])
    frame.insert(0, "date", pd.date_range("2020-01-01", periods=rows, freq="h").astype(str))
    frame["OT"] = rng.normal(size=rows)
    frame.to_csv(path, index=False)
    return path


def test_split_borders_follow_tslib() -> None:
    assert split_borders(17420, "ett_hour", 96) == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}
    assert split_borders(69680, "ett_minute", 96) == {"train": (0, 34560), "val": (34464, 46080), "test": (46080 - 96, 57600)}
    n = 7588  # exchange: 70/10/20
    n_train, n_test = int(n * 0.7), int(n * 0.2)
    assert split_borders(n, "custom", 96) == {"train": (0, n_train), "val": (n_train - 96, n - n_test), "test": (n - n_test - 96, n)}


@needs_etth1
def test_etth1_windows_and_train_only_scaler() -> None:
    data = load_forecast_data(ETTH1, "ett_hour", 96, 96)
    assert (len(data.train), len(data.val), len(data.test)) == (8449, 2785, 2785)  # rows - L - H + 1
    raw = pd.read_csv(ETTH1).iloc[:, 1:].to_numpy()
    assert np.allclose(data.scaler.mean, raw[:8640].mean(0))  # fitted on the train rows only
    assert np.allclose(data.scaler.std, raw[:8640].std(0))
    assert not np.allclose(data.scaler.mean, raw[:14400].mean(0))
    x, y = data.test[0]
    expected_x = (raw[11424:11520] - raw[:8640].mean(0)) / raw[:8640].std(0)
    assert np.allclose(x.numpy(), expected_x, atol=1e-5)
    assert np.allclose(y.numpy(), (raw[11520:11616] - raw[:8640].mean(0)) / raw[:8640].std(0), atol=1e-5)
    assert data.columns[-1] == "OT"


def test_windows_features_and_counts(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "d.csv", 300)
    data = load_forecast_data(csv, "custom", 24, 12, features="MS")
    n_train = int(300 * 0.7)
    assert len(data.train) == n_train - 24 - 12 + 1
    x, y = data.train[5]
    assert x.shape == (24, 4) and y.shape == (12, 1)
    assert torch.equal(y[:, 0], data.train.data[5 + 24 : 5 + 36, -1])
    s = load_forecast_data(csv, "custom", 24, 12, features="S")
    assert s.n_vars == 1 and s.columns == ["OT"]


def test_eval_loader_keeps_every_sample_and_train_loader_is_seeded(tmp_path: Path) -> None:
    data = load_forecast_data(_write_csv(tmp_path / "d.csv", 400), "custom", 24, 12)
    n = len(data.test)
    assert n % 7 != 0
    loader = WindowLoader(data.test, 7, shuffle=False, drop_last=False)
    seen = torch.cat([x[:, 0, 0] for x, _ in loader])
    assert len(loader) == -(-n // 7) and torch.equal(seen, data.test.data[:n, 0])  # each window once, in order
    train = WindowLoader(data.train, 16, shuffle=True, seed=3)
    train.set_epoch(2)
    a = [x for x, _ in train]
    train.set_epoch(2)
    assert all(torch.equal(u, v) for u, v in zip(a, [x for x, _ in train]))
    train.set_epoch(3)
    assert not torch.equal(a[0], next(iter(train))[0])
    shards = [torch.cat([x[:, 0, 0] for x, _ in WindowLoader(data.train, 5, shuffle=True, seed=1, rank=r, world_size=3)]) for r in range(3)]
    assert {float(v) for v in torch.cat(shards)} == {float(v) for v in data.train.data[: len(data.train), 0]}

    class Last(torch.nn.Module):  # repeat-last forecaster: metrics must count every (window, step, var)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, -1:, :].expand(-1, 12, -1)

    metrics = evaluate_split(Last(), data.test, 7, torch.device("cpu"))
    assert metrics["count"] == n * 12 * data.n_vars
    ys = torch.stack([data.test[i][1] for i in range(n)])
    xs = torch.stack([data.test[i][0][-1] for i in range(n)])
    assert metrics["mse"] == pytest.approx(float(((ys.double() - xs.double()[:, None]) ** 2).mean()), rel=1e-9)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda f: f.drop(columns=["date"]), "missing date column 'date'"),
        (lambda f: f.drop(columns=["OT"]), "missing target column 'OT'"),
        (lambda f: f.assign(f1=f["f1"].astype(object).where(f.index != 10, "abc")), r"column 'f1' has a non-numeric value 'abc' at data row 11"),
        (lambda f: f.assign(f0=f["f0"].where(f.index != 20, np.nan)), r"column 'f0' has a missing value \(NaN\) at data row 21"),
        (lambda f: f.head(100), r"too few rows for seq_len=96 \+ pred_len=96"),
        (lambda f: f.assign(date=f["date"].where(f.index != 3, None)), "empty date"),
    ],
)
def test_bad_csv_gives_clear_error_naming_file_and_column(tmp_path: Path, edit, message: str) -> None:
    frame = pd.read_csv(_write_csv(tmp_path / "ok.csv", 1000))
    bad = tmp_path / "bad.csv"
    edit(frame).to_csv(bad, index=False)
    with pytest.raises(FFNetError, match=message) as info:
        load_forecast_data(bad, "custom", 96, 96)
    assert str(bad) in str(info.value)


def test_missing_file_and_bad_features(tmp_path: Path) -> None:
    with pytest.raises(FFNetError, match="data file not found"):
        load_forecast_data(tmp_path / "nope.csv", "custom", 96, 96)
    with pytest.raises(FFNetError, match="data.features"):
        load_forecast_data(_write_csv(tmp_path / "d.csv", 500), "custom", 96, 96, features="X")
