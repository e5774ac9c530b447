"""MetaMixer instances used by the FFNet apps, in 1D (NCL) and 2D (NCHW) form.

* :class:`FFNifiedAttention` — the token mixer of the paper (Fig. 3): query projection (1x1 conv), query–key
  interaction with static keys (depthwise conv), GELU instead of softmax, coefficient–value aggregation
  with static values (depthwise conv).
* :class:`ConvFFN` — the ConvNeXt-style channel mixer: depthwise conv as query projection, then an FFN whose
  two 1x1 convs are the static keys and values.
* :class:`Residual` / :class:`FFNetBlock` — residual branches with LayerScale and DropPath, composed into a block.
* :class:`MultiHeadSelfAttention` / :class:`HybridAttentionBlock` — the attention instance, for hybrid models
  that keep attention where tokens are few (e.g. a diffusion U-Net's bottleneck).

Child names are configurable so apps reproduce the official state_dict keys exactly.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DropPath, LayerNormChannelsFirst, conv_nd, get_act
from .reparam import ConvBN, FusableSequential, RepDWConv


def depthwise(
    dim: int,
    kernel_size: int,
    ndim: int = 2,
    rep_kernels: Sequence[int] | None = None,
    norm: bool = False,
    strip: bool = False,
    rep_names: Sequence[str] | None = None,
    conv_bn_names: tuple[str, str] = ("c", "bn"),
    stride: int = 1,
    out_dim: int | None = None,
) -> nn.Module:
    """A depthwise conv in one of the three forms FFNet uses.

    * ``rep_kernels`` given (e.g. ``(3,)``): re-parameterizable multi-branch conv (:class:`RepDWConv`), each
      branch with BN;
    * ``norm=True``: one conv + BN (:class:`ConvBN`);
    * otherwise a plain biased depthwise conv (already "fused").
    """
    out_dim = out_dim or dim
    if rep_kernels is not None or strip:
        return RepDWConv(
            dim,
            kernel_size,
            tuple(rep_kernels or ()),
            stride=stride,
            ndim=ndim,
            out_channels=out_dim,
            strip=strip,
            names=rep_names,
            conv_bn_names=conv_bn_names,
        )
    if norm:
        return ConvBN(dim, out_dim, kernel_size, stride=stride, groups=dim, ndim=ndim, names=conv_bn_names)
    return conv_nd(ndim)(dim, out_dim, kernel_size, stride, kernel_size // 2, groups=dim, bias=True)


def pointwise(in_dim: int, out_dim: int, ndim: int = 2, norm: bool = False, bias: bool = True,
              conv_bn_names: tuple[str, str] = ("c", "bn")) -> nn.Module:
    """A 1x1 conv; with ``norm`` a conv (no bias) + BN that fuses into a biased 1x1 conv."""
    if norm:
        return ConvBN(in_dim, out_dim, 1, ndim=ndim, names=conv_bn_names)
    return conv_nd(ndim)(in_dim, out_dim, 1, bias=bias)


class FFNifiedAttention(FusableSequential):
    """FFNified attention: ``fc`` (1x1) -> ``conv1`` (DW k1) -> ``act`` (GELU) -> ``conv2`` (DW k2).

    Args:
        dim: channels.
        kernel_size: query–key interaction kernel (DW k1). ``kernel_size2`` defaults to the same.
        ndim: 1 for sequences (NCL), 2 for images (NCHW).
        rep_kernels: small kernels of re-param branches (e.g. ``(3,)`` for the 7x7 stages of FFNet-1..4);
            ``None`` gives plain biased DW convs (the 3x3 stages, FFNetSR).
        strip: add 1xk / kx1 re-param branches (2D only; FFNet segmentation backbone).
        fc_norm: 1x1 conv + BN (no bias) as in image FFNet; ``False`` -> biased 1x1 (FFNetSR).
        conv_norm: one conv+BN for the DW convs when ``rep_kernels`` is None.
        names: child names of (fc, conv1, act, conv2); ``("0", "1", "2", "3")`` gives index keys.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        ndim: int = 2,
        rep_kernels: Sequence[int] | None = None,
        kernel_size2: int | None = None,
        strip: bool = False,
        fc_norm: bool = True,
        conv_norm: bool = False,
        act: str = "gelu",
        names: Sequence[str] = ("fc", "conv1", "act", "conv2"),
        rep_names: Sequence[str] | None = None,
        conv_bn_names: tuple[str, str] = ("c", "bn"),
    ) -> None:
        k2 = kernel_size2 or kernel_size
        layers = OrderedDict()
        layers[names[0]] = pointwise(dim, dim, ndim, norm=fc_norm, conv_bn_names=conv_bn_names)
        layers[names[1]] = depthwise(dim, kernel_size, ndim, rep_kernels, conv_norm, strip, rep_names, conv_bn_names)
        layers[names[2]] = get_act(act)
        layers[names[3]] = depthwise(dim, k2, ndim, rep_kernels, conv_norm, strip, rep_names, conv_bn_names)
        super().__init__(layers)


class ConvFFN(FusableSequential):
    """ConvNeXt-style channel mixer: ``conv`` (DW k) -> ``fc1`` (1x1, expand) -> ``act`` -> ``fc2`` (1x1).

    Args mirror :class:`FFNifiedAttention`; ``dw_norm`` puts BN after the DW conv (image FFNet), ``False``
    gives a biased DW conv (FFNetSR). ``expansion`` is the FFN hidden ratio; ``drop`` a dropout after the act.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        expansion: float = 3.0,
        ndim: int = 2,
        rep_kernels: Sequence[int] | None = None,
        strip: bool = False,
        dw_norm: bool = True,
        act: str = "gelu",
        drop: float = 0.0,
        out_dim: int | None = None,
        names: Sequence[str] = ("conv", "fc1", "act", "fc2"),
        rep_names: Sequence[str] | None = None,
        conv_bn_names: tuple[str, str] = ("c", "bn"),
    ) -> None:
        hidden = int(round(dim * expansion))
        layers = OrderedDict()
        layers[names[0]] = depthwise(dim, kernel_size, ndim, rep_kernels, dw_norm, strip, rep_names, conv_bn_names)
        layers[names[1]] = pointwise(dim, hidden, ndim)
        layers[names[2]] = get_act(act)
        if drop > 0:
            layers["drop"] = nn.Dropout(drop)
        layers[names[3]] = pointwise(hidden, out_dim or dim, ndim)
        super().__init__(layers)


class Residual(nn.Module):
    """``x + DropPath(layer_scale * main(norm(x)))``.

    ``layer_scale`` is a raw Parameter shaped ``[C, 1, ...]`` (present only when ``layer_scale_init`` is given)
    and ``norm`` exists only when given, so the state_dict carries exactly the official keys.
    ``channel_dim`` is 1 for channels-first tensors; use -1 for token tensors ``[B, N, C]``.
    """

    def __init__(
        self,
        main: nn.Module,
        dim: int | None = None,
        layer_scale_init: float | None = None,
        drop_path: float = 0.0,
        norm: nn.Module | None = None,
        ndim: int = 2,
        channel_dim: int = 1,
    ) -> None:
        super().__init__()
        if norm is not None:
            self.norm = norm
        self.main = main
        if layer_scale_init is not None:
            if dim is None:
                raise ValueError("Residual needs dim when layer_scale_init is set")
            shape = (dim,) + (1,) * ndim if channel_dim == 1 else (dim,)
            self.layer_scale = nn.Parameter(torch.full(shape, float(layer_scale_init)))
        else:
            self.layer_scale = None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "norm"):  # resolved when TorchScript compiles (a `_modules` lookup is not scriptable)
            y = self.norm(y)
        y = self.main(y)
        if self.layer_scale is not None:
            y = y * self.layer_scale
        return x + self.drop_path(y)


class FFNetBlock(FusableSequential):
    """Token mixer then channel mixer.

    With ``residual=False`` (default) each mixer is expected to be a :class:`Residual` already (image FFNet
    layout: ``token_mixer.0.main``, ``channel_mixer.main``). With ``residual=True`` the block adds the skips
    itself around bare mixers (FFNetSR layout: ``token_mixer.0``, ``channel_mixer.0``).
    """

    def __init__(self, token_mixer: nn.Module, channel_mixer: nn.Module, residual: bool = False) -> None:
        super().__init__(OrderedDict(token_mixer=token_mixer, channel_mixer=channel_mixer))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            x = x + self.token_mixer(x)
            return x + self.channel_mixer(x)
        return self.channel_mixer(self.token_mixer(x))


def ffnet_block(
    dim: int,
    kernel_size: int = 7,
    mlp_kernel_size: int | None = None,
    expansion: float = 3.0,
    ndim: int = 2,
    rep_kernels: Sequence[int] | None = (3,),
    layer_scale_init: float | None = None,
    drop_path: float = 0.0,
    act: str = "gelu",
) -> FFNetBlock:
    """The standard image-FFNet block (paper Fig. 3c) for custom networks: FFNified attention + ConvFFN,
    each a residual with optional LayerScale and DropPath. Re-param branches only for kernels > 3."""
    mk = mlp_kernel_size or kernel_size
    tm_rep = rep_kernels if kernel_size > 3 else None
    cm_rep = rep_kernels if mk > 3 else None
    tm = FFNifiedAttention(dim, kernel_size, ndim, rep_kernels=tm_rep, act=act)
    cm = ConvFFN(dim, mk, expansion, ndim, rep_kernels=cm_rep, act=act)
    return FFNetBlock(
        nn.Sequential(Residual(tm, dim, layer_scale_init, drop_path, ndim=ndim)),
        Residual(cm, dim, layer_scale_init, drop_path, ndim=ndim),
    )


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention, the dynamic-key/value, softmax instance of MetaMixer.

    Accepts channels-first maps ``[B, C, *spatial]`` (``channels_first=True``) or tokens ``[B, N, C]``.
    Uses ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where available).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        channels_first: bool = True,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.channels_first = channels_first
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self.channels_first:
            x = x.flatten(2).transpose(1, 2)  # [B, N, C]
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        y = self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, c)))
        if self.channels_first:
            y = y.transpose(1, 2).reshape(shape)
        return y


class HybridAttentionBlock(FFNetBlock):
    """FFNet block whose token mixer is multi-head self-attention (pre-LN), for the stages where global
    interactions pay off (paper §4.4: attention in the bottleneck, FFNified attention elsewhere).
    The channel mixer is the same :class:`ConvFFN` (``mlp_kernel_size=None`` or 1 -> a plain 1x1 MLP)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        expansion: float = 4.0,
        ndim: int = 2,
        mlp_kernel_size: int | None = None,
        layer_scale_init: float | None = None,
        drop_path: float = 0.0,
        act: str = "gelu",
    ) -> None:
        attn = MultiHeadSelfAttention(dim, num_heads, channels_first=True)
        if mlp_kernel_size and mlp_kernel_size > 1:
            mlp: nn.Module = ConvFFN(dim, mlp_kernel_size, expansion, ndim, dw_norm=False, act=act)
        else:
            hidden = int(round(dim * expansion))
            mlp = FusableSequential(
                OrderedDict(fc1=pointwise(dim, hidden, ndim), act=get_act(act), fc2=pointwise(hidden, dim, ndim))
            )
        super().__init__(
            Residual(attn, dim, layer_scale_init, drop_path, norm=LayerNormChannelsFirst(dim), ndim=ndim),
            Residual(mlp, dim, layer_scale_init, drop_path, norm=LayerNormChannelsFirst(dim), ndim=ndim),
        )


__all__ = [
    "depthwise",
    "pointwise",
    "FFNifiedAttention",
    "ConvFFN",
    "Residual",
    "FFNetBlock",
    "ffnet_block",
    "MultiHeadSelfAttention",
    "HybridAttentionBlock",
]
