"""Mixed-precision switches: one ``precision`` string (``fp32``/``bf16``/``fp16``) drives autocast and scaling.

bf16 has fp32's exponent range, so it needs no loss scaling and also works on CPU; fp16 overflows without a
GradScaler, which only CUDA needs/supports well. Keeping both decisions here means every app handles
``train.precision=...`` the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from metamixer.errors import FFNetError

__all__ = ["Precision", "PRECISIONS", "precision_dtype", "autocast", "autocast_dtype", "make_grad_scaler"]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_dtype(precision: str) -> torch.dtype:
    """Map a precision name to its torch dtype, with a clear error for anything else."""
    try:
        return _DTYPES[precision]
    except KeyError:
        raise FFNetError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}") from None


def _device_type(device: str | torch.device) -> str:
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        raise FFNetError(f"unknown device {device!r} (expected e.g. 'cpu', 'cuda', 'cuda:1')") from None


@contextlib.contextmanager
def autocast(device: str | torch.device, precision: str = "fp32") -> Iterator[None]:
    """Context manager running ops in ``precision`` on ``device`` (fp32: plain no-op context)."""
    dtype = precision_dtype(precision)
    if dtype is torch.float32:
        yield
        return
    with torch.autocast(device_type=_device_type(device), dtype=dtype):
        yield


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would compute ``x``'s matmuls in right now, or None where autocast is off for its device.

    Custom autograd functions need this: their backward runs outside autocast, so one that let autocast pick the
    forward's dtypes op by op would meet mixed operands (fp32 weights, bf16 activations) in backward. Casting all
    operands to this dtype up front, as autocast does for a conv, keeps forward and backward in one dtype.
    """
    device_type = x.device.type
    if not x.is_floating_point() or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def make_grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16 on CUDA (a disabled scaler is a transparent pass-through).

    Always returning a scaler keeps the training step identical across precisions and lets checkpoints store
    its (possibly empty) state.
    """
    precision_dtype(precision)
    device_type = _device_type(device)
    enabled = precision == "fp16" and device_type == "cuda"
    return torch.amp.GradScaler(device_type if device_type == "cuda" else "cpu", enabled=enabled)
