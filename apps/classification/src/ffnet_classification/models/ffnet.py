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
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from metamixer.nn.blocks import ConvFFN, FFNetBlock, FFNifiedAttention, Residual
from metamixer.nn.layers import linear_ramp
from metamixer.nn.reparam import ConvBN, RepDWConv, ResidualConv1x1, reparameterize

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
    drop_path_rate: float = 0.1
    small_kernel: int = 3
    act: str = "gelu"


@dataclass(frozen=True)
class PretrainedCfg:
    """timm-style default config: what preprocessing a checkpoint of this variant expects."""

    input_size: tuple[int, int, int] = (3, 256, 256)
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000
    fixed_input_size: bool = True
    crop_mode: str = "center"
    first_conv: str = "patch_embed.0.c"
    classifier: str = "head"
    url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


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
    """FFNet image classifier (paper: "MetaMixer Is All You Need", FFNet-1..4).

    Follows timm's model contract: ``forward_features`` / ``forward_head(pre_logits=)`` /
    ``forward_intermediates``, ``reset_classifier``, ``no_weight_decay``, ``set_grad_checkpointing``,
    ``group_matcher``, ``feature_info`` and ``pretrained_cfg``. ``fuse()`` returns the deploy form.
    """

    def __init__(
        self,
        spec: FFNetSpec = FFNetSpec(),
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float | None = None,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        pretrained_cfg: PretrainedCfg | None = None,
    ) -> None:
        super().__init__()
        if drop_path_rate is not None:
            spec = replace(spec, drop_path_rate=float(drop_path_rate))
        n = len(spec.widths)
        for name in ("depths", "token_kernels1", "token_kernels2", "channel_kernels"):
            if len(getattr(spec, name)) != n:
                raise ValueError(f"FFNetSpec.{name} needs {n} entries (one per stage), got {getattr(spec, name)}")
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = spec.widths[-1]
        self.head_hidden_size = self.num_features
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.pretrained_cfg = (pretrained_cfg or PretrainedCfg()).to_dict()
        self.default_cfg = self.pretrained_cfg

        self.patch_embed = nn.Sequential(
            ConvBN(in_chans, spec.stem_dim, 3, stride=2, names=("c", "bn")),
            nn.GELU(),
            ConvBN(spec.stem_dim, spec.widths[0], 3, stride=2, names=("c", "bn")),
        )
        rates = linear_ramp(sum(spec.depths), spec.drop_path_rate)
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
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
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
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

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head (fine-tuning to another label set); ``num_classes=0`` makes the model a backbone."""
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '' (none), got {global_pool!r}")
            self.global_pool = global_pool
        device = self.norm.weight.device
        self.head = nn.Linear(self.num_features, num_classes).to(device) if num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            _init_weights(self.head)

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return stage(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.stages:
            x = self._run_stage(stage, x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

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
        take = _take_indices(len(self.stages), indices)
        last = max(take)
        feats: list[torch.Tensor] = []
        x = self.patch_embed(x)
        n = len(self.stages)
        stages = list(self.stages)[: last + 1] if (stop_early or intermediates_only) else list(self.stages)
        for i, stage in enumerate(stages):
            x = self._run_stage(stage, x)
            if i in take:
                y = self.norm(x) if (norm and i == n - 1) else x
                feats.append(y.permute(0, 2, 3, 1) if output_fmt == "NHWC" else y)
        if intermediates_only:
            return feats
        if len(stages) == n:
            x = self.norm(x)
        return x, feats

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop stages after the last requested one (and optionally norm/head), as timm does for backbones."""
        take = _take_indices(len(self.stages), indices)
        self.stages = self.stages[: max(take) + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take

    # ------------------------------------------------------------------ deploy
    def fuse(self) -> FFNet:
        """The deploy form (RepVGG branches and BNs folded; final ``norm`` kept), a new model in eval mode.

        Delegates to :func:`metamixer.reparameterize`, which deep-copies first: the training model is untouched.
        """
        return reparameterize(self, inplace=False)

    @property
    def is_fused(self) -> bool:
        return not any(isinstance(m, (ConvBN, RepDWConv, ResidualConv1x1)) for m in self.modules())


class FFNetFeatures(FFNet):
    """Backbone for dense tasks (``features_only=True``): returns the stage maps at ``out_indices``.

    Same parameter names as the classifier minus ``norm``/``head``, so classification checkpoints load with
    ``strict=False`` and only those keys unused.
    """

    def __init__(self, *args: Any, out_indices: Sequence[int] = (0, 1, 2, 3), **kwargs: Any) -> None:
        kwargs["num_classes"] = 0
        super().__init__(*args, **kwargs)
        self.out_indices = _take_indices(len(self.stages), list(out_indices))
        self.stages = self.stages[: max(self.out_indices) + 1]
        del self.norm, self.head, self.head_drop
        self.feature_info = [self.feature_info[i] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = self._run_stage(stage, x)
            if i in self.out_indices:
                outs.append(x)
        return outs


def _take_indices(n: int, indices: int | Sequence[int] | None) -> list[int]:
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"indices={indices}: need 1..{n} last stages")
        return list(range(n - indices, n))
    out = sorted({i % n if i < 0 else i for i in indices})
    if any(i >= n for i in out):
        raise ValueError(f"stage indices {list(indices)} out of range for {n} stages")
    return out


def _init_weights(m: nn.Module) -> None:
    """Official init: trunc_normal(0.02) for conv/linear weights, zero biases (BN is 1/0 by construction)."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        if m.weight.device.type != "meta":
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
