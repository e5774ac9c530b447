"""What dtype autocast would compute in: the one fact the kernels' autograd Functions need from mixed precision."""
from __future__ import annotations

import torch

__all__ = ["autocast_dtype"]


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
