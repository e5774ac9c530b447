"""Segmentation losses of the official recipe: cross-entropy (ignore index) + Lovász-softmax, weighted 1:1.

Lovász-softmax (Berman et al., CVPR 2018) is the convex surrogate of the per-class Jaccard loss: for each class
the errors |1{y=c} - p_c| are sorted and weighted by the gradient of the Jaccard index along that order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["lovasz_softmax", "lovasz_grad", "SegmentationLoss"]


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. sorted errors (``gt_sorted`` in {0,1})."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(
    probs: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1, classes: str = "present"
) -> torch.Tensor:
    """Mean over classes (those present in ``labels`` when ``classes="present"``) of the Lovász hinge."""
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    if probs.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


class SegmentationLoss(nn.Module):
    """``ce_weight * CE(ignore_index) + lovasz_weight * Lovász-softmax`` on logits ``[N, K]``."""

    def __init__(self, ignore_index: int = -1, ce_weight: float = 1.0, lovasz_weight: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.ce_weight = ce_weight
        self.lovasz_weight = lovasz_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.ce_weight:
            if (target != self.ignore_index).any():
                loss = loss + self.ce_weight * F.cross_entropy(logits, target, ignore_index=self.ignore_index)
            else:
                loss = loss + logits.sum() * 0.0
        if self.lovasz_weight:
            loss = loss + self.lovasz_weight * lovasz_softmax(logits.softmax(1), target, self.ignore_index)
        return loss
