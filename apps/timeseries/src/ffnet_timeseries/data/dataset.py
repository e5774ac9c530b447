"""Time-Series-Library conventions for the long-term forecasting benchmarks, re-implemented.

- ``ett_hour`` (ETTh1/ETTh2): train rows [0, 8640), val [8640-L, 11520), test [11520-L, 14400) (12/4/4 months).
- ``ett_minute`` (ETTm1/ETTm2): the same borders x4.
- ``custom`` (Weather, Exchange, ECL, Traffic, ILI, any user CSV): columns reordered to [date, features..., target],
  n_train = int(0.7 N), n_test = int(0.2 N), n_val = the rest; val/test start L rows early so their first window
  has a full history.
- A standard scaler is fitted on the *train rows only* and applied to every split; metrics are reported in that
  scaled space, as the literature does (``inverse_transform`` is available for unscaled reporting).
- Windows: x = rows [s, s+L), y = rows [s+L, s+L+H), stride 1; count = rows - L - H + 1.
- Rows are time steps, so the date column is checked first (:mod:`ffnet_timeseries.data.csvcheck`): in order, no
  duplicates, one step; a benchmark's documented defects (Weather: one repeated row, one gap) are kept as TSLib
  reads them, because dropping or filling rows would move the split borders away from the published ones.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch

from ffnet_timeseries.data.csvcheck import check_time_axis, delimiter_hint, resolve_delimiter
from metamixer.train.errors import FFNetError

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ForecastData",
    "SeriesTable",
    "StandardScaler",
    "WindowDataset",
    "load_forecast_data",
    "read_series_csv",
    "split_borders",
]

Layout = Literal["ett_hour", "ett_minute", "custom"]
Features = Literal["M", "S", "MS"]


@dataclass(frozen=True)
class DatasetSpec:
    """Where a benchmark lives under the data root and which split convention it uses. ``known_irregular_rows``:
    data rows (1-based) of the shipped file whose step from the row before is irregular (a repeat or a gap); the
    loader keeps exactly those as TSLib does, so the split borders and scores stay comparable with the literature."""

    path: str
    layout: Layout
    n_vars: int
    known_irregular_rows: tuple[int, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "ETTh1": DatasetSpec("ts/ETT-small/ETTh1.csv", "ett_hour", 7),
    "ETTh2": DatasetSpec("ts/ETT-small/ETTh2.csv", "ett_hour", 7),
    "ETTm1": DatasetSpec("ts/ETT-small/ETTm1.csv", "ett_minute", 7),
    "ETTm2": DatasetSpec("ts/ETT-small/ETTm2.csv", "ett_minute", 7),
    # weather.csv: data row 19045 repeats row 19044 (same time, same values); row 21515 follows 1h40min after
    # 21514 (nine 10-min readings missing). Both lie in the train split.
    "Weather": DatasetSpec("ts/weather/weather.csv", "custom", 21, known_irregular_rows=(19045, 21515)),
    "Exchange": DatasetSpec("ts/exchange_rate/exchange_rate.csv", "custom", 8),
    "ECL": DatasetSpec("ts/electricity/electricity.csv", "custom", 321),
    "Traffic": DatasetSpec("ts/traffic/traffic.csv", "custom", 862),
    # TSLib's national_illness.csv (weekly, 966 rows, OT last); not shipped in $FFNET_DATA: put it there or set data.path
    "ILI": DatasetSpec("ts/illness/national_illness.csv", "custom", 7),
}

_ETT_HOUR_MONTH = 30 * 24


def split_borders(n_rows: int, layout: Layout, seq_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges ``[start, end)`` of the train/val/test splits (val/test include the ``seq_len`` look-back)."""
    if layout in ("ett_hour", "ett_minute"):
        unit = _ETT_HOUR_MONTH * (4 if layout == "ett_minute" else 1)
        train_end, val_end, test_end = 12 * unit, 16 * unit, 20 * unit
        borders = {
            "train": (0, train_end),
            "val": (train_end - seq_len, val_end),
            "test": (val_end - seq_len, test_end),
        }
    elif layout == "custom":
        n_train, n_test = int(n_rows * 0.7), int(n_rows * 0.2)
        n_val = n_rows - n_train - n_test
        borders = {
            "train": (0, n_train),
            "val": (n_train - seq_len, n_train + n_val),
            "test": (n_rows - n_test - seq_len, n_rows),
        }
    else:
        raise FFNetError(f"data.layout: unknown layout {layout!r}; expected 'ett_hour', 'ett_minute' or 'custom'")
    return {k: (max(0, a), min(b, n_rows)) for k, (a, b) in borders.items()}


class StandardScaler:
    """Per-column ``(x - mean) / std`` with the population std (as sklearn's StandardScaler); constant columns
    get std 1 so they map to 0 instead of NaN."""

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, data: np.ndarray) -> StandardScaler:
        self.mean = data.mean(axis=0)
        std = data.std(axis=0)
        self.std = np.where(std == 0, 1.0, std)
        return self

    def transform(self, data: np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.std is not None, "fit() the scaler first"
        return (data - self.mean) / self.std

    def inverse_transform(self, data: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        assert self.mean is not None and self.std is not None, "fit() the scaler first"
        if isinstance(data, torch.Tensor):
            mean = torch.as_tensor(self.mean, dtype=data.dtype, device=data.device)
            std = torch.as_tensor(self.std, dtype=data.dtype, device=data.device)
            return data * std + mean
        return data * self.std + self.mean

    def state_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}  # type: ignore[union-attr]


class SeriesTable(NamedTuple):
    """What :func:`read_series_csv` read: column names [features..., target], values [rows, columns], notes to log."""

    columns: list[str]
    values: np.ndarray
    notes: list[str]


def read_series_csv(
    path: str | os.PathLike[str],
    target: str = "OT",
    date_column: str = "date",
    delimiter: str | None = None,
    sort_timestamps: bool = False,
    allow_irregular: bool = False,
    known_irregular_rows: Collection[int] = (),
) -> SeriesTable:
    """Read a forecasting CSV -> (column names [features..., target], float array [rows, columns], notes).

    Columns are reordered to [other features..., target] (TSLib's ``custom`` convention; ETT files already have
    OT last). ``delimiter`` None: detected from the header (a note says when it is not a comma). The date column
    must increase by one step per row (see :func:`~ffnet_timeseries.data.csvcheck.check_time_axis`). Every problem
    is reported as an :class:`FFNetError` naming the file and column, with data rows counted from 1 after the header.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FFNetError(f"data file not found: {path}")
    sep, note = resolve_delimiter(path, delimiter)
    notes = [note] if note else []
    try:
        frame = pd.read_csv(path, sep=sep, encoding="utf-8-sig", encoding_errors="replace")
    except Exception as exc:  # pandas raises many parser error types
        raise FFNetError(f"{path}: could not be parsed as CSV with delimiter {sep!r} ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if date_column not in frame.columns:
        raise FFNetError(f"{path}: missing date column {date_column!r} (columns: {list(frame.columns)[:10]})"
                         f"{delimiter_hint(path, list(frame.columns), sep)}")
    if target not in frame.columns:
        raise FFNetError(f"{path}: missing target column {target!r} (columns: {list(frame.columns)[:10]})")
    if frame[date_column].isna().any():
        row = int(np.flatnonzero(frame[date_column].isna().to_numpy())[0])
        raise FFNetError(f"{path}: empty date in column {date_column!r} at data row {row + 1}")
    features = [c for c in frame.columns if c not in (date_column, target)] + [target]
    for col in features:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            comma = sep != "," and "," in str(frame[col].iloc[row])
            raise FFNetError(
                f"{path}: column {col!r} has a non-numeric value {frame[col].iloc[row]!r} at data row {row + 1}; "
                "expected numbers only" + (" (decimal commas? write the numbers with '.')" if comma else "")
            )
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise FFNetError(f"{path}: column {col!r} has a missing value (NaN) at data row {row + 1}; fill or drop it first")
        frame[col] = values
    order, time_notes = check_time_axis(path, date_column, frame[date_column], sort_timestamps, allow_irregular,
                                        known_irregular_rows)
    table = frame[features].to_numpy(dtype=np.float64)
    return SeriesTable(features, table if order is None else table[order], notes + time_notes)


class WindowDataset(torch.utils.data.Dataset):
    """Stride-1 sliding windows over one split: item ``i`` is ``(x [seq_len, C_in], y [pred_len, C_out])``.

    ``get_batch(indices)`` gathers many windows with one indexing op; :class:`WindowLoader` uses it so an epoch
    costs a few tensor ops instead of thousands of ``__getitem__`` calls.
    """

    def __init__(self, data: np.ndarray, seq_len: int, pred_len: int, target_columns: slice = slice(None)) -> None:
        self.data = torch.as_tensor(data, dtype=torch.float32)
        self.seq_len, self.pred_len = seq_len, pred_len
        self.target_columns = target_columns
        self._x_offsets = torch.arange(seq_len)
        self._y_offsets = torch.arange(seq_len, seq_len + pred_len)

    def __len__(self) -> int:
        return max(0, self.data.shape[0] - self.seq_len - self.pred_len + 1)

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = torch.as_tensor(indices, dtype=torch.long)
        x = self.data[indices[:, None] + self._x_offsets]
        y = self.data[indices[:, None] + self._y_offsets][..., self.target_columns]
        return x, y

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        x, y = self.get_batch(torch.tensor([index]))
        return x[0], y[0]


@dataclass
class ForecastData:
    """The three splits of one dataset plus what is needed to interpret them."""

    train: WindowDataset
    val: WindowDataset
    test: WindowDataset
    scaler: StandardScaler | None
    columns: list[str]
    borders: dict[str, tuple[int, int]]
    path: Path
    notes: list[str] = field(default_factory=list)  # what the reader accepted or detected (logged by training)

    @property
    def n_vars(self) -> int:
        return self.train.data.shape[1]


def load_forecast_data(
    path: str | os.PathLike[str],
    layout: Layout,
    seq_len: int,
    pred_len: int,
    features: Features = "M",
    target: str = "OT",
    scale: bool = True,
    date_column: str = "date",
    delimiter: str | None = None,
    sort_timestamps: bool = False,
    allow_irregular: bool = False,
    known_irregular_rows: Collection[int] = (),
) -> ForecastData:
    """Read, split, scale (train rows only) and window one CSV. Errors name the file and what was expected; the
    reading options are :func:`read_series_csv`'s."""
    if features not in ("M", "S", "MS"):
        raise FFNetError(f"data.features: expected 'M', 'S' or 'MS', got {features!r}")
    if seq_len <= 0 or pred_len <= 0:
        raise FFNetError(f"data.seq_len and data.pred_len must be positive, got {seq_len} and {pred_len}")
    columns, values, notes = read_series_csv(path, target, date_column, delimiter, sort_timestamps, allow_irregular,
                                             known_irregular_rows)
    if features == "S":
        columns, values = columns[-1:], values[:, -1:]
    borders = split_borders(len(values), layout, seq_len)
    for split, (start, end) in borders.items():
        if end - start < seq_len + pred_len:
            raise FFNetError(
                f"{path}: too few rows for seq_len={seq_len} + pred_len={pred_len}: the {split} split has "
                f"{max(0, end - start)} rows (file has {len(values)} rows, layout {layout!r}); "
                f"need at least {seq_len + pred_len} per split"
            )
    scaler = None
    if scale:
        start, end = borders["train"]
        scaler = StandardScaler().fit(values[start:end])
        values = scaler.transform(values)
    target_columns = slice(-1, None) if features == "MS" else slice(None)

    def window(split: str) -> WindowDataset:
        start, end = borders[split]
        return WindowDataset(values[start:end], seq_len, pred_len, target_columns)

    return ForecastData(window("train"), window("val"), window("test"), scaler, columns, borders, Path(path), notes)
