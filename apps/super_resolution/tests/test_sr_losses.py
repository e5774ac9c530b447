"""The FFT loss on hand-checkable examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffnet_sr.losses import SRLoss, fft_l1_loss


def test_fft_loss_known_value():
    # rfft2 of a 2x2 block of ones is [[4, 0], [0, 0]] (+0j): stacked real/imag = 8 numbers, |diff| sums to 4
    sr = torch.zeros(1, 1, 2, 2)
    hr = torch.ones(1, 1, 2, 2)
    assert fft_l1_loss(sr, hr).item() == pytest.approx(0.5)


def test_fft_loss_matches_explicit_dft():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 5, 6))
    b = rng.random((2, 3, 5, 6))
    h, w = 5, 6
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    diffs = []
    for u in range(h):
        for v in range(w // 2 + 1):
            kernel = np.exp(-2j * np.pi * (u * ys / h + v * xs / w))
            d = (a * kernel).sum(axis=(-2, -1)) - (b * kernel).sum(axis=(-2, -1))
            diffs += [np.abs(d.real), np.abs(d.imag)]
    expected = float(np.mean(np.stack(diffs)))
    got = fft_l1_loss(torch.from_numpy(a), torch.from_numpy(b)).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_total_loss_weights():
    torch.manual_seed(0)
    sr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    total, parts = SRLoss(1.0, 0.02)(sr, hr)
    expected = torch.nn.functional.l1_loss(sr, hr) + 0.02 * fft_l1_loss(sr, hr)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {"l1", "fft", "total"}
    # bf16 inputs are handled (the FFT runs in float32)
    assert torch.isfinite(fft_l1_loss(sr.bfloat16(), hr.bfloat16()))
