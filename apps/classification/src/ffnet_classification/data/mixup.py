"""Batch-level Mixup / CutMix with label smoothing (DeiT/timm recipe: mixup 0.8, cutmix 1.0, switch 0.5).

Written here rather than taken from kornia because the recipe needs the smoothed soft targets of both mixed
samples (kornia returns a label triple), the per-batch mixup/cutmix switch, and the area-corrected lambda.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def one_hot_smooth(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    out = torch.full((target.shape[0], num_classes), off, device=target.device)
    return out.scatter_(1, target.long().view(-1, 1), on)


def mix_targets(target: torch.Tensor, num_classes: int, lam: float, smoothing: float) -> torch.Tensor:
    y1 = one_hot_smooth(target, num_classes, smoothing)
    y2 = one_hot_smooth(target.flip(0), num_classes, smoothing)
    return y1 * lam + y2 * (1.0 - lam)


def cutmix_box(h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return y0, y1, x0, x1


class Mixup:
    """Mix a batch with its reverse: Mixup (Beta(a,a) blend) or CutMix (pasted box), one per batch.

    Returns ``(mixed_images, soft_targets)``; soft targets already include label smoothing, so train with
    soft-target cross-entropy. The RNG is a numpy Generator seeded from torch so runs are reproducible and
    resume exactly (its state lives in the ``torch`` RNG that the checkpoint saves).
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
    ) -> None:
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:
            raise ValueError("Mixup needs an even batch size (use drop_last=True for the train loader)")
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
        lam = 1.0
        if self.active and rng.random() < self.prob:
            use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
            if use_cutmix:
                lam = float(rng.beta(self.cutmix_alpha, self.cutmix_alpha))
                h, w = x.shape[-2:]
                y0, y1, x0, x1 = cutmix_box(h, w, lam, rng)
                x = x.clone()
                x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
                lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
            else:
                lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
                x = x * lam + x.flip(0) * (1.0 - lam)
        return x, mix_targets(target, self.num_classes, lam, self.label_smoothing)
