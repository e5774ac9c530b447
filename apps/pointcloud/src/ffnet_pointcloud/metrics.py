"""Semantic-segmentation metrics from a confusion matrix: per-class IoU and accuracy, mIoU, mAcc, allAcc.

Classes that occur neither in the labels nor in the predictions (union 0) are left out of the means (reported
as NaN per class) rather than counted as 0, so a scene set lacking a class does not cap mIoU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["ConfusionMatrix", "segmentation_metrics", "format_table"]


class ConfusionMatrix:
    """Accumulates ``matrix[target, pred]`` over points, skipping ``ignore_index`` targets."""

    def __init__(self, num_classes: int, ignore_index: int = -1) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        pred = torch.as_tensor(pred).reshape(-1).long().cpu()
        target = torch.as_tensor(target).reshape(-1).long().cpu()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        k = self.num_classes
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
            raise ValueError(f"labels outside [0, {k}) (and not ignore_index {self.ignore_index})")
        idx = target * k + pred.clamp(0, k - 1)
        self.matrix += torch.bincount(idx, minlength=k * k).reshape(k, k).numpy()

    def merge(self, other: np.ndarray) -> None:
        self.matrix += other

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        return segmentation_metrics(self.matrix, class_names)


def segmentation_metrics(matrix: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    target = matrix.sum(1)
    pred = matrix.sum(0)
    union = target + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(target > 0, tp / target, np.nan)
    names = list(class_names) if class_names else [str(i) for i in range(len(tp))]
    total = target.sum()

    def clean(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    return {
        "mIoU": clean(np.nanmean(iou)) if np.any(~np.isnan(iou)) else None,
        "mAcc": clean(np.nanmean(acc)) if np.any(~np.isnan(acc)) else None,
        "allAcc": float(tp.sum() / total) if total > 0 else None,
        "num_points": int(total),
        "per_class": {
            n: {"iou": clean(i), "acc": clean(a), "points": int(t)}
            for n, i, a, t in zip(names, iou, acc, target)
        },
    }


def format_table(metrics: dict[str, Any]) -> str:
    """A plain-text table (one row per class + the summary) for logs and the CLI."""

    def pct(x: float | None) -> str:
        return "   -  " if x is None else f"{100 * x:6.2f}"

    width = max([5] + [len(n) for n in metrics["per_class"]])
    lines = [f"{'class':<{width}}  IoU(%)  Acc(%)  points", "-" * (width + 24)]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<{width}}  {pct(m['iou'])}  {pct(m['acc'])}  {m['points']}")
    lines.append("-" * (width + 24))
    lines.append(f"mIoU {pct(metrics['mIoU'])}  mAcc {pct(metrics['mAcc'])}  allAcc {pct(metrics['allAcc'])}")
    return "\n".join(lines)

