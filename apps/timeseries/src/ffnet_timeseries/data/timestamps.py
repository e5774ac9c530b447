"""Continue a CSV's time axis past its last row: the timestamps of a forecast, at the series' own step.

Why a module: a forecast written without timestamps (or with a step guessed from two rows) cannot be joined back
to the user's data. The step is inferred from the rows the model saw, with pandas' ``infer_freq`` (it knows
calendar frequencies: month ends, month starts, weeks anchored on a weekday, business days), else with the same
calendar rules the loader's time-axis check uses (:mod:`ffnet_timeseries.data.csvcheck`: a fixed duration, one
business day, or k months on one day of the month). Rows that are not evenly spaced are an error naming them.
The timestamps are written in the format of the input's last value when that format can be recognised, so the
forecast rows look like the rows before them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ffnet_timeseries.data.csvcheck import _duration, _grid_steps, parse_time_column
from metamixer.train.errors import FFNetError

__all__ = ["ContinuedAxis", "continue_time_axis"]


class ContinuedAxis(NamedTuple):
    """What :func:`continue_time_axis` found: the new timestamps as text, the step in words, and the history's and
    the new timestamps as values (for plots: datetimes, or numbers for a numeric time index)."""

    values: list[str]
    step: str
    history: list
    future: list


def _irregular(path: Path, column: str, raw: pd.Series, rows: np.ndarray, odd: np.ndarray, expected: str) -> FFNetError:
    i = int(np.flatnonzero(odd)[0])  # step i goes from row i to row i + 1 of the tail
    first, second = int(rows[i]), int(rows[i + 1])
    return FFNetError(
        f"{path}: column {column!r} is not evenly spaced in the rows the forecast continues: data row {second} "
        f"({raw.iloc[i + 1]!r}) follows data row {first} ({raw.iloc[i]!r}), but the expected step is {expected}; "
        "the forecast's timestamps continue the series at one step, so fill the gap in the file (or forecast from "
        "rows without one)"
    )


def _text_format(last: str, stamp: pd.Timestamp) -> str | None:
    """The strftime format of ``last`` when pandas recognises it and it reproduces ``last`` exactly."""
    from pandas.tseries.api import guess_datetime_format

    fmt = guess_datetime_format(last)
    if fmt is None:
        return None
    for candidate in (fmt, fmt.replace("%z", "%:z")):  # "+02:00" is %:z (Python >= 3.12), "+0200" %z
        try:
            if stamp.strftime(candidate) == last:
                return candidate
        except ValueError:
            continue
    return None


def _numeric_axis(raw: pd.Series, stamps: np.ndarray, steps: int, path: Path, column: str, rows: np.ndarray) -> ContinuedAxis:
    diffs = np.diff(stamps)
    if diffs.dtype.kind == "f":
        scale = float(np.median(np.abs(diffs))) or 1.0
        values, counts = np.unique(np.round(diffs / scale, 6), return_counts=True)
        step = float(values[int(np.argmax(counts))] * scale)
        odd = ~np.isclose(diffs, step, rtol=1e-6, atol=0)
    else:
        values, counts = np.unique(diffs, return_counts=True)
        step = values[int(np.argmax(counts))]
        odd = diffs != step
    if odd.any() or step <= 0:
        raise _irregular(path, column, raw, rows, odd if odd.any() else diffs <= 0, f"{step:g}")
    future = stamps[-1] + step * np.arange(1, steps + 1)
    text = [repr(float(v)) if future.dtype.kind == "f" else str(int(v)) for v in future]
    return ContinuedAxis(text, f"{step:g}", list(stamps), list(future))


def continue_time_axis(raw: pd.Series, steps: int, path: str | Path = "CSV", column: str = "date",
                       rows: np.ndarray | None = None) -> ContinuedAxis:
    """The ``steps`` timestamps after the last value of ``raw`` (the history's time column, in time order;
    ``rows``: the file's 1-based data row of each value, so errors name them; default 1, 2, ...).

    Dates: the step is ``pd.infer_freq``'s when it finds one (calendar frequencies included: ``ME``, ``MS``,
    ``W-TUE``, ``B``, ``h``, ``10min``, ...); else the loader's calendar rules (one business day, k months on one day
    of the month, or a fixed duration) when every step of ``raw`` is that one; else an error naming the first
    uneven step's rows. Times with UTC offsets are continued in UTC and written with the last row's offset. A
    numeric column (a plain time index) continues by its constant difference."""
    path = Path(path)
    raw = raw.reset_index(drop=True)
    rows = np.arange(1, len(raw) + 1) if rows is None else np.asarray(rows)
    if len(raw) < 2:
        raise FFNetError(f"{path}: column {column!r}: the step of the time axis cannot be inferred from one row")
    stamps, is_date = parse_time_column(raw, path, column)
    if not is_date:
        return _numeric_axis(raw, stamps, steps, path, column, rows)
    diffs = np.diff(stamps)
    if (diffs <= 0).any():
        raise _irregular(path, column, raw, rows, diffs <= 0, "a positive duration")
    index = pd.DatetimeIndex(stamps.view("datetime64[ns]"))
    freq = None
    if len(index) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas 3 announces that infer_freq will return an offset: both work below
            found = pd.infer_freq(index)
        freq = pd.tseries.frequencies.to_offset(found) if found is not None else None
    if freq is not None:
        future = pd.date_range(index[-1], periods=steps + 1, freq=freq)[1:]
        step = _duration(int(freq.nanos)) if isinstance(freq, pd.offsets.Tick) else freq.freqstr  # "1h"; "W-TUE", "ME"
    else:
        grid, dominant, expected = _grid_steps(stamps, True)
        odd = grid != dominant
        if odd.any():
            raise _irregular(path, column, raw, rows, odd, expected)
        if expected.endswith(("month", "months")):
            month_step = pd.offsets.MonthEnd(int(dominant)) if index.is_month_end.all() else pd.DateOffset(months=int(dominant))
            future = pd.DatetimeIndex([index[-1] + month_step * k for k in range(1, steps + 1)])
        elif expected == "1 business day":
            future = pd.bdate_range(index[-1], periods=steps + 1)[1:]
        else:
            future = index[-1] + pd.to_timedelta(np.arange(1, steps + 1) * int(dominant), unit="ns")
        step = expected
    last_text = str(raw.iloc[-1]).strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        local_last = pd.to_datetime(last_text, errors="coerce", format="ISO8601")
        if pd.isna(local_last):
            local_last = pd.to_datetime(last_text, errors="coerce")
    history = list(index)
    if local_last is not None and not pd.isna(local_last) and local_last.tzinfo is not None:
        future = future.tz_localize("UTC").tz_convert(local_last.tzinfo)
        history = list(index.tz_localize("UTC").tz_convert(local_last.tzinfo))
        stamp = index[-1].tz_localize("UTC").tz_convert(local_last.tzinfo)
    else:
        stamp = index[-1]
    fmt = _text_format(last_text, stamp)
    sep = "T" if "T" in last_text else " "
    text = [t.strftime(fmt) if fmt else t.isoformat(sep=sep) for t in future]
    return ContinuedAxis(text, step, history, list(future))
