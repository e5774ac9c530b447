"""Losses of the recipe: soft-target cross-entropy (Mixup/CutMix targets) and DeiT hard distillation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against a probability vector per sample (smoothed / mixed labels)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def build_base_loss(mixup_active: bool, label_smoothing: float) -> nn.Module:
    """Soft-target CE when targets are mixed (smoothing is already in them), else CE with smoothing."""
    if mixup_active:
        return SoftTargetCrossEntropy()
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


class HardDistillationLoss(nn.Module):
    """DeiT hard distillation: ``(1 - alpha) * base(student, y) + alpha * CE(student, argmax teacher)``.

    FFNet has a single head (no distillation token), so the student's logits serve both terms, as in the
    official recipe (``--distillation-type hard``, alpha 0.5, tau 1).
    """

    def __init__(self, base: nn.Module, teacher: nn.Module, alpha: float = 0.5) -> None:
        super().__init__()
        self.base = base
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.alpha = alpha

    def forward(self, images: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        base = self.base(logits, target)
        with torch.no_grad():
            teacher_labels = self.teacher(images).argmax(dim=-1)
        distill = F.cross_entropy(logits.float(), teacher_labels)
        return base * (1.0 - self.alpha) + distill * self.alpha
