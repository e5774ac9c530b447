"""Serialized grid pooling / unpooling (the official §4.1 down- and up-sampling), with torch's own reductions.

Pooling merges each 2x2x2 cell: because every serialization order is octree-nested, ``code >> 3`` is the same
for exactly the voxels sharing a parent cell (``grid >> 1``) of the same scene, so clusters come from
``torch.unique`` on the shifted code. Features go through ``Linear`` then a per-cluster **max**
(``Tensor.scatter_reduce(..., "amax")``), coordinates are averaged, BN + activation follow. The parent Point and
the cluster index of every child are kept so unpooling can scatter the coarse features back to the children and
add the projected skip features.
"""

from __future__ import annotations

import torch
from torch import nn

from metamixer.nn.sparse import sparse_bn

from ..structure import Point

__all__ = ["SerializedPooling", "SerializedUnpooling", "segment_reduce", "make_act"]


def make_act(name: str) -> nn.Module:
    return nn.GELU() if name == "gelu" else nn.ReLU()


def segment_reduce(src: torch.Tensor, cluster: torch.Tensor, num_clusters: int, reduce: str) -> torch.Tensor:
    """Reduce rows of ``src [N, C]`` into ``num_clusters`` rows by ``cluster [N]`` ("max", "mean", "sum", "min")."""
    ops = {"max": "amax", "min": "amin", "mean": "mean", "sum": "sum"}
    index = cluster.unsqueeze(1).expand_as(src)
    out = src.new_zeros((num_clusters, src.shape[1]))
    return out.scatter_reduce(0, index, src, ops[reduce], include_self=False)


class SerializedPooling(nn.Module):
    """``Linear(C_in, C_out)`` -> per-cell max over 2x2x2 children -> BN1d -> act, on a serialized Point."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 2,
        reduce: str = "max",
        act: str = "gelu",
        shuffle_orders: bool = True,
    ) -> None:
        super().__init__()
        if stride < 2 or stride & (stride - 1):
            raise ValueError(f"pooling stride must be a power of two >= 2, got {stride}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth_shift = stride.bit_length() - 1
        self.reduce = reduce
        self.shuffle_orders = shuffle_orders
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = sparse_bn(out_channels)
        self.act = make_act(act)

    def forward(self, point: Point) -> Point:
        shift = 3 * self.depth_shift
        code = point.serialized_code >> shift
        _, cluster, counts = torch.unique(code[0], sorted=True, return_inverse=True, return_counts=True)
        num = counts.shape[0]
        # first child (in sorted order) of every cluster: its code/grid/batch describe the parent cell
        sorted_children = torch.argsort(cluster, stable=True)
        start = torch.cumsum(counts, 0) - counts
        head = sorted_children[start]
        code = code[:, head]
        order = torch.argsort(code, dim=1)
        inverse = torch.empty_like(order).scatter_(
            1, order, torch.arange(num, device=code.device).expand_as(order).contiguous()
        )
        if self.shuffle_orders and self.training:
            perm = torch.randperm(code.shape[0], device=code.device)
            code, order, inverse = code[perm], order[perm], inverse[perm]
        feat = segment_reduce(self.proj(point.feat), cluster, num, self.reduce)
        coord = segment_reduce(point.coord, cluster, num, "mean")
        pooled = Point(
            feat=self.act(self.norm(feat)),
            coord=coord,
            grid_coord=point.grid_coord[head] >> self.depth_shift,
            batch=point.batch[head],
            serialized_code=code,
            serialized_order=order,
            serialized_inverse=inverse,
            serialized_depth=point.serialized_depth - self.depth_shift,
            pooling_inverse=cluster,
            pooling_parent=point,
        )
        return pooled.sparsify()


class _LinearBNAct(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, act: str) -> None:
        super().__init__()
        self.add_module("proj", nn.Linear(in_channels, out_channels))
        self.add_module("norm", sparse_bn(out_channels))
        self.add_module("act", make_act(act))


class SerializedUnpooling(nn.Module):
    """Child features = act(BN(Linear(skip))) + act(BN(Linear(coarse)))[cluster of the child]."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, act: str = "gelu") -> None:
        super().__init__()
        self.proj = _LinearBNAct(in_channels, out_channels, act)
        self.proj_skip = _LinearBNAct(skip_channels, out_channels, act)

    def forward(self, point: Point) -> Point:
        parent: Point = point.pooling_parent
        coarse = self.proj(point.feat)
        feat = self.proj_skip(parent.feat) + coarse[point.pooling_inverse]
        out = Point(parent)
        out["feat"] = feat
        out["sparse_conv_feat"] = parent.sparse_conv_feat.replace_feature(feat)
        return out
