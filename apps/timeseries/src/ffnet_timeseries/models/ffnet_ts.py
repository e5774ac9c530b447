"""FFNet-TS: the paper's forecasting model (MetaMixer with FFNified token mixing, §4.3 / App. F.4, Alg. 1-2).

Shapes: input ``[B, L, M]`` (L = seq_len, M variables) -> output ``[B, H, M]`` (H = pred_len).
Features are ``[B, M, D, N]`` (D features, N patches) at the public interfaces. Inside the stages the
activations are kept *channel-major*, ``[M, D, B, N]``: every grouped 1x1 conv of the block is then one batched
matmul over its groups (``[G, c_out, c_in] @ [G, c_in, B*N]``) and every depthwise conv one Toeplitz matmul
over channels, with a transpose only where the group axis changes from variables to features. On CPU this is
~2x faster per training step than the same layers as grouped ``Conv1d`` calls on ``[B, C, N]``; the weights are
the convs' own (same keys and shapes), so nothing changes for checkpoints or ``fuse()``.

Module names reproduce the authors' state_dict keys (``model.downsample_layers.0.0.weight``,
``model.stages.0.blocks.0.token_mixer.ffnpw1.weight``, ..., ``model.head.linear.weight``) so their checkpoints load,
but the modules their forward never uses (time-feature embedding, the unused down-samplers and the multi-scale
branch: 50,516 parameters for ETTh1) are not built.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ffnet_timeseries.models.revin import RevIN
from metamixer.kernels.batchnorm import batch_norm
from metamixer.kernels.dropout import FastDropout
from metamixer.kernels.fastconv import DepthwiseConv1dToeplitz, depthwise_conv1d_cbl, swap_depthwise_convs
from metamixer.kernels.fused_ffn import grouped_ffn
from metamixer.nn.reparam import ConvBN, RepDWConv, fuse_bn_conv, reparameterize

__all__ = ["FFNetTS", "FFNetTSBackbone", "TokenMixer", "ChannelMixer", "FFNetTSBlock", "FlattenHead", "Mixing"]

Mixing = Literal["cross_variable", "channel_independent"]


def _pointwise(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv`` (a grouped 1x1 Conv1d) on group-major input ``[G, c_in/G, S]`` -> ``[G, c_out/G, S]``.

    One batched matmul with the conv's own weight: group g's output channels are ``g*c_out/G ...``, exactly
    as in ``conv`` on ``[B, c_in, S]``."""
    groups = conv.groups
    weight = conv.weight.view(groups, conv.out_channels // groups, conv.in_channels // groups)
    if conv.bias is None:
        return torch.bmm(weight, x)
    return torch.baddbmm(conv.bias.view(groups, -1, 1), weight, x)


def _ffn(x: torch.Tensor, conv1: nn.Conv1d, drop: nn.Dropout, act: nn.Module, conv2: nn.Conv1d,
         regroup: bool) -> torch.Tensor | None:
    """The block's FFN core ``conv2(regroup(act(drop(conv1(x)))))`` through core's cache-sliced
    :func:`~metamixer.kernels.fused_ffn.grouped_ffn` where it applies (CPU, exact GELU); None means: run it op by op."""
    if x.device.type != "cpu" or not isinstance(act, nn.GELU) or act.approximate != "none":
        return None
    return grouped_ffn(x, conv1, conv2, drop.p, drop.training, regroup=regroup)


def _batch_norm_cm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A BatchNorm over the channels of ``x`` = ``[G, C, S]`` (statistics over G and S; core's C kernel in
    training on CPU), or a folded no-op."""
    if isinstance(norm, nn.Identity):
        return x
    return batch_norm(norm, x) if isinstance(norm, nn.BatchNorm1d) else norm(x)


def _depthwise_cm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A depthwise 'same' conv (plain, Toeplitz, or an unfused :class:`RepDWConv` of conv+BN branches) on a
    channel-major ``[C, B, N]`` input. Each branch's BN sees the channel's B*N values, as on ``[B, C, N]``."""
    if isinstance(module, RepDWConv):
        out = None
        for branch in module.branches():
            y = _depthwise_cm(branch, x)
            out = y if out is None else out + y
        return out
    if isinstance(module, ConvBN):
        y = depthwise_conv1d_cbl(x, module.conv_module)
        channels, batch, length = y.shape
        return _batch_norm_cm(module.bn_module, y.reshape(1, channels, batch * length)).view(channels, batch, length)
    return depthwise_conv1d_cbl(x, module)


def _to_channel_major(x: torch.Tensor) -> torch.Tensor:
    """``[B, M, D, N]`` -> contiguous ``[M, D, B, N]``."""
    return x.permute(1, 2, 0, 3).contiguous()


def _from_channel_major(z: torch.Tensor) -> torch.Tensor:
    """``[M, D, B, N]`` -> ``[B, M, D, N]`` (a view)."""
    return z.permute(2, 0, 1, 3)


def _stem_cm(stem: nn.Sequential, x: torch.Tensor) -> torch.Tensor | None:
    """The patch stem (``Conv1d(1, D, P, stride)`` then BN, or the conv alone once BN is folded) on the padded
    series ``[B, M, L]``, computed straight into the channel-major ``[M, D, B, N]`` layout; None if the stem is
    not that shape (then it runs as modules on ``[B*M, 1, L]``).

    Why: the stem is a K=P (4) matmul per variable, ``W [D, P] @ patches [P, B*N]``. As a 1-input-channel conv
    on ``[B*M, 1, L]`` its backward and the BN over ``[B*M, D, N]`` (short rows, many of them) cost ~0.15 s of a
    ~1.3 s ETTh1 training step on one core, plus a layout copy into the blocks; this way ~0.07 s. The BN sees
    the same values per channel (its batch axis is M, its length B*N), so statistics and running stats are the
    same up to float rounding."""
    conv = stem[0]
    if not (isinstance(conv, nn.Conv1d) and conv.in_channels == 1 and conv.groups == 1 and conv.padding == (0,)
            and conv.dilation == (1,) and conv.padding_mode == "zeros"
            and all(isinstance(m, nn.BatchNorm1d) for m in stem[1:])):
        return None
    batch, m, _ = x.shape
    d, p = conv.out_channels, conv.kernel_size[0]
    patches = x.unfold(-1, p, conv.stride[0])  # [B, M, N, P]
    n = patches.shape[2]
    patches = patches.permute(1, 3, 0, 2).reshape(m, p, batch * n)
    weight = conv.weight.view(1, d, p).expand(m, d, p)
    y = torch.bmm(weight, patches) if conv.bias is None else torch.baddbmm(conv.bias.view(1, d, 1), weight, patches)
    for norm in stem[1:]:
        y = _batch_norm_cm(norm, y)  # [M, D, B*N]: BatchNorm1d's channels are D, its statistics over M and B*N
    return y.view(m, d, batch, n)


class TokenMixer(nn.Module):
    """CVIFFN + large-kernel temporal aggregation, with its residual: ``x + dw2(GELU(dw1(BN(CVIFFN(x)))))``.

    CVIFFN mixes variables: a grouped 1x1 conv with ``groups=D`` maps, for each feature, the M variables to
    ``expansion*M`` hidden units (drop 0.3, GELU); a second grouped 1x1 conv with ``groups=M`` maps each group of
    ``expansion*D`` hidden channels back to D (drop 0.15). The two depthwise k=51 convs then aggregate over time.
    ``mixing="channel_independent"`` replaces the cross-variable 1x1 convs by per-variable ones (parameters grow
    with M instead of M^2; keys keep their names but shapes differ from the official ones).
    """

    def __init__(
        self,
        n_vars: int,
        d_model: int,
        kernel_size: int = 51,
        expansion: int = 2,
        drop_hidden: float = 0.3,
        drop_out: float = 0.15,
        mixing: Mixing = "cross_variable",
    ) -> None:
        super().__init__()
        self.n_vars, self.d_model, self.expansion, self.mixing = n_vars, d_model, expansion, mixing
        channels, hidden = n_vars * d_model, n_vars * d_model * expansion
        first_groups = d_model if mixing == "cross_variable" else n_vars
        self.ffnpw1 = nn.Conv1d(channels, hidden, 1, groups=first_groups)
        self.ffn_drop1 = FastDropout(drop_hidden)
        self.act1 = nn.GELU()
        self.ffnpw2 = nn.Conv1d(hidden, channels, 1, groups=n_vars)
        self.ffn_drop2 = FastDropout(drop_out)
        self.norm = nn.BatchNorm1d(d_model)
        self.dw1 = DepthwiseConv1dToeplitz(channels, kernel_size)
        self.act2 = nn.GELU()
        self.dw2 = DepthwiseConv1dToeplitz(channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, M, D, N]`` -> ``[B, M, D, N]``."""
        return _from_channel_major(self.forward_cm(_to_channel_major(x)))

    def forward_cm(self, z: torch.Tensor) -> torch.Tensor:
        """Channel-major ``[M, D, B, N]`` -> ``[M, D, B, N]`` (what the backbone calls)."""
        m, d, batch, n = z.shape
        s, e = batch * n, self.expansion
        cross = self.mixing == "cross_variable"
        # cross-variable: groups = features, each maps its M variables to e*M hidden units (hidden j = m*e + i);
        # the second conv's group m then takes its e*D hidden channels
        x = z.transpose(0, 1).reshape(d, m, s) if cross else z.view(m, d, s)
        y = _ffn(x, self.ffnpw1, self.ffn_drop1, self.act1, self.ffnpw2, regroup=cross)
        if y is None:
            h = self.act1(self.ffn_drop1(_pointwise(x, self.ffnpw1)))  # [D, e*M, S] or [M, e*D, S]
            if cross:
                h = h.view(d, m, e, s).permute(1, 2, 0, 3).reshape(m, e * d, s)
            y = _pointwise(h, self.ffnpw2)
        y = self.ffn_drop2(y)  # [M, D, S]
        y = _batch_norm_cm(self.norm, y).view(m * d, batch, n)
        y = depthwise_conv1d_cbl(self.act2(depthwise_conv1d_cbl(y, self.dw1)), self.dw2)
        return z + y.view(m, d, batch, n)


class ChannelMixer(nn.Module):
    """Re-parameterizable depthwise large-kernel conv + BN, then CIFFN, with its residual.

    ``dw`` = depthwise k=51 conv+BN plus k=5 conv+BN (fused into one k=51 conv by :meth:`FFNetTS.fuse`).
    CIFFN: per-variable 1x1 expansion D -> D*ffn_ratio (``groups=M``, dropout=``drop``, GELU), then a grouped 1x1
    conv with ``groups=D`` that maps, for each feature, ffn_ratio hidden units of all M variables back to M values
    (cross-variable), dropout 0.15.
    """

    def __init__(
        self,
        n_vars: int,
        d_model: int,
        ffn_ratio: int,
        kernel_size: int = 51,
        small_kernel: int | None = 5,
        drop: float = 0.1,
        drop_out: float = 0.15,
        mixing: Mixing = "cross_variable",
    ) -> None:
        super().__init__()
        self.n_vars, self.d_model, self.ffn_ratio, self.mixing = n_vars, d_model, ffn_ratio, mixing
        channels, hidden = n_vars * d_model, n_vars * d_model * ffn_ratio
        small = (small_kernel,) if small_kernel else ()
        self.dw = RepDWConv(
            channels, kernel_size, small_kernels=small, ndim=1,
            names=("lkb_origin", "small_conv"), conv_bn_names=("conv", "bn"),
        )
        swap_depthwise_convs(self.dw)  # the k=51 branch runs as a Toeplitz matmul on CPU
        self.norm = nn.BatchNorm1d(d_model)
        self.ffnpw1 = nn.Conv1d(channels, hidden, 1, groups=n_vars)
        self.ffn_drop1 = FastDropout(drop)
        self.act = nn.GELU()
        second_groups = d_model if mixing == "cross_variable" else n_vars
        self.ffnpw2 = nn.Conv1d(hidden, channels, 1, groups=second_groups)
        self.ffn_drop2 = FastDropout(drop_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, M, D, N]`` -> ``[B, M, D, N]``."""
        return _from_channel_major(self.forward_cm(_to_channel_major(x)))

    def forward_cm(self, z: torch.Tensor) -> torch.Tensor:
        """Channel-major ``[M, D, B, N]`` -> ``[M, D, B, N]`` (what the backbone calls)."""
        m, d, batch, n = z.shape
        s, r = batch * n, self.ffn_ratio
        y = _depthwise_cm(self.dw, z.view(m * d, batch, n))
        y = _batch_norm_cm(self.norm, y.view(m, d, s))
        cross = self.mixing == "cross_variable"
        # per variable D -> dff (dff index = d*r + i); cross-variable: the second conv's group d (a feature) maps
        # r hidden units of all M variables to M
        out = _ffn(y, self.ffnpw1, self.ffn_drop1, self.act, self.ffnpw2, regroup=cross)
        if out is None:
            h = self.act(self.ffn_drop1(_pointwise(y, self.ffnpw1)))  # [M, dff, S]
            if cross:
                h = h.view(m, d, r, s).permute(1, 2, 0, 3).reshape(d, r * m, s)
            out = _pointwise(h, self.ffnpw2)
        out = self.ffn_drop2(out)
        if cross:  # [D, M, S]
            return z + out.view(d, m, batch, n).transpose(0, 1)
        return z + out.view(m, d, batch, n)


class FFNetTSBlock(nn.Module):
    """One FFNet block: token mixer then channel mixer (each carries its own residual)."""

    def __init__(self, token_mixer: TokenMixer, channel_mixer: ChannelMixer) -> None:
        super().__init__()
        self.token_mixer = token_mixer
        self.channel_mixer = channel_mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, M, D, N]`` -> ``[B, M, D, N]``."""
        return _from_channel_major(self.forward_cm(_to_channel_major(x)))

    def forward_cm(self, z: torch.Tensor) -> torch.Tensor:
        """Channel-major ``[M, D, B, N]`` -> ``[M, D, B, N]``."""
        return self.channel_mixer.forward_cm(self.token_mixer.forward_cm(z))


class _Stage(nn.Module):
    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, M, D, N]`` -> ``[B, M, D, N]``."""
        return _from_channel_major(self.forward_cm(_to_channel_major(x)))

    def forward_cm(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = block.forward_cm(z)
        return z


class FlattenHead(nn.Module):
    """Shared linear head: ``[B, M, D, N]`` -> flatten ``D*N`` -> ``pred_len`` (same weights for every variable)."""

    def __init__(self, in_features: int, pred_len: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, pred_len)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(x.flatten(start_dim=-2)))


def _patch_count(seq_len: int, patch_size: int, patch_stride: int, n_stages: int, downsample_ratio: int) -> int:
    padded = seq_len + (patch_size - patch_stride if patch_size != patch_stride else 0)
    n = (padded - patch_size) // patch_stride + 1
    for _ in range(n_stages - 1):
        n = -(-n // downsample_ratio)
    return n


class FFNetTSBackbone(nn.Module):
    """RevIN -> patch stem -> stages of FFNet blocks -> shared flatten head -> RevIN^-1 (the official ``model.*``)."""

    def __init__(
        self,
        n_vars: int,
        seq_len: int = 96,
        pred_len: int = 96,
        ffn_ratio: int = 2,
        dims: Sequence[int] = (64,),
        num_blocks: Sequence[int] = (1,),
        large_kernel: int | Sequence[int] = 51,
        small_kernel: int | None | Sequence[int | None] = 5,
        patch_size: int = 4,
        patch_stride: int = 2,
        downsample_ratio: int = 2,
        token_expansion: int = 2,
        dropout: float = 0.1,
        token_dropouts: tuple[float, float] = (0.3, 0.15),
        channel_out_dropout: float = 0.15,
        head_dropout: float = 0.0,
        mixing: Mixing = "cross_variable",
        revin: bool = True,
        affine: bool = False,
        subtract_last: bool = False,
    ) -> None:
        super().__init__()
        n_stages = len(num_blocks)
        if len(dims) < n_stages:
            raise ValueError(f"dims {list(dims)} must give one width per stage ({n_stages} stages)")
        larges = [large_kernel] * n_stages if isinstance(large_kernel, int) else list(large_kernel)
        smalls = list(small_kernel) if isinstance(small_kernel, (list, tuple)) else [small_kernel] * n_stages
        self.n_vars, self.seq_len, self.pred_len = n_vars, seq_len, pred_len
        self.patch_size, self.patch_stride, self.downsample_ratio = patch_size, patch_stride, downsample_ratio
        self.use_revin = revin
        self.revin_layer = RevIN(n_vars, affine=affine, subtract_last=subtract_last) if revin else None

        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv1d(1, dims[0], patch_size, stride=patch_stride), nn.BatchNorm1d(dims[0]))]
        )
        for i in range(1, n_stages):
            self.downsample_layers.append(
                nn.Sequential(
                    nn.BatchNorm1d(dims[i - 1]),
                    nn.Conv1d(dims[i - 1], dims[i], downsample_ratio, stride=downsample_ratio),
                )
            )
        self.stages = nn.ModuleList()
        for i in range(n_stages):
            blocks = [
                FFNetTSBlock(
                    TokenMixer(n_vars, dims[i], larges[i], token_expansion, *token_dropouts, mixing=mixing),
                    ChannelMixer(n_vars, dims[i], ffn_ratio, larges[i], smalls[i], dropout, channel_out_dropout, mixing),
                )
                for _ in range(num_blocks[i])
            ]
            self.stages.append(_Stage(blocks))
        self.num_patches = _patch_count(seq_len, patch_size, patch_stride, n_stages, downsample_ratio)
        self.head = FlattenHead(dims[n_stages - 1] * self.num_patches, pred_len, head_dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, M, L]`` (already normalized) -> ``[B, M, D, N]``."""
        batch, m, length = x.shape
        y = x.reshape(batch * m, 1, length)
        if self.patch_size != self.patch_stride:  # pad the end with copies of the last value
            y = torch.cat([y, y[:, :, -1:].expand(-1, -1, self.patch_size - self.patch_stride)], dim=-1)
        for i, stage in enumerate(self.stages):
            if i > 0 and y.shape[-1] % self.downsample_ratio:
                pad = self.downsample_ratio - y.shape[-1] % self.downsample_ratio
                y = torch.cat([y, y[:, :, -pad:]], dim=-1)
            z = _stem_cm(self.downsample_layers[0], y.view(batch, m, y.shape[-1])) if i == 0 else None
            if z is None:
                y = self.downsample_layers[i](y)  # [B*M, D, N]
                z = _to_channel_major(y.view(batch, m, y.shape[1], y.shape[2]))
            z = stage.forward_cm(z)
            y = _from_channel_major(z).reshape(batch * m, z.shape[1], z.shape[3])
        return y.view(batch, m, y.shape[1], y.shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = None
        if self.revin_layer is not None:
            x, stats = self.revin_layer.normalize(x)
        y = self.head(self.forward_features(x.transpose(1, 2))).transpose(1, 2)  # [B, H, M]
        if self.revin_layer is not None:
            y = self.revin_layer.denormalize(y, stats)
        return y


class FFNetTS(nn.Module):
    """The forecaster users build: ``FFNetTS(...)(x [B, L, M]) -> [B, H, M]``.

    It holds the network as ``self.model`` so the state_dict keys carry the authors' ``model.`` prefix.
    ``forward(x, x_mark=None)`` accepts (and ignores) time features, as the official model does.
    """

    def __init__(self, n_vars: int, seq_len: int = 96, pred_len: int = 96, **options: object) -> None:
        super().__init__()
        self.model = FFNetTSBackbone(n_vars, seq_len, pred_len, **options)  # type: ignore[arg-type]
        self.n_vars, self.seq_len, self.pred_len = n_vars, seq_len, pred_len

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.seq_len or x.shape[2] != self.n_vars:
            raise ValueError(
                f"FFNetTS expects input [batch, seq_len={self.seq_len}, n_vars={self.n_vars}], got {list(x.shape)}"
            )
        return self.model(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[B, M, D, N]`` of an *unnormalized* input ``[B, L, M]`` (RevIN applied)."""
        if self.model.revin_layer is not None:
            x, _ = self.model.revin_layer.normalize(x)
        return self.model.forward_features(x.transpose(1, 2))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Head on ``[B, M, D, N]`` -> normalized-space forecast ``[B, M, H]`` (before RevIN denormalization)."""
        return self.model.head(features)

    def fuse(self) -> FFNetTS:
        """A new, eval-mode deploy model (out of place; the training model is untouched):

        - every re-param branch (k=51 + k=5, each with BN) merged into one k=51 depthwise conv (core
          ``reparameterize``), run as a Toeplitz matmul on CPU;
        - every BatchNorm folded into the conv before it (stem conv; token-mixer ``ffnpw2``; channel-mixer ``dw``),
          so the deploy model has no BN left. The per-feature BN(D) acts on ``[B*M, D, N]``, i.e. on channel
          ``m*D + d`` of the preceding conv, so its scale/shift are tiled over the M variables.
        """
        fused = reparameterize(self, inplace=False)
        net = fused.model
        for i, layer in enumerate(net.downsample_layers):
            if len(layer) != 2:
                continue  # already folded
            if i == 0:  # stem: conv -> BN
                net.downsample_layers[i] = nn.Sequential(_fold_bn(layer[0], layer[1], 1))
            else:  # down-sampler: BN -> conv (k=2, s=2, no padding, so the fold is exact)
                weight, bias = fuse_bn_conv(layer[0], layer[1])
                conv = copy.deepcopy(layer[1])
                conv.weight = nn.Parameter(weight.clone())
                conv.bias = nn.Parameter(bias.clone())
                net.downsample_layers[i] = nn.Sequential(conv)
        for stage in net.stages:
            for block in stage.blocks:
                tm, cm = block.token_mixer, block.channel_mixer
                if isinstance(tm.norm, nn.BatchNorm1d):
                    tm.ffnpw2 = _fold_bn(tm.ffnpw2, tm.norm, tm.n_vars)
                    tm.norm = _TiledIdentity()
                if isinstance(cm.norm, nn.BatchNorm1d) and isinstance(cm.dw, nn.Conv1d):
                    cm.dw = _fold_bn(cm.dw, cm.norm, cm.n_vars)
                    cm.norm = _TiledIdentity()
        swap_depthwise_convs(fused)
        return fused.eval()


class _TiledIdentity(nn.Identity):
    """Placeholder for a BatchNorm that :meth:`FFNetTS.fuse` folded into the preceding conv."""


@torch.no_grad()
def _fold_bn(conv: nn.Conv1d, bn: nn.BatchNorm1d, repeats: int) -> nn.Conv1d:
    """A new conv equal to ``bn(conv(x))`` where the BN's C channels repeat ``repeats`` times over the conv's
    ``repeats*C`` output channels (channel ``r*C + c`` uses BN channel ``c``)."""
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).repeat(repeats)
    shift = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)).repeat(repeats)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    out = nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True).to(conv.weight)
    out.weight.copy_(conv.weight * scale.view(-1, 1, 1))
    out.bias.copy_(bias * scale + shift)
    return out
