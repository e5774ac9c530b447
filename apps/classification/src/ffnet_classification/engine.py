"""The evaluation pass (validation during training, ffnet-cls-eval, the quick start); training is the engine's."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metamixer.train.amp import autocast
from metamixer.train.distributed import all_gather_object
from metamixer.train.errors import FFNetError


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at #classes)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target.view(-1, 1))
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over the whole loader, summed across DDP ranks.

    Each rank must see a disjoint shard (no padding duplicates), so the all-rank sums are exact.
    """
    model.eval()
    n = correct1 = correct5 = 0
    loss_sum = 0.0
    it = progress(loader) if progress is not None else loader
    for images, target in it:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        c1, c5 = topk_correct(logits, target)
        correct1 += c1
        correct5 += c5
        n += target.shape[0]
    parts = all_gather_object((n, correct1, correct5, loss_sum))
    n = sum(p[0] for p in parts)
    if n == 0:
        raise FFNetError("evaluation set is empty")
    return {
        "top1": 100.0 * sum(p[1] for p in parts) / n,
        "top5": 100.0 * sum(p[2] for p in parts) / n,
        "loss": sum(p[3] for p in parts) / n,
        "samples": float(n),
    }
