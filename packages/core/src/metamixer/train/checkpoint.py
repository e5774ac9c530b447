"""The one checkpoint format, written atomically and read safely.

A checkpoint is a plain dict of tensors and Python containers::

    {"format": "ffnet-checkpoint", "version": 1, "model": sd, "ema": sd|None, "ema_updates": int,
     "state_dict_ema": the "ema" dict again when there is one (the key timm's loader reads with use_ema=True),
     "optimizer": sd|None, "scheduler": sd|None, "scaler": sd|None, "step": int, "epoch": int,
     "config": dict|None, "rng": {...}, "extra": dict}

It loads with ``torch.load(weights_only=True)`` (no arbitrary code execution from downloaded files), is written
through a temp file + ``os.replace`` (a crash or full disk never leaves a truncated ``last.pth``), and carries
every RNG state so a resumed run continues *exactly* as if it had never stopped. The helpers at the bottom read
foreign layouts too (official ``state_dict``/``params``/``params_ema`` files, DDP ``module.`` prefixes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import random
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metamixer.train.atomic import atomic_write
from metamixer.train.config import config_to_dict
from metamixer.train.distributed import unwrap_model
from metamixer.train.errors import FFNetError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "restore_checkpoint",
    "load_weights_file",
    "extract_state_dict",
    "load_state_dict_checked",
    "get_rng_state",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "ffnet-checkpoint"
CHECKPOINT_VERSION = 1
_EMA_KEYS = ("state_dict_ema", "params_ema", "model_ema", "ema")
_STRIP_PREFIXES = ("module.", "_orig_mod.")


# ----------------------------------------------------------------------------------------------- RNG
def get_rng_state() -> dict[str, Any]:
    """Snapshot python/numpy/torch(/CUDA) RNG states as tensors and plain values (``weights_only``-safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states captured by :func:`get_rng_state` (missing parts are left alone)."""
    py = state.get("python")
    if py is not None:
        random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npy = state.get("numpy")
    if npy is not None:
        keys = npy["keys"].numpy().astype(np.uint32)
        np.random.set_state((npy["name"], keys, int(npy["pos"]), int(npy["has_gauss"]),
                             float(npy["cached_gaussian"])))
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
        else:
            warnings.warn(
                f"checkpoint has CUDA RNG states for {len(cuda_states)} devices but {torch.cuda.device_count()} "
                "are visible; CUDA RNG not restored", stacklevel=2)


# ------------------------------------------------------------------------------------------- writing
def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`~metamixer.train.atomic.atomic_write`: a crash or a full disk never leaves a
    truncated checkpoint."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def _state(obj: Any) -> Any:
    return None if obj is None else obj.state_dict()


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    ema: Any | None = None,
    step: int = 0,
    epoch: int = 0,
    config: Any | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically write a full training checkpoint (call on the main process only); returns the path.

    ``model`` may be DDP/compile-wrapped (keys are saved unwrapped). ``config`` may be a dataclass or a dict.
    ``extra`` must contain only tensors and plain Python containers so the file stays ``weights_only``-loadable.
    """
    path = Path(path)
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": unwrap_model(model).state_dict(),
        "ema": _state(ema),
        "ema_updates": int(getattr(ema, "updates", 0)) if ema is not None else 0,
        "optimizer": _state(optimizer),
        "scheduler": _state(scheduler),
        "scaler": _state(scaler),
        "step": int(step),
        "epoch": int(epoch),
        "config": config_to_dict(config) if config is not None else None,
        "rng": get_rng_state(),
        "extra": dict(extra) if extra is not None else {},
    }
    if ckpt["ema"] is not None:
        # timm's load_checkpoint(use_ema=True) looks for this key: the same dict object, which pickle stores once
        ckpt["state_dict_ema"] = ckpt["ema"]
    _atomic_torch_save(ckpt, path)
    return path


# ------------------------------------------------------------------------------------------- reading
def _check_torch_archive(path: Path, size: int) -> None:
    """A zip archive is a torch file only if it holds ``<name>/data.pkl`` (torch's own error for any other zip
    is an internal assertion text)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise FFNetError(f"{path}: not a readable checkpoint ({size} bytes): a damaged zip archive ({exc})") from None
    if not any(name.endswith("data.pkl") for name in names):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise FFNetError(f"{path}: a zip archive but not a PyTorch checkpoint (no data.pkl inside; it holds "
                         f"{shown or 'nothing'})")


def load_weights_file(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one clear error naming the file.

    Works for any weights file (ours or an official release); use :func:`load_checkpoint` for our format.
    ``argparse.Namespace`` is allowed because timm-style trainers (the official FFNet one included) pickle
    their command-line ``args`` next to the weights; it is a plain attribute bag, safe to rebuild.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FFNetError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise FFNetError(f"checkpoint path is a folder, expected a .pth file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise FFNetError(f"{path}: empty file, not a checkpoint")
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(0, size - (1 << 16) - 22))
        tail = handle.read()
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):  # torch's zip format, or the legacy pickle format
        raise FFNetError(f"{path}: not a PyTorch checkpoint (it starts with {head!r}, not a zip archive or pickle)")
    if head.startswith(b"PK") and b"PK\x05\x06" not in tail:  # a zip ends with its central directory record
        raise FFNetError(f"{path}: not a readable checkpoint ({size} bytes): truncated (the end of the archive is "
                         "missing: an interrupted copy or download?)")
    if head.startswith(b"PK"):
        _check_torch_archive(path, size)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" (it references {found.group(1)})" if found else ""
        raise FFNetError(
            f"{path}: refused: the file contains pickled Python code or objects{what}, which a checkpoint must not "
            "carry and which were not executed; re-save only the tensors (model.state_dict()) from a trusted copy"
        ) from None
    except Exception as exc:  # torch raises many types on garbage (IndexError, EOFError, RuntimeError, ...)
        text = " ".join(str(exc).split())
        if "central directory" in text or isinstance(exc, EOFError) or "end of" in text.lower():
            reason = "truncated or corrupt (an interrupted copy or download?)"
        else:
            reason = f"corrupt ({type(exc).__name__}: {text[:120]})"
        raise FFNetError(f"{path}: not a readable checkpoint ({size} bytes): {reason}") from None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one of our checkpoints (``weights_only=True``), checking format and version.

    Raises :class:`FFNetError` naming the file if it is missing, corrupt, or not an FFNet checkpoint (use
    :func:`extract_state_dict` for foreign weight files).
    """
    obj = load_weights_file(path)
    if not isinstance(obj, Mapping) or obj.get("format") != CHECKPOINT_FORMAT:
        found = f"keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else type(obj).__name__
        raise FFNetError(
            f"{path}: not an FFNet checkpoint (no format={CHECKPOINT_FORMAT!r}; found {found}); "
            "to load plain model weights use metamixer.train.checkpoint.extract_state_dict"
        )
    version = obj.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise FFNetError(
            f"{path}: checkpoint version {version!r} is newer than this metamixer supports "
            f"({CHECKPOINT_VERSION}); upgrade metamixer"
        )
    return dict(obj)


def _component(ckpt: Mapping[str, Any], key: str, source: str) -> Any:
    value = ckpt.get(key)
    if value is None:
        raise FFNetError(f"{source}: checkpoint has no {key} state, but one was asked to be restored")
    return value


def restore_checkpoint(
    ckpt_or_path: Mapping[str, Any] | str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    ema: Any | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load the given components from a checkpoint (dict or path) into live objects; returns the checkpoint.

    Every object passed must have state in the checkpoint (an FFNetError otherwise): silently skipping, e.g.,
    the optimizer would make a "resumed" run diverge from the uninterrupted one. Resume from
    ``ckpt["step"] + 1`` / ``ckpt["epoch"]`` as stored by the training loop.
    """
    if isinstance(ckpt_or_path, Mapping):
        ckpt, source = dict(ckpt_or_path), "checkpoint"
    else:
        ckpt, source = load_checkpoint(ckpt_or_path), str(ckpt_or_path)
    if model is not None:
        load_state_dict_checked(unwrap_model(model), _component(ckpt, "model", source), source)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(_component(ckpt, "optimizer", source))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise FFNetError(f"{source}: optimizer state does not match the optimizer: {exc}") from None
    if scheduler is not None:
        scheduler.load_state_dict(_component(ckpt, "scheduler", source))
    if scaler is not None:
        state = ckpt.get("scaler")
        if state:
            scaler.load_state_dict(state)
        elif scaler.is_enabled():
            raise FFNetError(f"{source}: checkpoint has no grad-scaler state but the scaler is enabled (fp16)")
    if ema is not None:
        state = _component(ckpt, "ema", source)
        load_state_dict_checked(ema.module, state, f"{source} [ema]")
        ema.updates = int(ckpt.get("ema_updates", 0))
    if restore_rng and ckpt.get("rng") is not None:
        set_rng_state(ckpt["rng"])
    return ckpt


# -------------------------------------------------------------------------------- foreign weight files
def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) for k in obj)
            and any(isinstance(v, torch.Tensor) for v in obj.values()))


def _strip_prefixes(sd: Mapping[str, Any]) -> OrderedDict[str, Any]:
    """Drop ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) when *every* key has it."""
    out = OrderedDict(sd)
    changed = True
    while changed and out:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = OrderedDict((k[len(prefix):], v) for k, v in out.items())
                changed = True
    return out


def extract_state_dict(
    obj: Any,
    keys: Sequence[str] = ("state_dict_ema", "state_dict", "params", "params_ema", "model"),
    prefer_ema: bool = False,
) -> OrderedDict[str, Any]:
    """Find the model state_dict inside a loaded checkpoint (or a path to one) and strip wrapper prefixes.

    Handles our format (``model``/``ema``), timm/official files (``state_dict``, ``state_dict_ema``), BasicSR
    (``params``, ``params_ema``) and bare state dicts. ``keys`` lists the candidate keys; EMA keys are tried
    first when ``prefer_ema`` and last otherwise, so the choice never depends on dict order.
    """
    source = "state dict"
    if isinstance(obj, (str, os.PathLike)):
        source = str(obj)
        obj = load_weights_file(obj)
    if isinstance(obj, nn.Module):
        return _strip_prefixes(obj.state_dict())
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        candidates: list[str] = ["ema", "model"] if prefer_ema else ["model"]
    else:
        ema_keys = [k for k in keys if k in _EMA_KEYS or k.endswith("_ema")]
        plain_keys = [k for k in keys if k not in ema_keys]
        candidates = ema_keys + plain_keys if prefer_ema else plain_keys + ema_keys
    if isinstance(obj, Mapping):
        for key in candidates:
            value = obj.get(key)
            if isinstance(value, nn.Module):
                value = value.state_dict()
            if _is_state_dict(value):
                return _strip_prefixes(value)
            if isinstance(value, Mapping) and value:  # nested, e.g. {"model": {"state_dict": ...}}
                with contextlib.suppress(FFNetError):
                    return extract_state_dict(value, keys, prefer_ema)
        if _is_state_dict(obj):
            return _strip_prefixes(obj)
        shown = ", ".join(sorted(map(str, obj))[:12])
        raise FFNetError(f"{source}: no model weights found (looked for {', '.join(candidates)}); top-level keys: "
                         f"{shown}")
    raise FFNetError(f"{source}: expected a dict of weights, got {type(obj).__name__}")


def _listing(title: str, items: list[str], limit: int = 10) -> str:
    more = f", ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)} {title}: {', '.join(items[:limit])}{more}"


def load_state_dict_checked(model: nn.Module, sd: Mapping[str, Any], source: str) -> nn.Module:
    """Strictly load ``sd`` into ``model``; on any mismatch raise one FFNetError that lists the problems.

    The message gives counts and the first 10 missing, unexpected and wrongly shaped keys, naming ``source``
    (the file), which is what one needs to tell a wrong variant from a wrong file. Returns the model.
    """
    sd = _strip_prefixes(sd)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k} (checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})"
        for k in own
        if k in sd and isinstance(sd[k], torch.Tensor) and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = [p for p, items in (
            (_listing("missing keys", missing), missing),
            (_listing("unexpected keys", unexpected), unexpected),
            (_listing("shape mismatches", mismatched), mismatched),
        ) if items]
        raise FFNetError(
            f"{source}: weights do not match {type(model).__name__} ({len(own)} keys in model, {len(sd)} in "
            f"checkpoint): " + "; ".join(parts)
        )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise FFNetError(f"{source}: cannot load weights into {type(model).__name__}: "
                         f"{' '.join(str(exc).split())[:500]}") from None
    return model
