"""``ffnet-ts-predict --checkpoint CKPT [--data CSV] --output forecast.csv [--plot forecast.png]``

Forecasts the ``pred_len`` steps after the end of a CSV: reads its last ``seq_len`` rows (the checkpoint's training
CSV by default), scales them with the checkpoint's train-split scaler, runs the model and writes the forecast in
data units, with timestamps that continue the CSV's own step (:mod:`ffnet_timeseries.data.timestamps`), the date
column named and formatted as in the input, and the input's columns in the input's order (``features=M``; with
``S`` / ``MS`` the model forecasts the target only, so the file has the date and the target). ``--plot`` adds a PNG of
the history and the forecast (the target first, then up to three other variables).

The CSV is read with the checkpoint's reading settings (delimiter, ``sort_timestamps``, ``allow_irregular``) and the
loader's checks, and must hold the checkpoint's columns (any order: variables are matched by name). Each problem
(fewer rows than ``seq_len``, other columns, an uneven step, a date that does not parse, an output that cannot be
written) is one ``error:`` line naming the file, before anything is written.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ffnet_timeseries.builders import build_data, build_model, resolve_data_file
from ffnet_timeseries.config import TSConfig, upgrade_config
from ffnet_timeseries.data import DATASETS, StandardScaler
from ffnet_timeseries.data.csvcheck import parse_time_column, resolve_delimiter
from ffnet_timeseries.data.dataset import read_series_csv
from ffnet_timeseries.data.timestamps import continue_time_axis
from metamixer.train.amp import autocast
from metamixer.train.atomic import atomic_write
from metamixer.train.checkpoint import load_checkpoint, load_state_dict_checked
from metamixer.train.cli import build_eval_parser
from metamixer.train.config import config_from_dict
from metamixer.train.device import resolve_device
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.outputs import check_output_file

__all__ = ["Forecast", "forecast_csv", "write_forecast", "plot_forecast", "main", "cli"]


@dataclass
class Forecast:
    """One forecast: ``frame`` is what the CSV gets (the date column and the forecast columns, data units);
    ``history`` the last ``seq_len`` input rows of the same columns; ``step`` the continued step in words."""

    frame: pd.DataFrame
    history: pd.DataFrame
    history_times: list
    future_times: list
    date_column: str
    target: str
    step: str
    delimiter: str
    source: Path


def _checkpoint_state(checkpoint: Path) -> tuple[dict[str, Any], TSConfig]:
    ckpt = load_checkpoint(checkpoint)
    if not ckpt.get("config"):
        raise FFNetError(f"{checkpoint}: checkpoint has no config; cannot rebuild the model, its columns and scaler")
    cfg = config_from_dict(TSConfig, upgrade_config(ckpt["config"]), source=str(checkpoint))
    return ckpt, cfg


def _columns_and_scaler(ckpt: dict[str, Any], cfg: TSConfig) -> tuple[list[str], StandardScaler | None]:
    """The model's columns (its variable order) and train-split scaler: stored in the checkpoint by this version's
    training; older checkpoints get them again from their training CSV (same split, same numbers)."""
    task = ckpt.get("extra", {}).get("task", {})
    if "columns" in task and "scaler" in task:
        scaler = None
        if task["scaler"] is not None:
            scaler = StandardScaler()
            scaler.mean = np.asarray(task["scaler"]["mean"], dtype=np.float64)
            scaler.std = np.asarray(task["scaler"]["std"], dtype=np.float64)
        return list(task["columns"]), scaler
    data = build_data(cfg.data)
    return list(data.columns), data.scaler


def _header(path: Path, sep: str) -> list[str]:
    try:
        frame = pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8-sig", encoding_errors="replace")
    except Exception as exc:  # pandas raises many parser error types (an empty file: EmptyDataError)
        raise FFNetError(f"{path}: could not be read as CSV with delimiter {sep!r} ({exc})") from None
    return [str(c).strip() for c in frame.columns]


def _check_columns(path: Path, header: list[str], cfg: TSConfig, columns: list[str]) -> None:
    """The CSV must hold the checkpoint's columns (``S``: the target; other columns are then not read)."""
    date, target = cfg.data.date_column, cfg.data.target
    given = [c for c in header if c != date]
    wanted = [target] if cfg.data.features == "S" else columns
    missing = [c for c in wanted if c not in given] + ([date] if date not in header else [])
    extra = [] if cfg.data.features == "S" else [c for c in given if c not in wanted]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"not in the checkpoint {extra}"] if extra else [])
        raise FFNetError(f"{path}: columns differ from the checkpoint's ({'; '.join(parts)}): the model was trained on "
                         f"{date!r} + {wanted} (features={cfg.data.features}); give a CSV with these columns")


def forecast_csv(checkpoint: str | Path, data: str | Path | None = None, device: str = "auto") -> Forecast:
    """Forecast the ``pred_len`` steps after the last row of ``data`` (default: the checkpoint's training CSV)."""
    checkpoint = Path(checkpoint)
    ckpt, cfg = _checkpoint_state(checkpoint)
    try:
        train_path: Path | None = resolve_data_file(cfg.data)[0]
    except FFNetError:
        if data is None:
            raise
        train_path = None  # the training CSV is not on this machine: --data is all that is needed
    path = Path(data) if data is not None else train_path
    if not path.is_file():
        raise FFNetError(f"--data: CSV file not found: {path}")
    columns, scaler = _columns_and_scaler(ckpt, cfg)
    sep, _ = resolve_delimiter(path, cfg.data.delimiter)
    header = _header(path, sep)
    _check_columns(path, header, cfg, columns)
    spec = DATASETS.get(cfg.data.dataset)
    own_file = spec is not None and train_path is not None and path.resolve() == train_path.resolve()
    read = read_series_csv(path, cfg.data.target, cfg.data.date_column, cfg.data.delimiter, cfg.data.sort_timestamps,
                           cfg.data.allow_irregular, spec.known_irregular_rows if own_file else ())
    model_columns = [cfg.data.target] if cfg.data.features == "S" else columns
    values = read.values[:, [read.columns.index(c) for c in model_columns]]
    seq_len, pred_len = cfg.data.seq_len, cfg.data.pred_len
    if len(values) < seq_len:
        raise FFNetError(f"{path}: has {len(values)} data rows, but the model forecasts from the last "
                         f"seq_len={seq_len} rows; give a CSV with at least {seq_len} rows")
    dates = pd.read_csv(path, sep=sep, usecols=lambda c: str(c).strip() == cfg.data.date_column, encoding="utf-8-sig",
                        encoding_errors="replace").iloc[:, 0]
    order = np.arange(len(dates))
    if cfg.data.sort_timestamps:  # the same stable sort the loader applied to the values
        order = np.argsort(parse_time_column(dates, path, cfg.data.date_column)[0], kind="stable")
    tail = order[-max(seq_len, min(3, len(order))):]
    axis = continue_time_axis(dates.iloc[tail], pred_len, path, cfg.data.date_column, rows=tail + 1)

    history = values[-seq_len:]
    x = scaler.transform(history) if scaler is not None else history
    dev = resolve_device(device, key="--device")
    model = build_model(cfg.model, len(model_columns), seq_len, pred_len)
    load_state_dict_checked(model, ckpt["model"], str(checkpoint))
    model = model.to(dev).eval()
    with torch.no_grad(), autocast(dev, cfg.run.precision):
        out = model(torch.as_tensor(x, dtype=torch.float32, device=dev)[None])
    pred = out[0].float().cpu().numpy().astype(np.float64)
    out_columns = model_columns
    if cfg.data.features == "MS":  # the model forecasts every input, but only the target was trained and scored
        pred, out_columns = pred[:, -1:], [cfg.data.target]
    if scaler is not None:
        cols = slice(-1, None) if cfg.data.features == "MS" else slice(None)
        pred = pred * scaler.std[cols] + scaler.mean[cols]
    in_order = [c for c in header if c in out_columns or c == cfg.data.date_column]  # the input's column order
    frame = pd.DataFrame({cfg.data.date_column: axis.values, **{c: pred[:, out_columns.index(c)] for c in out_columns}})
    past = pd.DataFrame({c: history[:, model_columns.index(c)] for c in out_columns})
    return Forecast(frame[in_order], past, axis.history[-seq_len:], axis.future, cfg.data.date_column,
                    cfg.data.target, axis.step, sep, path)


def _writable(path: Path | None, option: str) -> Path | None:
    """Refuse an output that cannot be written before any work (core's check, then the folder's permissions)."""
    path = check_output_file(path, option)
    if path is not None:
        above = next(p for p in (path.parent.resolve(), *path.parent.resolve().parents) if p.exists())
        if not os.access(above, os.W_OK | os.X_OK):
            raise FFNetError(f"{option} {path}: the folder {above} is not writable")
    return path


def _write(path: Path, data: bytes, option: str) -> Path:
    try:
        return atomic_write(path, lambda handle: handle.write(data))
    except OSError as exc:
        raise FFNetError(f"{option} {path}: could not be written ({exc.strerror or exc})") from None


def write_forecast(result: Forecast, path: str | Path) -> Path:
    """The forecast CSV, atomically, with the input's delimiter; floats as Python writes them (round-trip exact)."""
    text = result.frame.to_csv(index=False, sep=result.delimiter)
    return _write(Path(path), text.encode("utf-8"), "--output")


def plot_forecast(result: Forecast, path: str | Path, variables: int = 4) -> Path:
    """History (the last ``seq_len`` rows) and forecast of the target and up to ``variables - 1`` other columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c for c in result.history.columns if c == result.target]
    names += [c for c in result.history.columns if c != result.target][: max(0, variables - len(names))]
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 2.3 * len(names)), squeeze=False, sharex=True)
    for ax, name in zip(axes[:, 0], names, strict=True):
        ax.plot(result.history_times, result.history[name], color="0.35", label="history")
        ax.plot([result.history_times[-1], *result.future_times],
                [result.history[name].iloc[-1], *result.frame[name]], color="tab:red", label="FFNet forecast")
        ax.axvline(result.history_times[-1], color="0.8", lw=1)
        ax.set_ylabel(name)
    axes[0, 0].set_title(f"{result.source.name}: last {len(result.history)} rows and {len(result.frame)}-step forecast "
                         f"(step {result.step}, data units)")
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return _write(Path(path), buffer.getvalue(), "--plot")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_eval_parser("ffnet-ts-predict", "Forecast the steps after the end of a CSV with an FFNet-TS "
                               "checkpoint (data units, continued timestamps).", overrides=False, output_required=True)
    parser.add_argument("--data", metavar="CSV", default=None, help="CSV to forecast from (default: the checkpoint's "
                        "training CSV); its last seq_len rows are the history")
    parser.add_argument("--plot", metavar="PNG", default=None, help="also write a plot of the history and forecast")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps")
    parser.epilog = None  # the shared epilog is about key=value overrides, which this command does not take
    helps = {"output": ("forecast CSV to write (date column + forecast columns)", "CSV"),
             "checkpoint": ("a checkpoint of ours (best.pth / last.pth: it holds the config, columns and scaler)", "CKPT")}
    for action in parser._actions:  # the shared parser's help speaks of results.json and official weights
        if action.dest in helps:
            action.help, action.metavar = helps[action.dest]
    args = parser.parse_args(argv)
    output, plot = _writable(Path(args.output), "--output"), _writable(Path(args.plot) if args.plot else None, "--plot")
    if plot is not None:
        if plot.resolve() == output.resolve():
            raise FFNetError(f"--plot {plot}: is the same file as --output")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise FFNetError("--plot needs matplotlib: pip install 'ffnet-timeseries[plot]'") from None
    if args.data is not None and Path(args.data).resolve() == output.resolve():
        raise FFNetError(f"--output {output}: is the input CSV (--data); choose another file")
    result = forecast_csv(args.checkpoint, args.data, args.device)
    if result.source.resolve() == output.resolve():
        raise FFNetError(f"--output {output}: is the checkpoint's training CSV; choose another file")
    write_forecast(result, output)
    if plot is not None:
        plot_forecast(result, plot)
    first, last = result.frame.iloc[0, 0], result.frame.iloc[-1, 0]
    print(f"{result.source.name}: forecast {len(result.frame)} steps of {list(result.history.columns)} from {first} to "
          f"{last} (step {result.step}); wrote {output}" + (f" and {plot}" if plot is not None else ""))
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
