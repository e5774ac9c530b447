"""Classifier-free guidance (Ho & Salimans 2022) as a model wrapper usable by every sampler.

eps_guided = eps_uncond + s * (eps_cond - eps_uncond). By default it is applied to every latent channel (the
standard formulation). ``guided_channels=3`` reproduces DiT's / U-DiT's released sampler, which guides only the
first three of the four latent channels "for exact reproducibility" of their paper numbers; use it only when
comparing against those numbers. The learned-variance half of the output always comes from the conditional pass.
"""

from __future__ import annotations

import torch

from metamixer.train.errors import FFNetError

__all__ = ["GuidedModel", "mix_guidance", "MAX_GUIDANCE_SCALE"]

#: larger scales saturate samples completely; most likely a typo (e.g. 15 instead of 1.5)
MAX_GUIDANCE_SCALE = 50.0


def mix_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float, *, data_channels: int,
                 guided_channels: int | None = None) -> torch.Tensor:
    """Combine conditional/unconditional network outputs ([B, C or 2C, ...]) into the guided output."""
    guided = data_channels if guided_channels is None else guided_channels
    if not 1 <= guided <= data_channels:
        raise FFNetError(f"guided_channels must be in [1, {data_channels}], got {guided}")
    eps_c, eps_u = cond[:, :guided], uncond[:, :guided]
    mixed = eps_u + scale * (eps_c - eps_u)
    return torch.cat([mixed, cond[:, guided:]], dim=1)


class GuidedModel(torch.nn.Module):
    """Wrap ``model(x, t, y)`` so that one call runs the conditional and the null-label pass in one batch."""

    def __init__(self, model: torch.nn.Module, scale: float, *, null_label: int, data_channels: int,
                 guided_channels: int | None = None) -> None:
        super().__init__()
        check_guidance_scale(scale)
        self.model = model
        self.scale = float(scale)
        self.null_label = int(null_label)
        self.data_channels = data_channels
        self.guided_channels = guided_channels

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return self.model(x, t, y)
        null = torch.full_like(y, self.null_label)
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2, dim=0)
        return mix_guidance(cond, uncond, self.scale, data_channels=self.data_channels,
                            guided_channels=self.guided_channels)


def check_guidance_scale(scale: float) -> None:
    """Reject scales that make no sense (negative, NaN, or absurdly large)."""
    if not (isinstance(scale, int | float) and 0.0 <= float(scale) <= MAX_GUIDANCE_SCALE):
        raise FFNetError(f"guidance scale (cfg_scale) must be a number in [0, {MAX_GUIDANCE_SCALE:g}] "
                         f"(1 = no guidance, DiT uses 1.5 for FID), got {scale!r}")
