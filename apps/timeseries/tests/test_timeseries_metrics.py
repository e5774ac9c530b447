"""Metric definitions (TSLib) and the learning-rate schedule quirk, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ffnet_timeseries.metrics import MetricAccumulator, forecast_metrics
from ffnet_timeseries.schedule import epoch_schedule, lr_at_epoch
from metamixer.train.errors import FFNetError


def test_metric_values_by_hand() -> None:
    pred = np.array([[[1.0], [2.0]], [[3.0], [5.0]]])
    true = np.array([[[2.0], [2.0]], [[1.0], [4.0]]])
    m = forecast_metrics(pred, true)
    err = [-1.0, 0.0, 2.0, 1.0]
    assert m["mse"] == pytest.approx(sum(e * e for e in err) / 4)  # 1.5
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(1.5))
    assert m["mape"] == pytest.approx((0.5 + 0 + 2 + 0.25) / 4)
    assert m["mspe"] == pytest.approx((0.25 + 0 + 4 + 0.0625) / 4)
    t = np.array([2.0, 2.0, 1.0, 4.0])
    assert m["rse"] == pytest.approx(math.sqrt(6.0) / math.sqrt(((t - t.mean()) ** 2).sum()))


def test_streaming_accumulator_equals_whole_array_metrics() -> None:
    rng = np.random.default_rng(0)
    pred, true = rng.normal(size=(37, 12, 3)), rng.normal(size=(37, 12, 3)) + 0.3
    acc = MetricAccumulator()
    for start in range(0, 37, 8):  # uneven last batch must weigh by its size
        acc.update(torch.tensor(pred[start : start + 8]), torch.tensor(true[start : start + 8]))
    got, ref = acc.compute(), forecast_metrics(pred, true)
    assert got["count"] == 37 * 12 * 3
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-9)


def test_official_type3_schedule_reproduces_the_authors_lr() -> None:
    lrs = [lr_at_epoch("official_type3", 1e-4, e) for e in range(1, 8)]
    assert lrs == pytest.approx([4e-6, 1e-4, 1e-4, 1e-4, 9e-5, 8.1e-5, 7.29e-5])
    assert lr_at_epoch("type3", 1e-4, 1) == 1e-4
    with pytest.raises(FFNetError, match="unknown per-epoch schedule"):
        lr_at_epoch("nope", 1e-4, 1)
    lr = epoch_schedule("official_type3", 1e-4, steps_per_epoch=3)  # the engine's lr(step): epoch = step // 3 + 1
    assert [lr(s) for s in range(7)] == pytest.approx([4e-6] * 3 + [1e-4] * 3 + [1e-4])
    assert epoch_schedule("type1", 1.0, 2)(4) == 0.25
