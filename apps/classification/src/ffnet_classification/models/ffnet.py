"""FFNet-1..4 for ImageNet classification, laid out so the authors' released checkpoints load strictly.

The module tree is chosen so that ``state_dict()`` keys equal the official ones (see
``../shared/reference/official_state_dicts/ffnet_N.json``) in BOTH forms:

* train form: ``stages.2.1.token_mixer.0.main.conv1.conv.c.weight`` (RepVGG branches with BN),
* fused form (``model.fuse()`` = :func:`metamixer.reparameterize`): ``stages.2.1.token_mixer.0.main.conv1.weight``.

Naming facts this relies on (official_architecture.md §1):
``patch_embed`` = [ConvBN, GELU, ConvBN]; ``stages.i`` = [PatchMerging (i>0), blocks...];
``token_mixer`` = Sequential(Residual(FFNifiedAttention), Identity-SE); ``channel_mixer`` = Residual(ConvFFN);
``PatchMerging.proj`` = [RepDWConv(C->2C, k7, s2), ResidualConv1x1]; the final ``norm`` BN stays unfused.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from metamixer.nn.blocks import ConvFFN, FFNetBlock, FFNifiedAttention, Residual
from metamixer.nn.layers import linear_ramp
from metamixer.nn.reparam import ConvBN, RepDWConv, ResidualConv1x1, reparameterize

from .features import feature_take_indices

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FFNetSpec:
    """Architecture hyper-parameters of one FFNet variant (the official ``ffnet_N`` factory defaults)."""

    widths: tuple[int, ...] = (80, 160, 320, 640)
    depths: tuple[int, ...] = (2, 2, 8, 2)
    stem_dim: int = 64
    token_kernels1: tuple[int, ...] = (3, 3, 7, 7)
    token_kernels2: tuple[int, ...] = (3, 3, 7, 7)
    channel_kernels: tuple[int, ...] = (3, 3, 3, 3)
    expansion: int = 3
    layer_scale_init: float | None = None
    drop_path_rate: float = 0.0  # timm's default; the recipes set the paper's rates (registry.PAPER_DROP_PATH)
    small_kernel: int = 3
    act: str = "gelu"


@dataclass(frozen=True)
class PretrainedCfg:
    """timm's pretrained cfg (``timm.models.PretrainedCfg``): the same fields, in the same order, with FFNet's
    defaults. It describes the weights of a variant and the preprocessing they expect.

    ``to_dict()`` drops unset (``None``) fields except ``pool_size`` / ``first_conv`` / ``classifier``, as timm's
    ``PretrainedCfg.to_dict()`` does, so ``model.pretrained_cfg`` looks like a timm model's. ``num_classes`` is
    the class count of the pretrained head (a model built with another ``num_classes`` keeps this value, as in
    timm). ``fixed_input_size`` is ``False``: FFNet is a plain conv net and takes any input size.
    """

    url: str | None = None
    file: str | None = None
    state_dict: dict[str, Any] | None = None
    hf_hub_id: str | None = None
    hf_hub_filename: str | None = None
    source: str | None = None
    architecture: str | None = None
    tag: str | None = None
    custom_load: bool = False
    input_size: tuple[int, int, int] = (3, 256, 256)
    test_input_size: tuple[int, int, int] | None = None
    min_input_size: tuple[int, int, int] | None = None
    fixed_input_size: bool = False
    interpolation: str = "bicubic"
    crop_pct: float = 0.9
    test_crop_pct: float | None = None
    crop_mode: str = "center"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_classes: int = 1000
    label_offset: int | None = None
    label_names: tuple[str, ...] | None = None
    label_descriptions: dict[str, str] | None = None
    pool_size: tuple[int, ...] | None = None
    test_pool_size: tuple[int, ...] | None = None
    first_conv: str | None = "patch_embed.0.c"
    classifier: str | None = "head"
    license: str | None = None
    description: str | None = None
    origin_url: str | None = None
    paper_name: str | None = None
    paper_ids: str | tuple[str, ...] | None = None
    notes: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        keep = {"pool_size", "first_conv", "classifier"}
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None or f.name in keep}


#: the timm field names (``PretrainedCfg`` rejects any other key with a TypeError)
PRETRAINED_CFG_FIELDS = tuple(f.name for f in fields(PretrainedCfg))

#: the first conv's module name in each form (the fused stem conv replaces the ConvBN at ``patch_embed.0``)
FIRST_CONV = {False: "patch_embed.0.c", True: "patch_embed.0"}

#: timm's global pooling types (``SelectAdaptivePool2d``); ``''`` is none (a feature map out)
POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


class PatchMerging(nn.Module):
    """Strided downsampler C -> 2C: depthwise RepVGG 7x7+3x3 with channel multiplier 2, then ``x + 1x1(BN(x))``.

    No activation inside (official §1.3). Fuses to a DW 7x7 conv and a single 1x1 conv (identity folded in).
    """

    def __init__(self, dim_in: int, dim_out: int, small_kernel: int = 3) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            RepDWConv(dim_in, 7, small_kernels=(small_kernel,), stride=2, out_channels=dim_out, names=("conv", "conv1")),
            ResidualConv1x1(dim_out, name="conv", bn_conv_names=("bn", "c")),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _ffnet_block(dim: int, k1: int, k2: int, kc: int, spec: FFNetSpec, drop_path: float) -> FFNetBlock:
    """One FFBlock; kernels > small_kernel get RepVGG branches, k == small_kernel is a plain biased DW conv
    (token mixer) or one conv+BN (channel mixer), exactly as in the official layout."""
    small = spec.small_kernel
    if (k1 > small) != (k2 > small):
        raise ValueError(f"token-mixer kernels {k1}/{k2}: both must be re-param (> {small}) or both plain")
    rep_names = ("conv", "conv1")
    tm = FFNifiedAttention(
        dim,
        kernel_size=k1,
        kernel_size2=k2,
        ndim=2,
        rep_kernels=(small,) if k1 > small else None,
        fc_norm=True,
        act=spec.act,
        names=("fc", "conv1", "act", "conv2"),
        rep_names=rep_names,
        conv_bn_names=("c", "bn"),
    )
    cm = ConvFFN(
        dim,
        kernel_size=kc,
        expansion=spec.expansion,
        ndim=2,
        rep_kernels=(small,) if kc > small else None,
        dw_norm=True,
        act=spec.act,
        names=("conv", "fc1", "act", "fc2"),
        rep_names=rep_names,
        conv_bn_names=("c", "bn"),
    )
    token_mixer = nn.Sequential(
        Residual(tm, dim, layer_scale_init=spec.layer_scale_init, drop_path=drop_path),
        nn.Identity(),  # the official SE slot (off in every variant); keeps index 0 for the residual
    )
    channel_mixer = Residual(cm, dim, layer_scale_init=spec.layer_scale_init, drop_path=drop_path)
    return FFNetBlock(token_mixer, channel_mixer)


class FFNet(nn.Module):
    """FFNet image classifier (paper: "FFNet: MetaMixer-based Efficient Convolutional Mixer Design", FFNet-1..4).

    Follows timm's model contract: ``forward_features`` / ``forward_head(pre_logits=)`` /
    ``forward_intermediates`` / ``prune_intermediate_layers``, ``reset_classifier(num_classes, global_pool)``,
    ``no_weight_decay``, ``set_grad_checkpointing``, ``group_matcher``, ``feature_info`` (a list of dicts, as
    timm classifiers have) and ``pretrained_cfg`` / ``default_cfg``. ``forward`` is scriptable
    (``torch.jit.script``) in the train and the fused form. ``fuse()`` returns the deploy form.
    """

    def __init__(
        self,
        spec: FFNetSpec = FFNetSpec(),
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float | None = None,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        pretrained_cfg: PretrainedCfg | dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if drop_path_rate is not None:
            spec = replace(spec, drop_path_rate=float(drop_path_rate))
        n = len(spec.widths)
        for name in ("depths", "token_kernels1", "token_kernels2", "channel_kernels"):
            if len(getattr(spec, name)) != n:
                raise ValueError(f"FFNetSpec.{name} needs {n} entries (one per stage), got {getattr(spec, name)}")
        _check_pool(global_pool, num_classes)
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = spec.widths[-1]
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.head_hidden_size = self._pooled_features()
        self.grad_checkpointing = False
        cfg = pretrained_cfg if pretrained_cfg is not None else PretrainedCfg()
        self.pretrained_cfg = cfg.to_dict() if isinstance(cfg, PretrainedCfg) else dict(cfg)
        self.default_cfg = self.pretrained_cfg

        self.patch_embed = nn.Sequential(
            ConvBN(in_chans, spec.stem_dim, 3, stride=2, names=("c", "bn")),
            nn.GELU(),
            ConvBN(spec.stem_dim, spec.widths[0], 3, stride=2, names=("c", "bn")),
        )
        rates = linear_ramp(sum(spec.depths), spec.drop_path_rate)
        stages: list[nn.Module] = []
        self.feature_info = []  # list of dicts (no annotation here: TorchScript warns on __init__ annotations)
        idx = 0
        for i, (dim, depth) in enumerate(zip(spec.widths, spec.depths)):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(PatchMerging(spec.widths[i - 1], dim, spec.small_kernel))
            for _ in range(depth):
                layers.append(
                    _ffnet_block(
                        dim, spec.token_kernels1[i], spec.token_kernels2[i], spec.channel_kernels[i], spec, rates[idx]
                    )
                )
                idx += 1
            stages.append(nn.Sequential(*layers))
            self.feature_info.append({"num_chs": dim, "reduction": 4 * 2**i, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    # ------------------------------------------------------------------ timm contract
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names of parameters that must not be weight-decayed (LayerScale gammas); norms/biases go by ndim."""
        return {n for n, _ in self.named_parameters() if n.endswith("layer_scale") or ".gamma" in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay (timm ``param_groups_layer_decay``)."""
        return {
            "stem": r"^patch_embed",
            "blocks": r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.(\d+)", None), (r"^norm", (99999,))],
        }

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def _pooled_features(self) -> int:
        return self.num_features * (2 if self.global_pool == "catavgmax" else 1)

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head (fine-tuning to another label set); ``num_classes=0`` makes the model a backbone.

        ``global_pool``: timm's pooling types ``avg`` / ``max`` / ``avgmax`` / ``catavgmax`` (twice the
        features) or ``''`` (no pooling: ``forward`` returns the feature map; needs ``num_classes=0``).
        """
        pool = self.global_pool if global_pool is None else global_pool
        _check_pool(pool, num_classes)
        self.num_classes = num_classes
        self.global_pool = pool
        self.head_hidden_size = self._pooled_features()
        device = self.norm.weight.device if isinstance(self.norm, nn.BatchNorm2d) else None
        self.head = nn.Linear(self.head_hidden_size, num_classes, device=device) if num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            _init_weights(self.head)

    @torch.jit.unused
    def _checkpointed_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``index`` with activation checkpointing per block (eager training only, never scripted)."""
        for block in self.stages[index]:
            x = checkpoint(block, x, use_reentrant=False)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for i, stage in enumerate(self.stages):
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = self._checkpointed_stage(i, x)
            else:
                x = stage(x)
        return self.norm(x)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """Global pooling over H, W (timm's ``SelectAdaptivePool2d`` types; ``''`` leaves the map)."""
        if self.global_pool == "avg":
            return x.mean((2, 3))
        if self.global_pool == "max":
            return x.amax((2, 3))
        if self.global_pool == "avgmax":
            return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))
        if self.global_pool == "catavgmax":
            return torch.cat((x.mean((2, 3)), x.amax((2, 3))), 1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self._pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs at strides 4/8/16/32 (timm semantics: ``indices`` int = last n stages).

        ``norm=True`` applies the final BN to the last stage's map, the only norm this architecture has.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be NCHW or NHWC, got {output_fmt!r}")
        take, last = feature_take_indices(len(self.stages), indices)
        feats: list[torch.Tensor] = []
        x = self.patch_embed(x)
        n = len(self.stages)
        count = last + 1 if (stop_early or intermediates_only) else n
        for i in range(count):
            if self.grad_checkpointing and self.training:
                x = self._checkpointed_stage(i, x)
            else:
                x = self.stages[i](x)
            if i in take:
                y = self.norm(x) if (norm and i == n - 1) else x
                feats.append(y.permute(0, 2, 3, 1) if output_fmt == "NHWC" else y)
        if intermediates_only:
            return feats
        if count == n:
            x = self.norm(x)
        return x, feats

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last requested one, as timm does for backbones; returns the kept indices.

        The final ``norm`` normalizes the last stage's output only, so it goes with that stage (and with
        ``prune_norm=True``); ``num_features`` then is the last kept stage's width, and ``forward`` /
        ``forward_features`` / ``forward_intermediates`` still run. ``prune_head=False`` keeps a classifier
        only when no stage was dropped (it would see the wrong width otherwise).
        """
        take, last = feature_take_indices(len(self.stages), indices)
        dropped_last = last + 1 < len(self.stages)
        if dropped_last and not prune_head and self.num_classes > 0:
            raise ValueError(f"prune_intermediate_layers({list(indices) if not isinstance(indices, int) else indices}, "
                             f"prune_head=False): the classifier expects {self.num_features} channels but stage "
                             f"{last} gives {self.spec.widths[last]}; prune the head or keep the last stage")
        self.stages = self.stages[: last + 1]
        if prune_norm or dropped_last:
            self.norm = nn.Identity()
        if dropped_last:
            self.num_features = self.spec.widths[last]
            self.head_hidden_size = self._pooled_features()
        if prune_head:
            self.reset_classifier(0, "")
        return take

    # ------------------------------------------------------------------ deploy
    @torch.jit.ignore
    def fuse(self) -> FFNet:
        """The deploy form (RepVGG branches and BNs folded; final ``norm`` kept), a new model in eval mode.

        Delegates to :func:`metamixer.reparameterize`, which deep-copies first: the training model is untouched.
        The copy's ``pretrained_cfg`` names the fused first conv (``patch_embed.0``).
        """
        fused = reparameterize(self, inplace=False)
        cfg = dict(self.pretrained_cfg)
        if cfg.get("first_conv") in FIRST_CONV.values():
            cfg["first_conv"] = FIRST_CONV[True]
        fused.pretrained_cfg = cfg
        fused.default_cfg = cfg
        return fused

    @property
    def is_fused(self) -> bool:
        return not any(isinstance(m, (ConvBN, RepDWConv, ResidualConv1x1)) for m in self.modules())

    __jit_unused_properties__ = ["is_fused"]


def _check_pool(global_pool: str, num_classes: int) -> None:
    if global_pool not in POOL_TYPES:
        raise ValueError(f"global_pool must be one of {', '.join(map(repr, POOL_TYPES))}, got {global_pool!r}")
    if global_pool == "" and num_classes > 0:
        raise ValueError(f"global_pool='' (no pooling) leaves a feature map, which a {num_classes}-way linear "
                         "classifier cannot take; pass num_classes=0 with it")


def _init_weights(m: nn.Module) -> None:
    """Official init: trunc_normal(0.02) for conv/linear weights, zero biases (BN is 1/0 by construction)."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        if m.weight.device.type != "meta":
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
