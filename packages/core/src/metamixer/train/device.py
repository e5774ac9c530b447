"""The one device rule of every app: ``auto`` picks CUDA when present, else CPU; a named device must exist."""

from __future__ import annotations

import torch

from metamixer.train.errors import FFNetError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto", key: str = "run.device") -> torch.device:
    """``auto`` -> ``cuda`` if available else ``cpu``; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` are checked to exist.

    ``key`` names the config field in the error, so the message says what to change."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise FFNetError(f"{key}={name!r} is not a device (expected auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FFNetError(f"{key}={name!r} but CUDA is not available on this machine (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FFNetError(f"{key}={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise FFNetError(f"{key}={name!r} but MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise FFNetError(f"{key}={name!r}: unsupported device type {device.type!r}")
    return device
