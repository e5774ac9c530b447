"""Training losses of FFNetSR: L1 in pixel space plus a small L1 in Fourier space.

The frequency term (weight 0.02 in the official configs; the paper text says 0.05) penalises the spectrum error
directly, which pushes the network to restore the high frequencies that pixel-L1 alone under-weights.
Definition (matches the official FFTLoss): ``F = torch.fft.rfft2`` over (H, W) with the default unnormalised
"backward" norm; real and imaginary parts are stacked on a new last dimension and the L1 distance is averaged
over all ``B x C x H x (W//2+1) x 2`` elements.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["fft_l1_loss", "FFTLoss", "SRLoss"]


def fft_l1_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the stacked (real, imag) ``rfft2`` spectra of ``sr`` and ``hr``.

    Computed in float32 at least: FFTs are not implemented for bfloat16/half on every backend, and the
    spectrum's DC term (sum of all pixels) would lose precision in 16 bits anyway.
    """
    dtype = torch.promote_types(sr.dtype, torch.float32)
    sr_f = torch.view_as_real(torch.fft.rfft2(sr.to(dtype)))
    hr_f = torch.view_as_real(torch.fft.rfft2(hr.to(dtype)))
    return F.l1_loss(sr_f, hr_f)


class FFTLoss(nn.Module):
    """``weight * fft_l1_loss(sr, hr)``."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.weight * fft_l1_loss(sr, hr)


class SRLoss(nn.Module):
    """``l1_weight * L1(sr, hr) + fft_weight * FFT-L1(sr, hr)``; ``forward`` returns (total, detached parts for logging;
    kept as tensors so logging does not force a device sync every step)."""

    def __init__(self, l1_weight: float = 1.0, fft_weight: float = 0.02) -> None:
        super().__init__()
        self.l1_weight = l1_weight
        self.fft_weight = fft_weight

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        l1 = F.l1_loss(sr.float(), hr.float())
        total = self.l1_weight * l1
        parts = {"l1": l1.detach()}
        if self.fft_weight:
            fft = fft_l1_loss(sr, hr)
            total = total + self.fft_weight * fft
            parts["fft"] = fft.detach()
        parts["total"] = total.detach()
        return total, parts
