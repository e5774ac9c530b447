"""Loading weights: our checkpoints, and the authors' FFNet-TS state_dicts (which carry 50k unused parameters).

The official model builds modules its forward never calls (``te_patch``, ``downsample_layers.1-3``, ``lat_layer``,
``smooth_layer``, ``up_sample_conv``). Ours does not have them, so those keys are dropped - and reported - before
a strict, shape-checked load of everything else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from metamixer.train.checkpoint import extract_state_dict, load_state_dict_checked
from metamixer.train.errors import FFNetError

__all__ = ["DEAD_OFFICIAL_KEY", "load_official_weights", "split_dead_keys"]

#: keys of modules the official forward never uses (for a model with one stage)
DEAD_OFFICIAL_KEY = re.compile(r"^(model\.)?(te_patch|lat_layer|smooth_layer|up_sample_conv)\.")
_DOWNSAMPLE = re.compile(r"^(model\.)?downsample_layers\.(\d+)\.")


def split_dead_keys(sd: Mapping[str, Any], n_stages: int = 1) -> tuple[dict[str, Any], list[str]]:
    """(state_dict without the never-used modules, the dropped keys)."""
    kept, dropped = {}, []
    for key, value in sd.items():
        down = _DOWNSAMPLE.match(key)
        if DEAD_OFFICIAL_KEY.match(key) or (down and int(down.group(2)) >= n_stages):
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


def load_official_weights(model: nn.Module, weights: Mapping[str, torch.Tensor] | str | os.PathLike[str]) -> list[str]:
    """Load an official FFNet-TS state_dict (a file or a dict) into ``model``; returns the ignored dead keys.

    Every other key must exist in our model with the same shape (an :class:`FFNetError` lists the mismatches).
    """
    source = str(weights) if not isinstance(weights, Mapping) else "official state_dict"
    sd = extract_state_dict(weights)
    n_stages = len(getattr(getattr(model, "model", model), "stages", [None]))
    kept, dropped = split_dead_keys(sd, n_stages)
    if not kept:
        raise FFNetError(f"{source}: no FFNet-TS weights left after dropping {len(dropped)} unused keys")
    load_state_dict_checked(model, kept, source)
    return dropped
