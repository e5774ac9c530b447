"""A run checkpoint as a timm-style weights file, so timm's own loader finds the EMA weights.

timm's ``load_checkpoint(model, path, use_ema=True)`` (what ``timm.create_model(..., checkpoint_path=path)``
calls, and timm's ``validate.py`` / ``train.py --initial-checkpoint``) looks for ``state_dict_ema``, then
``model_ema``, then ``state_dict``, then ``model``. Our run checkpoints (``best.pth`` / ``last.pth``, the shared
engine's format) keep the EMA weights under ``ema``, which timm never reads: it silently takes ``model``, the
non-EMA weights. ``ffnet-cls-export --formats timm`` therefore writes ``{name}_timm.pth``:

    {"arch": "ffnet_1", "state_dict": <train-form weights>, "state_dict_ema": <EMA weights> (when trained with
     EMA), "num_classes": int, "model_kwargs": {FFNetSpec overrides of custom sizes}, "classes": [...] | None}

plain tensors and Python values only (it loads with ``torch.load(weights_only=True)``), in the train form that
``timm.create_model`` builds. Rebuild with
``timm.create_model(f["arch"], num_classes=f["num_classes"], checkpoint_path=path, **f["model_kwargs"])``;
``ffnet_classification`` reads it back too (``pretrained=path``, ``ffnet-cls-eval --checkpoint``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from metamixer.train.atomic import atomic_write
from metamixer.train.checkpoint import CHECKPOINT_FORMAT, extract_state_dict, load_state_dict_checked
from metamixer.train.errors import FFNetError

from .models.registry import create_model, is_fused_state_dict, read_checkpoint_file

__all__ = ["TIMM_FILE_FORMAT", "write_timm_checkpoint"]

#: recorded in the file so a reader can tell it from a timm trainer's own checkpoint
TIMM_FILE_FORMAT = "ffnet-timm-weights"


def _weights(obj: Any, source: str, model_name: str | None) -> tuple[dict, dict | None, str | None, dict, Any]:
    """(train weights, EMA weights or None, architecture, spec overrides, class names) of any checkpoint."""
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        config = obj.get("config") or {}
        mcfg = dict(config.get("model") or {})
        extra = dict(obj.get("extra") or {})
        extra.update(extra.get("task") or {})
        name = mcfg.get("name") or extra.get("model_name") or model_name
        ema = dict(obj["ema"]) if obj.get("ema") else None
        return dict(obj["model"]), ema, name, dict(mcfg.get("spec") or {}), extra.get("classes")
    sd = dict(extract_state_dict(obj))
    has_ema = isinstance(obj, Mapping) and any(obj.get(k) is not None for k in ("state_dict_ema", "model_ema"))
    ema = dict(extract_state_dict(obj, prefer_ema=True)) if has_ema else None
    name = model_name or (obj.get("arch") if isinstance(obj, Mapping) else None)
    kwargs = dict(obj.get("model_kwargs") or {}) if isinstance(obj, Mapping) else {}
    return sd, ema, name, kwargs, obj.get("classes") if isinstance(obj, Mapping) else None


def write_timm_checkpoint(checkpoint: str | os.PathLike, path: str | os.PathLike,
                          model_name: str | None = None) -> dict[str, Any]:
    """Write ``checkpoint``'s weights (and EMA weights) as a timm-style file at ``path``, verified.

    Both state_dicts are loaded strictly into a freshly built train-form model before anything is written, and
    the written file is read back with ``weights_only=True`` and compared tensor for tensor. Fused (deploy)
    weights are refused: ``timm.create_model`` builds the train form. Returns a small report.
    """
    source = str(checkpoint)
    sd, ema, name, spec, classes = _weights(read_checkpoint_file(checkpoint), source, model_name)
    if not name:
        raise FFNetError(f"{source}: the checkpoint does not record its model name; pass --model")
    if is_fused_state_dict(sd):
        raise FFNetError(f"{source}: holds fused (deploy) weights; timm.create_model builds the train form, so a "
                         "timm file needs the training checkpoint (best.pth / last.pth or the official .pth.tar)")
    head = sd.get("head.weight")
    num_classes = int(head.shape[0]) if head is not None else 0
    model = create_model(name, num_classes=num_classes, **spec)
    for label, weights in (("", sd), (" [ema]", ema)):
        if weights is not None:
            load_state_dict_checked(model, weights, source + label)
    out: dict[str, Any] = {"format": TIMM_FILE_FORMAT, "arch": name, "state_dict": sd, "num_classes": num_classes,
                           "model_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()},
                           "classes": list(classes) if classes else None}
    if ema is not None:
        out["state_dict_ema"] = ema
    target = Path(path)
    atomic_write(target, lambda handle: torch.save(out, handle))
    back = torch.load(target, map_location="cpu", weights_only=True)
    diff = 0.0
    for key in ("state_dict", "state_dict_ema"):
        if key in out:
            diff = max([diff] + [float((back[key][k].double() - v.double()).abs().max()) if v.numel() else 0.0
                                 for k, v in out[key].items()])
    return {"path": str(target), "arch": name, "num_classes": num_classes, "has_ema": ema is not None,
            "max_abs_diff": diff, "forbidden_ops": []}
