"""CPU inference layout for fused FFNets: same function, same state_dict keys, faster kernels.

Measured on this machine (PyTorch 2.13 CPU, oneDNN, one thread, CPU time per call):

* FFNet's downsampler conv is *grouped with a channel multiplier* (``groups=C``, ``C -> 2C``, 7x7, stride 2).
  oneDNN has no fast path for it: 11.1 ms for 160 -> 320 channels at 64x64, while repeating each input
  channel twice and running a plain depthwise conv (``groups=2C``) computes exactly the same output in 2.2 ms.
  :class:`ChannelMultiplierConv2d` does that; it is the largest single win (3 such convs per forward).
* Depthwise 3x3/7x7 convs are 1.2-2.5x faster on channels-last tensors (0.48 -> 0.19 ms for 80x64x64),
  and 1x1 convs cost the same in both layouts, so the whole net runs channels-last.

:func:`optimize_for_cpu` applies both to a deep copy of the fused model. It is numerically the fused model
(differences at float rounding level), and its ``state_dict`` is the official deploy state_dict.

:func:`prepare_for_inference` is the deploy path the CLIs use: the same plus core's fused channels-last FFNet
blocks (:func:`metamixer.nn.inference.prepare_for_inference`: each block's FFN runs with its hidden tensor kept
in cache and GELU fused into the convs). Its outputs equal the fused model's up to float rounding; its
``state_dict`` is not a checkpoint (keep saving the model itself).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from metamixer.nn.inference import prepare_for_inference as prepare_blocks

from .ffnet import FFNet


class ChannelMultiplierConv2d(nn.Conv2d):
    """``groups=in_channels`` conv with ``out = m * in`` channels, run as repeat-interleave + depthwise conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.out_channels // self.in_channels
        return F.conv2d(x.repeat_interleave(m, dim=1), self.weight, self.bias, self.stride, self.padding,
                        self.dilation, self.out_channels)


def _is_multiplier_conv(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == m.in_channels and m.groups > 1
            and m.out_channels != m.in_channels and m.out_channels % m.in_channels == 0
            and m.padding_mode == "zeros")


def _swap_multiplier_convs(module: nn.Module) -> int:
    n = 0
    for name, child in list(module.named_children()):
        if _is_multiplier_conv(child):
            new = ChannelMultiplierConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                          child.padding, child.dilation, child.groups, child.bias is not None)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new.to(child.weight.device, child.weight.dtype))
            n += 1
        else:
            n += _swap_multiplier_convs(child)
    return n


@torch.no_grad()
def optimize_for_cpu(model: FFNet, channels_last: bool = True) -> FFNet:
    """Fused (if not yet), multiplier convs rewritten, channels-last; a new model in eval mode.

    Feed it channels-last inputs (``x.contiguous(memory_format=torch.channels_last)``) for the full gain.
    """
    fused = model.fuse() if not model.is_fused else copy.deepcopy(model)
    _swap_multiplier_convs(fused)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    return fused.eval()


def prepare_for_inference(model: FFNet, fast_blocks: bool = False) -> FFNet:
    """The CPU deploy form: fused, multiplier convs rewritten, channels-last weights and inputs (a new eval-mode
    model; CPU inputs of any layout are converted on entry).

    ``fast_blocks=True`` also runs the blocks through core's fused channels-last kernels (what FFNetSR's deploy
    path does). It is off by default because for FFNet-1's shapes oneDNN's channels-last convs are faster: on a
    quiet 2-core AVX2 EPYC, ``benchmarks/cls_bench.py --forms fused_cpu deploy`` measured the plain channels-last
    form 1.4x (batch 1) and 1.15x (batch 16) faster than the fused-kernel blocks, whose 1x1 products split by pixels
    and leave the 8x8 / 16x16 late stages on one thread. Outputs agree either way (tested)."""
    fused = model if model.is_fused else model.fuse()
    prepared = prepare_blocks(fused, fuse=False, fast_blocks=fast_blocks)
    _swap_multiplier_convs(prepared)
    return prepared.to(memory_format=torch.channels_last).eval()
