"""ModelEMA against its closed form, AMP switches and seeding."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from metamixer.train import amp
from metamixer.train.amp import autocast, cpu_runs_fast, make_grad_scaler, precision_dtype
from metamixer.train.ema import ModelEMA
from metamixer.train.errors import FFNetError
from metamixer.train.seed import make_generator, seed_everything, seed_worker


# ------------------------------------------------------------------------------------------------ EMA
def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def _expected(w0: torch.Tensor, values: list[float], decays: list[float]) -> torch.Tensor:
    """Closed form: ema_n = prod(d) * w0 + sum_i (1 - d_i) * prod_{j>i} d_j * c_i (in float64)."""
    out = w0.double() * float(np.prod(decays))
    for i, c in enumerate(values):
        out += (1 - decays[i]) * float(np.prod(decays[i + 1:])) * c
    return out


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_matches_closed_form(warmup: bool) -> None:
    model = _bn_model()
    w0 = model[0].weight.detach().clone()
    ema = ModelEMA(model, decay=0.9, warmup=warmup)
    assert ema.module is not model and ema.module[0].weight.data_ptr() != model[0].weight.data_ptr()
    values = [1.0, -2.0, 0.5, 3.0, 0.0]
    for c in values:
        with torch.no_grad():
            model[0].weight.fill_(c)
        ema.update(model)
    decays = [min(0.9, (1 + n) / (10 + n)) if warmup else 0.9 for n in range(len(values))]
    if warmup:
        assert decays[:2] == [0.1, 2 / 11]  # warmup really changes the early decays
    torch.testing.assert_close(ema.module[0].weight.double(), _expected(w0, values, decays), rtol=1e-6, atol=1e-6)
    assert ema.updates == 5
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training


def test_ema_buffers() -> None:
    model = _bn_model()
    ema = ModelEMA(model, decay=0.5)
    copy_ema = ModelEMA(model, decay=0.5, average_buffers=False)
    model.train()
    model(torch.randn(8, 3) + 5.0)  # moves BN running_mean
    ema.update(model)
    copy_ema.update(model)
    live = model[1].running_mean
    torch.testing.assert_close(ema.module[1].running_mean, 0.5 * live)  # init was zeros
    assert torch.equal(copy_ema.module[1].running_mean, live)
    assert int(ema.module[1].num_batches_tracked) == 1  # integer buffer copied


def test_ema_state_dict_round_trip_and_wrapped_model() -> None:
    model = _bn_model()
    ema = ModelEMA(nn.DataParallel(model), decay=0.5, warmup=True)  # wrapper stripped: plain keys
    ema.update(nn.DataParallel(model))
    other = ModelEMA(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), decay=0.5, warmup=True)
    other.load_state_dict(ema.state_dict(), updates=ema.updates)
    assert set(ema.state_dict()) == set(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), other.state_dict().values()))
    assert other.current_decay() == ema.current_decay() == pytest.approx(2 / 11)


def test_ema_decay_validated() -> None:
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(nn.Linear(1, 1), decay=1.5)


# ------------------------------------------------------------------------------------------------ AMP
def test_autocast_fp32_is_noop_and_bf16_on_cpu() -> None:
    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with autocast("cpu", "fp32"):
        assert lin(x).dtype == torch.float32
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bf16"):
        assert lin(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "bf16"):
        assert lin(x).dtype == torch.bfloat16
    assert lin(x).dtype == torch.float32


def test_precision_errors() -> None:
    with pytest.raises(FFNetError, match="precision must be one of fp32, bf16, fp16, got 'fp64'"):
        with autocast("cpu", "fp64"):
            pass
    with pytest.raises(FFNetError, match="precision"):
        make_grad_scaler("half", "cpu")
    assert precision_dtype("fp16") is torch.float16


@pytest.mark.filterwarnings("ignore:run.precision=:RuntimeWarning")  # the slow-CPU notice, tested in core
def test_grad_scaler_enabled_only_for_fp16_cuda() -> None:
    assert not make_grad_scaler("fp16", "cpu").is_enabled()
    assert not make_grad_scaler("bf16", "cuda").is_enabled()
    assert not make_grad_scaler("fp32", "cuda:0").is_enabled()
    if torch.cuda.is_available():
        assert make_grad_scaler("fp16", "cuda").is_enabled()
    # a disabled scaler is transparent: scale() returns the loss unchanged
    loss = torch.tensor(3.0)
    assert torch.equal(make_grad_scaler("fp16", "cpu").scale(loss), loss)


# ----------------------------------------------------------------------------------------------- seed
def _draw() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_slow_cpu_precision_is_warned_once_per_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 on a CPU without native kernels ran an FFNet-TS step 10x slower than fp32: the run must say so."""
    assert cpu_runs_fast("fp32")
    assert cpu_runs_fast("bf16") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # torch's own probe
    monkeypatch.setattr(amp, "cpu_runs_fast", lambda precision: precision == "fp32")
    with pytest.warns(RuntimeWarning, match=r"run.precision=bf16 on a CPU without native bf16") as caught:
        make_grad_scaler("bf16", "cpu")
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_grad_scaler("fp32", "cpu")
        make_grad_scaler("bf16", "cuda")  # GPU precision is not judged by the CPU's kernels
    monkeypatch.setattr(amp, "cpu_runs_fast", lambda precision: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_grad_scaler("bf16", "cpu")


def test_seed_everything_repeats_all_rngs() -> None:
    assert seed_everything(17) == 17
    a = _draw()
    seed_everything(17)
    b = _draw()
    seed_everything(18)
    c = _draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[0] != c[0] and a[1] != c[1] and not torch.equal(a[2], c[2])


def test_deterministic_flag_toggles() -> None:
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        seed_everything(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_generator_and_worker_seeding() -> None:
    g1, g2 = make_generator(5), make_generator(5)
    assert torch.equal(torch.randperm(20, generator=g1), torch.randperm(20, generator=g2))
    state = torch.get_rng_state()
    make_generator(6)
    assert torch.equal(torch.get_rng_state(), state)  # independent of the global RNG

    class NumpyNoise(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> float:
            return float(np.random.rand())

    def run(seed: int) -> list[float]:
        loader = torch.utils.data.DataLoader(NumpyNoise(), batch_size=1, num_workers=2,
                                             worker_init_fn=seed_worker, generator=make_generator(seed))
        return [float(x) for x in loader]

    first = run(3)
    assert first == run(3)  # reproducible
    assert len(set(first)) == 4  # workers do not share numpy state
    assert first != run(4)
