"""Structural re-parameterization: train with extra branches / BN, infer with one plain conv.

Every fusable module has ``fuse() -> nn.Module`` which returns a NEW module computing the same function in eval
mode; it never shares tensors with the training module, so the training weights stay untouched.
:func:`reparameterize` applies this to a whole model.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import bn_nd, conv_nd


@runtime_checkable
class Fusable(Protocol):
    def fuse(self) -> nn.Module: ...


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as y = x * scale + shift (per channel)."""
    std = torch.sqrt(bn.running_var + bn.eps)
    weight = bn.weight if bn.affine else torch.ones_like(std)
    bias = bn.bias if bn.affine else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean * scale


@torch.no_grad()
def fuse_conv_bn(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of a conv followed by BN folded into one conv: W' = W*s (per out channel), b' = (b-mu)*s + beta."""
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight * scale.view((-1,) + (1,) * (conv.weight.dim() - 1))
    b = shift if conv.bias is None else conv.bias * scale + shift
    return w.detach().clone(), b.detach().clone()


@torch.no_grad()
def fuse_bn_conv(bn: nn.Module, conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """BN followed by a conv without padding folded into one conv: W' = W*s (per in channel), b' = W.shift + b.

    Only exact when the conv does not pad (a padded border would see BN(0) != 0), hence 1x1 convs.
    """
    if any(p != 0 for p in _as_tuple(conv.padding)) or conv.groups != 1:
        raise ValueError("BN->conv fusion needs an unpadded, ungrouped conv (a 1x1 projection)")
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight * scale.view((1, -1) + (1,) * (conv.weight.dim() - 2))
    b = (conv.weight * shift.view((1, -1) + (1,) * (conv.weight.dim() - 2))).sum(dim=tuple(range(1, conv.weight.dim())))
    if conv.bias is not None:
        b = b + conv.bias
    return w.detach().clone(), b.detach().clone()


def _as_tuple(v: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _new_conv_like(conv: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """A fresh biased conv with ``conv``'s geometry holding (copies of) the given weights."""
    ndim = weight.dim() - 2
    out = conv_nd(ndim)(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out


class ConvBN(nn.Module):
    """Conv (no bias) followed by BatchNorm; ``fuse()`` folds the BN into the conv.

    ``names`` picks the attribute names of the two children so published checkpoints (``c``/``bn`` in the
    official FFNet, ``conv``/``bn`` in its forecasting code) load without key surgery.
    """

    reparam_leaf = True  # fuse() turns this module into one plain conv
    __jit_unused_properties__ = ["conv_module", "bn_module"]  # accessors for fuse(), not compiled by TorchScript

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int = 1,
        padding: int | tuple[int, ...] | None = None,
        groups: int = 1,
        dilation: int = 1,
        ndim: int = 2,
        bn_weight_init: float = 1.0,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        names: tuple[str, str] = ("c", "bn"),
    ) -> None:
        super().__init__()
        ks = _as_tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size,) * ndim
        if padding is None:
            padding = tuple(dilation * (k - 1) // 2 for k in ks)
        self._names = tuple(names)
        conv = conv_nd(ndim)(in_channels, out_channels, ks, stride, padding, dilation, groups, bias=False)
        bn = bn_nd(ndim)(out_channels, eps=bn_eps, momentum=bn_momentum)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        setattr(self, self._names[0], conv)
        setattr(self, self._names[1], bn)

    # Accessors go through _modules: a property named like a configurable child ("conv", "bn") would
    # shadow that child.
    @property
    def conv_module(self) -> nn.Module:
        return self._modules[self._names[0]]

    @property
    def bn_module(self) -> nn.Module:
        return self._modules[self._names[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the two children in registration order (conv, bn); iterating them instead of looking the configurable
        # names up keeps forward scriptable (TorchScript cannot resolve a child by a runtime name)
        for layer in self.children():
            x = layer(x)
        return x

    @torch.no_grad()
    def fused_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return fuse_conv_bn(self.conv_module, self.bn_module)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        return _new_conv_like(self.conv_module, *self.fused_weights())


class BNConv(nn.Module):
    """BatchNorm then an unpadded conv (a 1x1 projection); ``fuse()`` folds the BN into the conv's input side."""

    reparam_leaf = True  # fuse() turns this module into one plain conv
    __jit_unused_properties__ = ["bn_module", "conv_module"]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ndim: int = 2,
        bias: bool = False,
        names: tuple[str, str] = ("bn", "c"),
    ) -> None:
        super().__init__()
        self._names = tuple(names)
        setattr(self, self._names[0], bn_nd(ndim)(in_channels))
        setattr(self, self._names[1], conv_nd(ndim)(in_channels, out_channels, 1, bias=bias))

    @property
    def bn_module(self) -> nn.Module:
        return self._modules[self._names[0]]

    @property
    def conv_module(self) -> nn.Module:
        return self._modules[self._names[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():  # (bn, conv) in registration order; scriptable, as in ConvBN
            x = layer(x)
        return x

    @torch.no_grad()
    def fused_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return fuse_bn_conv(self.bn_module, self.conv_module)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        return _new_conv_like(self.conv_module, *self.fused_weights())


class ResidualConv1x1(nn.Module):
    """``x + conv1x1(BN(x))`` — the residual projection of FFNet's downsampler; fuses to one 1x1 conv (W + I)."""

    reparam_leaf = True  # fuse() turns this module into one plain conv
    __jit_unused_properties__ = ["inner"]

    def __init__(self, channels: int, ndim: int = 2, name: str = "conv", bn_conv_names: tuple[str, str] = ("bn", "c")) -> None:
        super().__init__()
        self._name = name
        setattr(self, name, BNConv(channels, channels, ndim=ndim, names=bn_conv_names))

    @property
    def inner(self) -> BNConv:
        return self._modules[self._name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for layer in self.children():  # the one BNConv child (scriptable, see ConvBN.forward)
            y = layer(y)
        return x + y

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        w, b = self.inner.fused_weights()
        c = w.shape[0]
        eye = torch.eye(c, dtype=w.dtype, device=w.device).view(w.shape[:2] + (1,) * (w.dim() - 2))
        return _new_conv_like(self.inner.conv_module, w + eye, b)


def _pad_kernel_to(w: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad a conv kernel symmetrically (centered) to spatial ``size``."""
    pads: list[int] = []
    for have, want in zip(reversed(w.shape[2:]), reversed(list(size))):
        extra = want - have
        if extra < 0 or extra % 2:
            raise ValueError(f"cannot center a kernel of size {have} inside {want}")
        pads += [extra // 2, extra // 2]
    return F.pad(w, pads)


class RepDWConv(nn.Module):
    """Depthwise conv trained as parallel branches (large kernel + small kernels [+ 1xk/kx1 strips]), each
    with its own BN, summed; ``fuse()`` pads and adds them into ONE depthwise conv with bias.

    The small branches give the large kernel a better-conditioned centre during training (RepLKNet / RepVGG)
    at zero inference cost. ``out_channels`` may be a multiple of ``channels`` (channel multiplier, as in
    FFNet's strided downsampler). ``names`` are the branch attribute names, in order: large, then small
    kernels, then strips (official image FFNet: ``conv``, ``conv1``; forecasting: ``lkb_origin``, ``small_conv``).
    """

    reparam_leaf = True  # fuse() turns this module into one plain conv

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        small_kernels: Sequence[int] = (3,),
        stride: int = 1,
        ndim: int = 2,
        out_channels: int | None = None,
        strip: bool = False,
        names: Sequence[str] | None = None,
        conv_bn_names: tuple[str, str] = ("c", "bn"),
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if out_channels % channels:
            raise ValueError("out_channels must be a multiple of channels for a depthwise conv")
        specs: list[tuple[int, ...]] = [(kernel_size,) * ndim]
        specs += [(k,) * ndim for k in small_kernels if k != kernel_size]
        if strip:
            if ndim != 2:
                raise ValueError("strip branches (1xk, kx1) exist only for 2D")
            specs += [(1, kernel_size), (kernel_size, 1)]
        for s in specs:
            if any(k > kernel_size or (kernel_size - k) % 2 for k in s):
                raise ValueError(f"branch kernel {s} must be odd-offset and not larger than {kernel_size}")
        if names is None:
            names = ["conv"] + [f"conv{i}" for i in range(1, len(specs))]
        if len(names) != len(specs):
            raise ValueError(f"need {len(specs)} branch names, got {list(names)}")
        self.branch_names = list(names)
        self.kernel_size = kernel_size
        self.ndim = ndim
        self.stride = stride
        self.channels = channels
        self.out_channels = out_channels
        for name, ks in zip(self.branch_names, specs):
            branch = ConvBN(
                channels, out_channels, ks, stride=stride, groups=channels, ndim=ndim, bn_eps=bn_eps, names=conv_bn_names
            )
            setattr(self, name, branch)

    def branches(self) -> list[ConvBN]:
        return [self._modules[n] for n in self.branch_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the children are exactly the branches, in branch_names order (scriptable, see ConvBN.forward)
        out: torch.Tensor | None = None
        for branch in self.children():
            y = branch(x)
            if out is None:
                out = y
            else:
                out = out + y
        assert out is not None
        return out

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        size = (self.kernel_size,) * self.ndim
        weight, bias = None, None
        for b in self.branches():
            w, bb = b.fused_weights()
            w = _pad_kernel_to(w, size)
            weight = w if weight is None else weight + w
            bias = bb if bias is None else bias + bb
        main = self.branches()[0].conv_module
        return _new_conv_like(main, weight, bias)


class FusableSequential(nn.Sequential):
    """An ``nn.Sequential`` whose ``fuse()`` returns a fused deep copy (children fused recursively)."""

    def fuse(self) -> nn.Module:
        return reparameterize(self, inplace=False)


@torch.no_grad()
def _fuse_children(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        fuse = getattr(child, "fuse", None)
        if callable(fuse):
            setattr(module, name, fuse())
        else:
            _fuse_children(child)


@torch.no_grad()
def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fuse every re-parameterizable sub-module of ``model`` and return the fused model in eval mode.

    With ``inplace=False`` (default) the input model is deep-copied first, so the training model and its
    weights are untouched and share no storage with the result. Idempotent: a fused model has nothing left
    to fuse. Only children are fused (never ``model`` itself), so a model may define ``fuse()`` as a call
    to this function.
    """
    if getattr(model, "reparam_leaf", False):  # the model itself is a single fusable layer
        return model.fuse().eval()
    target = model if inplace else copy.deepcopy(model)
    _fuse_children(target)
    return target.eval()


def count_fusable(model: nn.Module) -> int:
    """How many branch/BN modules of ``model`` are still unfused (0 after :func:`reparameterize`).

    Containers (:class:`FusableSequential`) only forward ``fuse()`` to their children and are not counted."""
    return sum(
        1
        for m in model.modules()
        if m is not model and callable(getattr(m, "fuse", None)) and not isinstance(m, FusableSequential)
    )


__all__ = [
    "Fusable",
    "fuse_conv_bn",
    "fuse_bn_conv",
    "ConvBN",
    "BNConv",
    "ResidualConv1x1",
    "RepDWConv",
    "FusableSequential",
    "reparameterize",
    "count_fusable",
]
