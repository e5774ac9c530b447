"""``metamixer.kernels.batchnorm.batch_norm`` is a drop-in for calling an ``nn.BatchNorm1d`` on ``[G, C, S]``:
outputs, all gradients, running mean/var and ``num_batches_tracked`` equal the module's over several steps (with
momentum and with the cumulative average), channel-strided inputs, no affine parameters, no running statistics;
evaluation, 2-D inputs, other dtypes and disabled kernels take the module itself. The operator passes
``torch.library.opcheck`` (schema, fake tensor, autograd registration) and traces under ``torch.compile``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metamixer.kernels import native
from metamixer.kernels.batchnorm import _batch_norm_train, batch_norm

pytestmark = pytest.mark.skipif(native._compiler() is None, reason="no C compiler")


@pytest.fixture(autouse=True)
def offered() -> None:
    """The kernel whatever this CPU's SIMD (a plain build is offered inside plain_builds)."""
    with native.plain_builds():
        assert native.batch_norm_kernels() is not None
        yield


def _pair(channels: int, **kwargs) -> tuple[nn.BatchNorm1d, nn.BatchNorm1d]:
    reference = nn.BatchNorm1d(channels, **kwargs)
    if reference.affine:
        with torch.no_grad():
            reference.weight.normal_()
            reference.bias.normal_()
    return reference, copy.deepcopy(reference)


def _step(norm: nn.BatchNorm1d, x: torch.Tensor, grad: torch.Tensor, ours: bool) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_()
    y = batch_norm(norm, x) if ours else norm(x)
    params = [p for p in norm.parameters()]
    grads = torch.autograd.grad(y, [x, *params], grad)
    return (y.detach(), *grads)


def _assert_same_module_state(reference: nn.BatchNorm1d, ours: nn.BatchNorm1d) -> None:
    for name, buffer in reference.named_buffers():
        got = dict(ours.named_buffers())[name]
        if buffer.dtype == torch.long:
            assert torch.equal(got, buffer), name
        else:
            torch.testing.assert_close(got, buffer, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape,strided", [((7, 16, 300), False), ((1, 24, 513), False), ((3, 5, 1), False),
                                           ((4, 6, 40), True)])
def test_training_steps_equal_the_module(shape: tuple[int, int, int], strided: bool, momentum: float | None) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    reference, ours = _pair(shape[1], momentum=momentum)
    for step in range(3):
        base = torch.randn(shape[0], shape[1] + 3, shape[2], generator=g) * (step + 1) + step
        x = base[:, 2:-1] if strided else base[:, :shape[1]].contiguous()
        assert x.is_contiguous() != strided
        grad = torch.randn(shape, generator=g)
        for got, want in zip(_step(ours, x, grad, True), _step(reference, x, grad, False)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        _assert_same_module_state(reference, ours)


@pytest.mark.parametrize("kwargs", [{"affine": False}, {"track_running_stats": False}])
def test_no_affine_and_no_running_statistics(kwargs: dict) -> None:
    g = torch.Generator().manual_seed(3)
    reference, ours = _pair(8, **kwargs)
    x, grad = torch.randn(5, 8, 21, generator=g), torch.randn(5, 8, 21, generator=g)
    for got, want in zip(_step(ours, x, grad, True), _step(reference, x, grad, False)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    _assert_same_module_state(reference, ours)
    if not kwargs.get("track_running_stats", True):  # batch statistics in evaluation too: still the kernel
        ours.eval()
        reference.eval()
        torch.testing.assert_close(batch_norm(ours, x), reference(x), rtol=1e-4, atol=1e-4)


def test_evaluation_2d_inputs_other_dtypes_and_disabled_kernels_use_the_module(monkeypatch) -> None:  # noqa: ANN001
    calls: list[str] = []
    real = _batch_norm_train

    def counting(*args):  # noqa: ANN002, ANN202
        calls.append("kernel")
        return real(*args)

    monkeypatch.setattr("metamixer.kernels.batchnorm._batch_norm_train", counting)
    reference, ours = _pair(6)
    x = torch.randn(4, 6, 10)
    batch_norm(ours, x)
    reference(x)
    assert calls == ["kernel"]
    ours.eval()
    reference.eval()
    torch.testing.assert_close(batch_norm(ours, x), reference(x))  # running statistics: the module's own path
    ours.train()
    reference.train()
    two_d = torch.randn(9, 6)
    torch.testing.assert_close(batch_norm(ours, two_d), reference(two_d))
    ours.double()
    reference.double()
    torch.testing.assert_close(batch_norm(ours, x.double()), reference(x.double()))
    ours.float()
    with native.disabled("batchnorm.c"):
        batch_norm(ours, x)
        with pytest.raises(RuntimeError, match="native=True: batch_norm"):
            batch_norm(ours, x, native=True)
    assert calls == ["kernel"]
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm(nn.BatchNorm1d(3), torch.randn(1, 3, 1))  # the module's own error


def test_opcheck_and_compile() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 19, generator=g, requires_grad=True)
    w, b = torch.randn(4, generator=g, requires_grad=True), torch.randn(4, generator=g, requires_grad=True)
    torch.library.opcheck(_batch_norm_train, (x, w, b, 1e-5))
    torch.library.opcheck(_batch_norm_train, (x, None, None, 1e-5))
    norm = nn.BatchNorm1d(4)
    compiled = torch.compile(lambda t: batch_norm(norm, t), fullgraph=True, backend="aot_eager")
    reference = copy.deepcopy(norm)
    torch.testing.assert_close(compiled(x), reference(x), rtol=1e-4, atol=1e-4)
