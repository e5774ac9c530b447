"""Turn a :class:`TSConfig` into data and a model (shared by train, evaluate, reproduce and quickstart)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ffnet_timeseries.config import DataConfig, ModelConfig, TSConfig
from ffnet_timeseries.data import DATASETS, ForecastData, load_forecast_data
from ffnet_timeseries.models import FFNetTS, create_model
from metamixer.train.datadir import data_path, data_root
from metamixer.train.errors import FFNetError

__all__ = ["resolve_data_file", "build_data", "build_model", "model_memory_report"]


def resolve_data_file(cfg: DataConfig) -> tuple[Path, str]:
    """The CSV path and split layout for ``cfg`` (benchmark name -> its file under the data root)."""
    spec = DATASETS.get(cfg.dataset)
    layout = cfg.layout or (spec.layout if spec else "custom")
    if cfg.path is not None:
        path = Path(cfg.path).expanduser()
        if not path.is_absolute() and not path.exists() and (data_root() / path).exists():
            path = data_root() / path
        if not path.exists():
            raise FFNetError(f"data.path: CSV file not found: {path}")
        return path, layout
    if spec is None:
        raise FFNetError(
            f"data.dataset={cfg.dataset!r} is not a known benchmark ({', '.join(DATASETS)}); "
            "for your own CSV set data.path=FILE (and data.layout=custom)"
        )
    return data_path(spec.path, what=f"{cfg.dataset} CSV"), layout


def build_data(cfg: DataConfig) -> ForecastData:
    """Load ``cfg``'s CSV; a benchmark name also brings its documented irregular rows (kept, as TSLib does)."""
    path, layout = resolve_data_file(cfg)
    spec = DATASETS.get(cfg.dataset)
    return load_forecast_data(
        path, layout, cfg.seq_len, cfg.pred_len, cfg.features, cfg.target, cfg.scale, cfg.date_column,  # type: ignore[arg-type]
        delimiter=cfg.delimiter, sort_timestamps=cfg.sort_timestamps, allow_irregular=cfg.allow_irregular,
        known_irregular_rows=spec.known_irregular_rows if spec else (),
    )


def build_model(cfg: ModelConfig, n_vars: int, seq_len: int, pred_len: int) -> FFNetTS:
    """The ``model`` section through the one factory, :func:`~ffnet_timeseries.models.create_model` (every
    section key is one of its options, under the same name)."""
    if len(cfg.token_dropouts) != 2:
        raise FFNetError(f"model.token_dropouts: expected two values [hidden, out], got {cfg.token_dropouts}")
    options = dataclasses.asdict(cfg)
    options["token_dropouts"] = tuple(options["token_dropouts"])
    return create_model(n_vars, seq_len, pred_len, **options)


def model_memory_report(model: torch.nn.Module, cfg: TSConfig, n_vars: int) -> str:
    """One line on size, because the cross-variable 1x1 convs grow with M^2 (Traffic, 862 vars: ~725M params)."""
    n = sum(p.numel() for p in model.parameters())
    cross = sum(
        p.numel() for name, p in model.named_parameters() if name.endswith(("token_mixer.ffnpw1.weight", "channel_mixer.ffnpw2.weight"))
    )
    mib = n * 4 / 2**20
    train_mib = mib * 4  # weights + grads + Adam moments
    return (
        f"model: {n:,} parameters ({mib:.1f} MiB fp32, ~{train_mib:.0f} MiB with grads + Adam) for M={n_vars} variables; "
        f"{cross:,} of them in the cross-variable 1x1 convs, which grow with M^2 "
        f"(use model.mixing=channel_independent for many variables)"
    )
