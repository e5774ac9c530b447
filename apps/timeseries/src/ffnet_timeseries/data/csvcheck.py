"""Checks that a forecasting CSV is what the windows assume: one delimiter, rows in time order, one step per row.

Why: a TSLib-style loader takes row order as time order and one row as one time step. A file with duplicated,
out-of-order or gapped timestamps still trains, but its windows mix unrelated times and its scores mean nothing,
and a semicolon-separated file reads as one column. These checks turn each case into one :class:`FFNetError`
naming the file, the column, the first offending data row (1-based, header not counted) and its value, or into a
note when an option (``data.sort_timestamps``, ``data.allow_irregular``) or a benchmark's known defect accepts it.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Collection
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from metamixer.train.errors import FFNetError

__all__ = ["DELIMITERS", "check_time_axis", "delimiter_hint", "detect_delimiter", "parse_time_column", "resolve_delimiter"]

#: ``data.delimiter`` values -> the character (names too: ``,`` and ``|`` are not plain YAML / shell values)
DELIMITERS = {",": ",", ";": ";", "\t": "\t", "|": "|", "comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}
_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_DAY = 86_400 * 10**9
_SAMPLE_LINES = 20


def _field_counts(lines: list[str], delimiter: str) -> list[int]:
    return [len(row) for row in csv.reader(lines, delimiter=delimiter) if row]


def detect_delimiter(path: str | os.PathLike[str]) -> str:
    """The delimiter of ``path`` from its header and first data lines: the candidate that splits the header into
    more than one field and every sampled line into the same number (comma first, then the most fields); comma
    when none does (the column checks then report what was read)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        lines = list(islice(handle, _SAMPLE_LINES))
    consistent = []
    for delimiter in _NAMES:
        counts = _field_counts(lines, delimiter)
        if counts and counts[0] > 1 and all(c == counts[0] for c in counts):
            consistent.append((delimiter != ",", -counts[0], delimiter))
    return min(consistent)[2] if consistent else ","


def resolve_delimiter(path: Path, setting: str | None) -> tuple[str, str | None]:
    """(the delimiter to read ``path`` with, a note when it was detected as something other than a comma)."""
    if setting is not None:
        if setting not in DELIMITERS:
            raise FFNetError(f"data.delimiter: expected one of {', '.join(map(repr, DELIMITERS))} or null, got {setting!r}")
        return DELIMITERS[setting], None
    found = detect_delimiter(path)
    if found == ",":
        return found, None
    return found, (f"{path} read as {_NAMES[found]}-separated ({found!r}, detected from the header); "
                   f"set data.delimiter to choose another")


def delimiter_hint(path: Path, columns: list[str], used: str) -> str:
    """Extra words for a missing-column error when the header was split with the wrong delimiter."""
    if len(columns) > 1:
        return ""
    found = detect_delimiter(path)
    if found != used:
        return f"; the header looks {_NAMES[found]}-separated: set data.delimiter={_NAMES[found]} (or null to detect it)"
    return (f"; the header was read as one column with delimiter {used!r}: set data.delimiter to the file's separator "
            f"({', '.join(_NAMES.values())})")


def parse_time_column(raw: pd.Series, path: Path, column: str) -> tuple[np.ndarray, bool]:
    """(timestamps as int64 nanoseconds since the epoch in UTC, or the column's numbers; whether they are dates).

    A numeric column is a plain time index (its steps are numbers). Text is parsed with the format pandas infers
    from the first value (then ISO 8601 if some values failed); offsets are converted to UTC so steps across a
    daylight-saving change are real durations."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(np.int64 if pd.api.types.is_integer_dtype(raw.dtype) else np.float64), False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format": the failed rows are reported below
        parsed = pd.to_datetime(raw, errors="coerce", utc=True)
        if parsed.isna().any():
            iso = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
            parsed = iso if iso.isna().sum() < parsed.isna().sum() else parsed
    bad = parsed.isna().to_numpy()
    if bad.all():
        raise FFNetError(f"{path}: column {column!r} does not hold dates or times (data row 1: {raw.iloc[0]!r}); "
                         "expected dates in one format (e.g. 2016-07-01 00:00:00) or plain numbers (a time index)")
    if bad.any():
        row, first_ok = int(np.flatnonzero(bad)[0]), int(np.flatnonzero(~bad)[0])
        raise FFNetError(f"{path}: column {column!r} has {raw.iloc[row]!r} at data row {row + 1}, which is not a date "
                         f"or time in the format of data row {first_ok + 1} ({raw.iloc[first_ok]!r})")
    return parsed.dt.tz_convert(None).to_numpy("datetime64[ns]").view(np.int64), True


def _duration(ns: int) -> str:
    """``600000000000`` -> ``10min``; ``6000000000000`` -> ``1h 40min``; ``7 * day`` -> ``7 days``."""
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(int(ns))
    days, rest = divmod(ns, _DAY)
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    for unit, size in (("h", 3600 * 10**9), ("min", 60 * 10**9), ("s", 10**9)):
        count, rest = divmod(rest, size)
        parts += [f"{count}{unit}"] if count else []
    parts += [f"{rest}ns"] if rest else []
    return sign + " ".join(parts)


def _mode(values: np.ndarray) -> float:
    unique, counts = np.unique(values, return_counts=True)
    return unique[int(np.argmax(counts))]


def _grid_steps(stamps: np.ndarray, is_date: bool) -> tuple[np.ndarray, object, str]:
    """(the step of each row in the series' own unit, the dominant step, its description).

    Fixed durations for most data; for dates whose dominant step is one day and that are all weekdays, business
    days (Friday -> Monday is one step); for dates on one day of the month (or all month ends) a step of >= 28
    days counts months, so monthly, quarterly and yearly series are regular."""
    steps = np.diff(stamps)
    if not is_date:
        if steps.dtype.kind == "f":  # floats: the mode of steps rounded to a millionth of the median step
            scale = float(np.median(np.abs(steps))) or 1.0
            dominant = _mode(np.round(steps / scale, 6)) * scale
            return np.where(np.isclose(steps, dominant, rtol=1e-6, atol=0), dominant, steps), dominant, f"{dominant:g}"
        dominant = _mode(steps)
        return steps, dominant, f"{dominant}"
    dominant = int(_mode(steps[steps > 0])) if (steps > 0).any() else 0
    index = pd.DatetimeIndex(stamps.view("datetime64[ns]"))
    same_time = len(np.unique(stamps % _DAY)) == 1  # every row at one time of day: a calendar grid may apply
    if not same_time or (steps == dominant).all():
        return steps, dominant, _duration(dominant)
    if dominant == _DAY and (index.day_of_week < 5).all():
        days = stamps // _DAY
        business = np.busday_count(days[:-1].astype("datetime64[D]"), days[1:].astype("datetime64[D]"))
        return business, 1, "1 business day"
    same_day = len(np.unique(index.day)) == 1 or bool(index.is_month_end.all())
    if dominant >= 28 * _DAY and same_day:
        months = np.diff(index.year.to_numpy() * 12 + index.month.to_numpy())
        k = int(_mode(months[months > 0])) if (months > 0).any() else 1
        return np.where(steps > 0, months, 0), k, f"{k} month{'s' if k != 1 else ''}"
    return steps, dominant, _duration(dominant)


def check_time_axis(
    path: Path,
    column: str,
    raw: pd.Series,
    sort: bool = False,
    allow_irregular: bool = False,
    known_rows: Collection[int] = (),
) -> tuple[np.ndarray | None, list[str]]:
    """Check the time column ``raw`` of ``path``; returns (a row order to apply, or None to keep the file's order;
    notes to log). ``known_rows``: data rows (1-based) of a benchmark file's documented defects, kept as is."""
    if len(raw) < 2:
        return None, []  # no step to check; the split check reports a file this short
    stamps, is_date = parse_time_column(raw, path, column)
    notes: list[str] = []
    order = None
    if sort:
        order = np.argsort(stamps, kind="stable")
        moved = int((order != np.arange(len(order))).sum())
        if moved:
            stamps = stamps[order]
            notes.append(f"{path}: sorted by {column!r} (data.sort_timestamps=true): {moved} rows moved")
        else:
            order = None
    rows = order if order is not None else np.arange(len(stamps))  # file row (0-based) of each sorted position

    def show(position: int) -> str:
        value = raw.iloc[rows[position]]
        return f"data row {rows[position] + 1} ({(value.item() if hasattr(value, 'item') else value)!r})"

    def step_text(step: float) -> str:
        return _duration(int(step)) if is_date else f"{step:g}"

    steps = np.diff(stamps)
    known = np.isin(rows[1:] + 1, np.fromiter(known_rows, dtype=np.int64, count=len(known_rows)))
    backwards = np.flatnonzero(steps < 0)
    if backwards.size:
        i = int(backwards[0])
        descending = " (the whole file is in descending order, newest first)" if (steps < 0).all() else ""
        raise FFNetError(f"{path}: column {column!r} is not in increasing time order: {show(i + 1)} is earlier than "
                         f"{show(i)}{descending}; sort the file by time, or set data.sort_timestamps=true to sort "
                         "the rows when loading")
    repeats = np.flatnonzero((steps == 0) & ~known)
    if repeats.size:
        i = int(repeats[np.argmin(rows[repeats + 1])])
        raise FFNetError(f"{path}: column {column!r} has a duplicate timestamp at {show(i + 1)}: the same as "
                         f"data row {rows[i] + 1}; remove or merge the duplicate rows in the file (no option accepts "
                         "duplicates: which row is right, or whether to average them, is a choice about the data, and "
                         "keeping both puts a zero-length step into the windows)")
    grid, dominant, expected = _grid_steps(stamps, is_date)
    odd = (grid != dominant) & (steps != 0)
    irregular = np.flatnonzero(odd & ~known)
    if irregular.size:
        i = int(irregular[0])
        gap = step_text(steps[i])
        share = 100.0 * float((~odd).sum()) / len(steps)
        what = (f"{path}: column {column!r} is not evenly spaced: {show(i + 1)} comes {gap} after {show(i)}, but the "
                f"expected step is {expected} ({share:.1f}% of the steps); {irregular.size} of {len(steps)} steps "
                f"{'differs' if irregular.size == 1 else 'differ'}")
        if not allow_irregular:
            raise FFNetError(f"{what}. Fill the gaps in the file, or set data.allow_irregular=true to use the rows as "
                             "they are (each row still counts as one step)")
        notes.append(f"{what} (accepted: data.allow_irregular=true)")
    kept = [int(p) for p in np.flatnonzero(known & (odd | (steps == 0)))]
    if kept:
        listed = ", ".join(f"{show(p + 1)}: {'a repeat' if steps[p] == 0 else 'a step of ' + step_text(steps[p])}"
                           for p in kept)
        notes.append(f"{path}: kept the benchmark file's known irregular steps as TSLib reads them (expected step "
                     f"{expected}): {listed}")
    return order, notes
