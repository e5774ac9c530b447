"""benchmarks/ts_floor.py: its arithmetic count (the basis of the documented 10-minute floor) must be right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("ffnet_timeseries")

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ts_floor.py"


@pytest.fixture(scope="module")
def floor():
    spec = importlib.util.spec_from_file_location("ts_floor", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_valid_taps_by_hand(floor) -> None:
    # k=51 over 48 positions (padding 25): outputs 0..22 see 26..48 inputs, 23..25 all 48, 26..47 see 47..26
    assert floor._valid_taps(48, 51) == sum(range(26, 49)) + 3 * 48 + sum(range(26, 48))
    assert floor._valid_taps(48, 5) == 48 * 5 - 2 * (2 + 1)  # two missing taps at each end, then one
    assert floor._valid_taps(3, 1) == 3


def test_minimal_count_of_etth1_96_by_hand(floor) -> None:
    from ffnet_timeseries import create_model

    parts = floor.forward_macs(create_model(7, 96, 96, ffn_ratio=2))
    m, d, n = 7, 64, 48
    ffn_weights = (2 * m * d * m) + (m * d * 2 * d) + (m * d * 2 * d) + (m * d * 2 * m)  # 4 grouped 1x1 convs
    assert parts["blocks"] == ffn_weights * n
    assert parts["depthwise"] == m * d * (3 * floor._valid_taps(n, 51) + floor._valid_taps(n, 5))
    assert parts["head"] == 96 * d * n * m
    assert parts["stem"] == d * 4 * m * n


def test_implemented_count_equals_torch_flop_counter(floor) -> None:
    """With the C kernels off every product is a torch op the flop counter sees; the analytic count of what our
    code runs (dense Toeplitz products, the FFN recompute) must match it exactly."""
    from ffnet_timeseries import create_model
    from metamixer.kernels import native

    torch.manual_seed(0)
    model = create_model(5, 96, 24, ffn_ratio=3)
    batch = 8
    expected = 2 * floor.train_macs(floor.forward_macs(model, as_implemented=True)) * batch
    with native.disabled():
        assert floor.counted_train_flops(model, batch) == expected


def test_best_packing(floor) -> None:
    assert floor.best_packing([3.0, 4.0, 5.0, 8.0], 2) == 11.0  # {8, 3} and {5, 4}
    assert floor.best_packing([2.0, 3.0, 5.0, 10.0], 2) == 10.0
    assert floor.best_packing([1.0, 1.0, 1.0, 9.0], 2) == 9.0
