"""U-FFNet and its all-attention U-DiT baseline: a U-shaped latent diffusion transformer.

Layout (U-DiT, NeurIPS 2024, as published): 3x3 conv patch embed (patch size 1) -> encoder level 1 (C) ->
conv+pixel-unshuffle -> level 2 (2C) -> conv+pixel-unshuffle -> bottleneck (4C) -> conv+pixel-shuffle, concat
skip, 1x1 reduce -> decoder level 2 (2C) -> conv+pixel-shuffle, concat skip, 1x1 reduce -> decoder level 1 (2C)
-> 3x3 conv -> adaLN final layer -> 3x3 conv to 2*in_channels (epsilon + learned variance). Stage depths
[2, 5, 8, 5, 2] count U-DiT blocks, each made of ``sub_blocks`` (2) adaLN-modulated (token mixer + FFN) pairs.
Every level has its own timestep/label embedder at its width; decoder level 1 uses level 2's condition.

U-FFNet (FFNet paper §4.4): the encoder/decoder pairs are FFNet blocks — FFNified attention (1x1 conv+BN -> DW
7x7 -> GELU -> DW 7x7, re-parameterizable 7+3 branches, from ``metamixer``) as token mixer and FFNet's channel
mixer (``metamixer``'s ConvFFN: DW 7x7 + FFN, expansion 3) — inside the same adaLN-Zero modulation, and the
bottleneck keeps U-DiT's downsampled-token self-attention and FFN. ``token_mixers`` and ``channel_mixers``
choose per level, so the same class builds U-FFNet, its literal reading and U-DiT (docs/generation.md §1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metamixer.nn.blocks import ConvFFN, FFNifiedAttention
from metamixer.nn.reparam import reparameterize
from metamixer.train.errors import FFNetError

from .attention import DownsampledTokenAttention
from .conditioning import AdaLNModulation, LabelEmbedder, ParameterFreeLayerNorm2d, TimestepEmbedder, modulate
from .ffn import RepConvFFN, plain_conv_ffn

__all__ = ["DiffusionBlock", "UShapedDiffusionTransformer", "TOKEN_MIXERS", "CHANNEL_MIXERS"]

TOKEN_MIXERS = ("ffnified", "attention")
#: "udit": U-DiT's FFN (1x1 -> GELU -> DW 5x5 -> 1x1, ratio ``mlp_ratio``); "convnext": FFNet's channel mixer
CHANNEL_MIXERS = ("udit", "convnext")


class DiffusionBlock(nn.Module):
    """adaLN-Zero block on a feature map: x += g1 * TM(mod(LN(x))); x += g2 * FFN(mod(LN(x)))."""

    def __init__(self, dim: int, token_mixer: nn.Module, channel_mixer: nn.Module) -> None:
        super().__init__()
        self.norm1 = ParameterFreeLayerNorm2d()
        self.token_mixer = token_mixer
        self.norm2 = ParameterFreeLayerNorm2d()
        self.channel_mixer = channel_mixer
        self.adaLN_modulation = AdaLNModulation(dim, dim, 6)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c)
        x = x + gate1[:, :, None, None] * self.token_mixer(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, :, None, None] * self.channel_mixer(modulate(self.norm2(x), shift2, scale2))


class _Stage(nn.ModuleList):
    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, c)
        return x


class FinalLayer(nn.Module):
    """Parameter-free LN + adaLN (shift, scale) + 3x3 conv to the output channels (zero-initialised)."""

    def __init__(self, dim: int, out_channels: int) -> None:
        super().__init__()
        self.norm = ParameterFreeLayerNorm2d()
        self.adaLN_modulation = AdaLNModulation(dim, dim, 2)
        self.out_proj = nn.Conv2d(dim, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)
        return self.out_proj(modulate(self.norm(x), shift, scale))


def _down(dim: int) -> nn.Sequential:
    """3x3 conv to C/2 then pixel-unshuffle: half the resolution, twice the channels."""
    return nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def _up(dim: int) -> nn.Sequential:
    """3x3 conv to 2C then pixel-shuffle: twice the resolution, half the channels."""
    return nn.Sequential(nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


class UShapedDiffusionTransformer(nn.Module):
    """Class-conditional epsilon(+variance) network ``forward(x, t, y) -> [B, out_channels, H, W]``.

    Args:
        input_size: spatial size of the (latent or pixel) input; must be divisible by 4 (two downsamplings)
            times ``down_factor`` (token downsampling in attention levels).
        in_channels: 4 for SD-VAE latents, 1 or 3 in pixel mode.
        num_classes: labels 0..num_classes-1; index ``num_classes`` is the null label of guidance.
        hidden: C, the width of encoder level 1 (96 / 192 / 384 for S / B / L).
        depths: U-DiT blocks per level (enc1, enc2, bottleneck, dec2, dec1).
        num_heads: attention heads at every level (4 / 8 / 16 for S / B / L, as U-DiT).
        token_mixers: per level ``"ffnified"`` or ``"attention"``.
        channel_mixers: per level ``"udit"`` (U-DiT's FFN, ratio ``mlp_ratio``) or ``"convnext"`` (FFNet's: DW
            ``ffnified_kernel`` with the re-param branches when ``rep_ffn``, BN, FFN expansion ``ffnet_expansion``).
        sub_blocks: (token mixer + FFN) pairs per U-DiT block (2 in U-DiT).
        mlp_ratio: FFN expansion (2 in U-DiT); ``rep_ffn`` trains it in U-DiT's re-parameterizable form.
        ffnified_kernel / ffnified_rep_kernels: the FFNet mixers' DW kernel and its small re-param branches
            (FFNified attention and the ``"convnext"`` channel mixer).
        down_factor / cosine_attention / rope: U-DiT attention options.
        class_dropout: probability of replacing a label by the null label in training (guidance).
        label_init_std: std of the label tables' init: DiT's 0.02 for long runs; short runs need ~1 (a label
            starts to matter only once both its row and the zero-initialised adaLN weights are non-negligible;
            docs/generation.md §4).
        learn_sigma: output 2*in_channels (epsilon and variance interpolation).
    """

    def __init__(self, *, input_size: int = 32, in_channels: int = 4, num_classes: int = 1000, hidden: int = 192,
                 depths: Sequence[int] = (2, 5, 8, 5, 2), num_heads: int = 8,
                 token_mixers: Sequence[str] = ("ffnified", "ffnified", "attention", "ffnified", "ffnified"),
                 channel_mixers: Sequence[str] = ("convnext", "convnext", "udit", "convnext", "convnext"),
                 ffnet_expansion: float = 3.0,
                 sub_blocks: int = 2, mlp_ratio: float = 2.0, rep_ffn: bool = True, ffnified_kernel: int = 7,
                 ffnified_rep_kernels: Sequence[int] | None = (3,), down_factor: int = 2,
                 cosine_attention: bool = True, rope: bool = True, class_dropout: float = 0.1,
                 label_init_std: float = 0.02, learn_sigma: bool = True) -> None:
        super().__init__()
        if len(depths) != 5 or len(token_mixers) != 5 or len(channel_mixers) != 5:
            raise FFNetError("model.depths, model.token_mixers and model.channel_mixers need 5 entries "
                             "(enc1, enc2, bottleneck, dec2, dec1)")
        for key, values, allowed in (("token_mixers", token_mixers, TOKEN_MIXERS),
                                     ("channel_mixers", channel_mixers, CHANNEL_MIXERS)):
            bad = [m for m in values if m not in allowed]
            if bad:
                raise FFNetError(f"model.{key} entries must be in {allowed}, got {bad}")
        if hidden % 2:
            raise FFNetError(f"model.hidden must be even, got {hidden}")
        self.input_size, self.in_channels, self.num_classes = input_size, in_channels, num_classes
        self.learn_sigma = learn_sigma
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.class_dropout = class_dropout
        self.label_init_std = label_init_std
        self.token_mixers = tuple(token_mixers)
        self.channel_mixers = tuple(channel_mixers)
        widths = (hidden, 2 * hidden, 4 * hidden, 2 * hidden, 2 * hidden)
        self._min_size = 4 * (down_factor if "attention" in token_mixers else 1)
        check_input_size(input_size, self._min_size)

        def token_mixer(kind: str, dim: int) -> nn.Module:
            if kind == "attention":
                return DownsampledTokenAttention(dim, num_heads, down_factor=down_factor,
                                                 cosine=cosine_attention, rope=rope)
            rep = tuple(ffnified_rep_kernels) if ffnified_rep_kernels else None
            return FFNifiedAttention(dim, ffnified_kernel, ndim=2, rep_kernels=rep, fc_norm=True,
                                     conv_norm=rep is None)

        def channel_mixer(kind: str, dim: int) -> nn.Module:
            if kind == "convnext":  # FFNet's channel mixer: DW k (7x7+3x3 re-param, BN) -> 1x1 3C -> GELU -> 1x1
                rep = tuple(ffnified_rep_kernels) if (rep_ffn and ffnified_rep_kernels) else None
                return ConvFFN(dim, ffnified_kernel, ffnet_expansion, ndim=2, rep_kernels=rep, dw_norm=True)
            return RepConvFFN(dim, mlp_ratio) if rep_ffn else plain_conv_ffn(dim, int(dim * mlp_ratio))

        def stage(level: int) -> _Stage:
            dim = widths[level]
            return _Stage(DiffusionBlock(dim, token_mixer(token_mixers[level], dim),
                                         channel_mixer(channel_mixers[level], dim))
                          for _ in range(depths[level] * sub_blocks))

        self.x_embedder = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.t_embedders = nn.ModuleList(TimestepEmbedder(w) for w in widths[:3])
        self.y_embedders = nn.ModuleList(LabelEmbedder(num_classes, w, class_dropout) for w in widths[:3])
        self.encoder1, self.down1 = stage(0), _down(hidden)
        self.encoder2, self.down2 = stage(1), _down(2 * hidden)
        self.bottleneck = stage(2)
        self.up2, self.reduce2 = _up(4 * hidden), nn.Conv2d(4 * hidden, 2 * hidden, 1)
        self.decoder2 = stage(3)
        self.up1, self.reduce1 = _up(2 * hidden), nn.Conv2d(2 * hidden, 2 * hidden, 1)
        self.decoder1 = stage(4)
        self.output = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1)
        self.final_layer = FinalLayer(2 * hidden, self.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for emb in self.y_embedders:
            nn.init.normal_(emb.embedding_table.weight, std=self.label_init_std)
        for emb in self.t_embedders:
            nn.init.normal_(emb.mlp[0].weight, std=0.02)
            nn.init.normal_(emb.mlp[2].weight, std=0.02)
        for m in self.modules():  # adaLN-Zero: every block and the final layer start as identity / zero
            if isinstance(m, AdaLNModulation):
                nn.init.zeros_(m[1].weight)
                nn.init.zeros_(m[1].bias)
        nn.init.zeros_(self.final_layer.out_proj.weight)
        nn.init.zeros_(self.final_layer.out_proj.bias)

    def conditions(self, t: torch.Tensor, y: torch.Tensor, drop_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """One condition vector t_emb + y_emb per level width (C, 2C, 4C); one label-drop mask for all."""
        if drop_mask is None and self.training and self.class_dropout > 0:
            drop_mask = torch.rand(y.shape[0], device=y.device) < self.class_dropout
        return [te(t) + ye(y, drop_mask) for te, ye in zip(self.t_embedders, self.y_embedders)]

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                drop_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] % self._min_size or x.shape[-2] % self._min_size:
            raise FFNetError(f"input {tuple(x.shape[-2:])} must be divisible by {self._min_size}")
        c1, c2, c3 = self.conditions(t, y, drop_mask)
        skip1 = self.encoder1(self.x_embedder(x), c1)
        skip2 = self.encoder2(self.down1(skip1), c2)
        h = self.bottleneck(self.down2(skip2), c3)
        h = self.decoder2(self.reduce2(torch.cat([self.up2(h), skip2], dim=1)), c2)
        h = self.decoder1(self.reduce1(torch.cat([self.up1(h), skip1], dim=1)), c2)
        return self.final_layer(self.output(h), c2)

    def fuse(self) -> nn.Module:
        """Deploy form: every re-parameterizable branch folded (new model, training weights untouched)."""
        return reparameterize(self, inplace=False)


def check_input_size(input_size: int, multiple: int) -> None:
    if input_size < multiple or input_size % multiple:
        raise FFNetError(f"model input_size must be a positive multiple of {multiple}, got {input_size}")
