"""metamixer.kernels.dropout.fast_dropout: an unbiased inverted dropout with p quantized to 1/65536, seeded by torch."""

from __future__ import annotations

import pytest
import torch

from metamixer.kernels.dropout import FastDropout, fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.7, 0.85])
def test_drop_fraction_scale_and_gradient(p: float) -> None:
    torch.manual_seed(0)
    x = (torch.rand(1_000_003) + 0.5).requires_grad_(True)  # odd size: the 4-per-draw split must cover the tail
    y = fast_dropout(x, p, training=True)
    kept = y != 0
    level = round(p * 65536) / 65536
    # binomial std of the drop fraction is ~5e-4 at n=1e6: 5 sigma
    assert abs((~kept).float().mean().item() - p) < 2.5e-3
    assert torch.allclose(y[kept], x.detach()[kept] / (1 - level), rtol=1e-6)
    assert abs(y.detach().mean().item() / x.detach().mean().item() - 1) < 1e-2  # unbiased in expectation
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad != 0, kept)
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / (1 - level)))


def test_eval_identity_p_zero_and_seeding() -> None:
    x = torch.randn(64, 32)
    drop = FastDropout(0.5)
    drop.eval()
    assert drop(x) is x
    assert fast_dropout(x, 0.0, training=True) is x
    torch.manual_seed(3)
    a = fast_dropout(x, 0.5)
    torch.manual_seed(3)
    b = fast_dropout(x, 0.5)
    assert torch.equal(a, b) and not torch.equal(a, fast_dropout(x, 0.5))
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))


def test_bfloat16_and_non_contiguous_inputs_take_the_torch_path() -> None:
    torch.manual_seed(5)
    x = torch.randn(64, 33)
    for tensor in (x.to(torch.bfloat16), x.t()):
        y = fast_dropout(tensor, 0.5)
        assert y.dtype == tensor.dtype and y.shape == tensor.shape
        kept = y != 0
        torch.testing.assert_close(y[kept], tensor[kept] * 2)
