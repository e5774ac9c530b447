"""Forecasting metrics with the Time-Series-Library definitions, computed exactly over all windows.

All are means over every (window, step, variable) element, so the last partial batch weighs by its size (the
authors' per-epoch printout averaged per-batch losses instead; we never do).
MAE = mean|p-t|, MSE = mean (p-t)^2, RMSE = sqrt(MSE), MAPE = mean|(p-t)/t|, MSPE = mean ((p-t)/t)^2,
RSE = sqrt(sum (t-p)^2) / sqrt(sum (t - mean t)^2). MAPE/MSPE are inf when a target is exactly 0, as in TSLib.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["forecast_metrics", "MetricAccumulator", "METRIC_NAMES"]

METRIC_NAMES = ("mse", "mae", "rmse", "mape", "mspe", "rse")


def forecast_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Reference (whole-array) implementation: ``pred``/``true`` of equal shape ``[windows, pred_len, vars]``."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must have the same shape")
    err = pred - true
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = err / true
    mse = float(np.mean(err**2))
    return {
        "mse": mse,
        "mae": float(np.mean(np.abs(err))),
        "rmse": math.sqrt(mse),
        "mape": float(np.mean(np.abs(rel))),
        "mspe": float(np.mean(rel**2)),
        "rse": float(np.sqrt(np.sum(err**2)) / np.sqrt(np.sum((true - true.mean()) ** 2))),
    }


class MetricAccumulator:
    """Streaming float64 sums giving the same numbers as :func:`forecast_metrics` without keeping all windows
    (Weather pl720 test predictions alone would be ~0.6 GB). ``state()`` / ``merge`` let DDP ranks combine sums."""

    _KEYS = ("n", "abs", "sq", "abs_rel", "sq_rel", "t", "t2")

    def __init__(self) -> None:
        self.sums = torch.zeros(len(self._KEYS), dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        pred = pred.detach().to("cpu", torch.float64)
        true = true.detach().to("cpu", torch.float64)
        err = pred - true
        rel = err / true
        self.sums += torch.stack(
            [
                torch.tensor(float(err.numel()), dtype=torch.float64),
                err.abs().sum(),
                (err**2).sum(),
                rel.abs().sum(),
                (rel**2).sum(),
                true.sum(),
                (true**2).sum(),
            ]
        )

    def compute(self) -> dict[str, float]:
        n, s_abs, s_sq, s_abs_rel, s_sq_rel, s_t, s_t2 = (float(v) for v in self.sums)
        if n == 0:
            raise ValueError("no predictions were accumulated")
        mse = s_sq / n
        spread = s_t2 - s_t * s_t / n
        return {
            "mse": mse,
            "mae": s_abs / n,
            "rmse": math.sqrt(mse),
            "mape": s_abs_rel / n,
            "mspe": s_sq_rel / n,
            "rse": math.sqrt(s_sq) / math.sqrt(spread) if spread > 0 else float("nan"),
            "count": int(n),
        }
