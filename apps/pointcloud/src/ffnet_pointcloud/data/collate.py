"""Turn transformed numpy scenes into one flat ``Point`` batch (Pointcept's offset convention)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from metamixer.train.errors import FFNetError

from ..structure import Point

__all__ = ["scene_to_point", "collate_scenes", "feature_array"]


def feature_array(data: Mapping[str, Any], feat_keys: Sequence[str]) -> np.ndarray:
    """Concatenate the per-point feature arrays named by ``feat_keys`` (e.g. color + normal = 6 channels)."""
    missing = [k for k in feat_keys if k not in data]
    if missing:
        raise FFNetError(
            f"scene {data.get('name', '?')!r} has no {missing} (feat_keys {list(feat_keys)}); "
            f"available: {sorted(k for k, v in data.items() if isinstance(v, np.ndarray))}"
        )
    parts = [np.asarray(data[k], dtype=np.float32).reshape(len(data["coord"]), -1) for k in feat_keys]
    return np.concatenate(parts, 1)


def scene_to_point(data: Mapping[str, Any], feat_keys: Sequence[str]) -> dict[str, torch.Tensor]:
    out = {
        "coord": torch.from_numpy(np.ascontiguousarray(data["coord"], dtype=np.float32)),
        "grid_coord": torch.from_numpy(np.ascontiguousarray(data["grid_coord"], dtype=np.int64)),
        "feat": torch.from_numpy(feature_array(data, feat_keys)),
    }
    if "segment" in data:
        out["segment"] = torch.from_numpy(np.asarray(data["segment"], dtype=np.int64))
    if "index" in data:
        out["index"] = torch.from_numpy(np.asarray(data["index"], dtype=np.int64))
    return out


def collate_scenes(
    scenes: Sequence[Mapping[str, Any]],
    feat_keys: Sequence[str] = ("color", "normal"),
    mix_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> Point:
    """Concatenate scenes into one ``Point`` with ``offset`` = cumulative point counts.

    ``mix_prob``: Mix3D as in the official recipe (0.8): with this probability consecutive pairs of scenes are
    merged into one sample (their offsets fused), so the network sees two rooms overlaid in one voxel grid.
    ``generator`` draws that decision (training passes one seeded per batch, so the draw does not depend on
    which loader worker collates the batch; None: the global RNG).
    """
    if not scenes:
        raise FFNetError("cannot collate an empty list of scenes")
    parts = [s if isinstance(s.get("coord"), torch.Tensor) else scene_to_point(s, feat_keys) for s in scenes]
    keys = [k for k in parts[0] if isinstance(parts[0][k], torch.Tensor)]
    batch = {k: torch.cat([p[k] for p in parts]) for k in keys if all(k in p for p in parts)}
    offset = torch.cumsum(torch.tensor([len(p["coord"]) for p in parts]), 0)
    if mix_prob > 0 and len(parts) > 1 and torch.rand((), generator=generator).item() < mix_prob:
        offset = torch.cat([offset[1:-1:2], offset[-1:]])
    batch["offset"] = offset
    return Point(batch)
