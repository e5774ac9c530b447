"""Forecasting data: CSV reading with clear errors, TSLib splits, train-only scaling, stride-1 windows, loaders."""

from ffnet_timeseries.data.dataset import (
    DATASETS,
    DatasetSpec,
    ForecastData,
    StandardScaler,
    WindowDataset,
    load_forecast_data,
    split_borders,
)
from ffnet_timeseries.data.loader import WindowLoader, few_steps_advice

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ForecastData",
    "StandardScaler",
    "WindowDataset",
    "WindowLoader",
    "few_steps_advice",
    "load_forecast_data",
    "split_borders",
]
