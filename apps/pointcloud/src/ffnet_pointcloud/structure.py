"""The ``Point`` batch structure (Pointcept-compatible field names) and batch/offset helpers.

A batch of scenes is stored flat: ``coord [N, 3]`` (metres), ``grid_coord [N, 3]`` (int voxel indices),
``feat [N, C]``, and either ``offset`` (cumulative point counts, Pointcept's convention) or ``batch`` (scene index
per point). ``Point`` is a dict with attribute access so transforms, collate and model share one vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from metamixer.train.errors import FFNetError

from .serialization import ORDERS, encode, grid_depth

__all__ = ["Point", "offset_to_batch", "batch_to_offset", "offset_to_bincount"]


def offset_to_bincount(offset: torch.Tensor) -> torch.Tensor:
    return torch.diff(offset, prepend=offset.new_zeros(1))


def offset_to_batch(offset: torch.Tensor) -> torch.Tensor:
    counts = offset_to_bincount(offset)
    return torch.repeat_interleave(torch.arange(len(counts), device=offset.device), counts)


def batch_to_offset(batch: torch.Tensor) -> torch.Tensor:
    if batch.numel() == 0:
        return batch.new_zeros(0)
    return torch.cumsum(torch.bincount(batch), 0)


class Point(dict):
    """Dict of point-cloud tensors with attribute access and the two operations the model needs.

    * :meth:`serialization` computes ``serialized_code [K, N]``, ``serialized_order`` and ``serialized_inverse``
      for K orders (optionally shuffled, as in training);
    * :meth:`sparsify` builds the spconv tensor (``sparse_conv_feat``) from ``grid_coord`` and ``batch``.
    """

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "batch" not in self and "offset" in self:
            self["batch"] = offset_to_batch(self["offset"])
        if "offset" not in self and "batch" in self:
            self["offset"] = batch_to_offset(self["batch"])

    def serialization(
        self, order: Sequence[str] = ("z",), depth: int | None = None, shuffle_orders: bool = False
    ) -> Point:
        """Compute the serialization codes of ``grid_coord`` for each order (batch index in the top bits)."""
        if "grid_coord" not in self:
            raise FFNetError("Point.serialization needs 'grid_coord' (run GridSample first)")
        bad = [o for o in order if o not in ORDERS]
        if bad:
            raise FFNetError(f"unknown serialization order(s) {bad}; expected from {list(ORDERS)}")
        grid = self["grid_coord"]
        depth = grid_depth(grid) if depth is None else depth
        code = torch.stack([encode(grid, self["batch"], o, depth) for o in order])
        order_idx = torch.argsort(code, dim=1)
        inverse = torch.empty_like(order_idx).scatter_(
            1, order_idx, torch.arange(code.shape[1], device=code.device).expand_as(order_idx).contiguous()
        )
        if shuffle_orders:
            perm = torch.randperm(code.shape[0], device=code.device)
            code, order_idx, inverse = code[perm], order_idx[perm], inverse[perm]
        self["serialized_depth"] = depth
        self["serialized_code"] = code
        self["serialized_order"] = order_idx
        self["serialized_inverse"] = inverse
        return self

    def sparsify(self, pad: int = 96) -> Point:
        """Attach an spconv ``SparseConvTensor`` of ``feat`` at ``(batch, grid_coord)``.

        The spatial shape is ``max(grid_coord) + pad`` as in the official code; the pad has no effect on
        submanifold convs and leaves room for strided ones.
        """
        from metamixer.nn.sparse import sparse_tensor

        grid = self["grid_coord"].int()
        indices = torch.cat([self["batch"].int().unsqueeze(1), grid], 1)
        shape = (grid.max(0).values + pad).tolist() if grid.numel() else [pad] * 3
        batch_size = int(self["batch"].max()) + 1 if self["batch"].numel() else 1
        self["sparse_shape"] = shape
        self["sparse_conv_feat"] = sparse_tensor(
            self["feat"], indices, spatial_shape=shape, batch_size=batch_size
        )
        return self
