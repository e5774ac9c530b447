"""timm's feature-extraction conventions without timm: ``FeatureInfo`` and the forms ``out_indices`` take.

``create_model(..., features_only=True)`` returns a backbone whose ``feature_info`` answers the questions dense-task
code asks of a timm backbone (``channels()``, ``reduction()``, ``module_name()``, ``get_dicts()``), so decoders
written against timm (``feature_info.channels()`` to size their lateral convs) work with FFNet unchanged.
timm's documented semantics are followed:

* ``out_indices`` as an int ``n`` means "the last n levels" and is kept as ``(-n, ..., -1)``;
  a tuple may hold negative indices (counted from the end);
* ``FeatureInfo.info`` holds every level, ``out_indices`` selects which ones the accessors report, and
  ``len()`` / ``[i]`` index all levels, as in timm.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

__all__ = ["FeatureInfo", "OutIndices", "feature_take_indices", "out_indices_as_tuple"]

#: what ``out_indices`` / ``indices`` accept: last-n as an int, or explicit (possibly negative) indices
OutIndices = int | Sequence[int]


def out_indices_as_tuple(out_indices: OutIndices) -> tuple[int, ...]:
    """timm's normal form of ``out_indices``: an int ``n`` becomes ``(-n, ..., -1)``, a sequence a tuple."""
    if isinstance(out_indices, bool):
        raise ValueError(f"out_indices must be an int (last n levels) or a list of level indices, got {out_indices!r}")
    if isinstance(out_indices, int):
        return tuple(range(-out_indices, 0))
    return tuple(int(i) for i in out_indices)


def feature_take_indices(num_levels: int, indices: OutIndices | None = None) -> tuple[list[int], int]:
    """Absolute level indices (sorted as given) for ``indices`` and the largest one.

    ``None`` takes every level, an int ``n`` the last ``n``, a sequence its entries (negative ones counted from
    the end). Out-of-range values raise ``ValueError`` naming the valid range.
    """
    if indices is None:
        indices = num_levels
    if isinstance(indices, bool):
        raise ValueError(f"indices must be an int (last n) or a list of indices, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise ValueError(f"last-n indices={indices} is out of range (1 to {num_levels})")
        take = list(range(num_levels - indices, num_levels))
    else:
        take = []
        for i in indices:
            idx = num_levels + int(i) if int(i) < 0 else int(i)
            if not 0 <= idx < num_levels:
                raise ValueError(f"feature index {i} is out of range for {num_levels} levels "
                                 f"(0 to {num_levels - 1}, or -{num_levels} to -1)")
            take.append(idx)
        if not take:
            raise ValueError("indices is empty; give at least one level")
    return take, max(take)


class FeatureInfo:
    """Per-level metadata of a backbone (``num_chs``, ``reduction``, ``module``) and the selected levels.

    The accessor methods take ``idx=None`` (the selected levels), an int (that level, selection ignored) or a
    list of levels, like timm's class of the same name.
    """

    def __init__(self, feature_info: Sequence[dict[str, Any]], out_indices: OutIndices) -> None:
        info = [dict(fi) for fi in feature_info]
        prev = 1
        for i, fi in enumerate(info):
            if not (fi.get("num_chs", 0) > 0 and fi.get("reduction", 0) >= prev and "module" in fi):
                raise ValueError(f"feature_info[{i}] needs num_chs > 0, a non-decreasing reduction and a module: {fi}")
            prev = fi["reduction"]
            fi.setdefault("index", i)
        self.out_indices = out_indices_as_tuple(out_indices)
        feature_take_indices(len(info), self.out_indices)  # range check
        self.info = info

    def from_other(self, out_indices: OutIndices) -> FeatureInfo:
        return FeatureInfo(copy.deepcopy(self.info), out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        def pick(i: int) -> dict[str, Any]:
            return self.info[i] if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()}, out_indices={self.out_indices})"
