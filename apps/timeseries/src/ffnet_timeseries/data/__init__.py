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
from ffnet_timeseries.data.loader import WindowLoader

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ForecastData",
    "StandardScaler",
    "WindowDataset",
    "WindowLoader",
    "load_forecast_data",
    "split_borders",
]
