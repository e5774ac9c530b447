"""FFNet 3D: the sparse-voxel U-Net of the official code (fact sheet §4.1) built from ``metamixer.nn.sparse``.

``FFNet3D`` is the backbone (Point in, 64-channel full-resolution Point features out); ``FFNet3DSegmentor`` adds
the linear segmentation head (``forward_features`` / ``forward_head`` / ``forward`` as in timm).

Stage convention: encoder stage 0 runs at the input resolution right after the embedding (no pooling); every
later stage starts with a stride-2 serialized pooling. Decoder stage ``s`` unpools from level ``s+1`` to level
``s`` (skip = encoder stage ``s`` output) and runs its blocks there. The paper's 4-stage text configuration is
the same code with an encoder stage 0 of depth 0 (embedding only), see ``ffnet3d_paper``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from metamixer.nn.sparse import SparseFFNetBlock, init_sparse_weights, require_spconv, sparse_bn
from metamixer.train.errors import FFNetError

from ..serialization import ORDERS
from ..structure import Point
from .pooling import SerializedPooling, SerializedUnpooling, make_act

__all__ = ["FFNet3DConfig", "FFNet3D", "FFNet3DSegmentor", "SerializedUNet", "Segmentor"]


@dataclass
class FFNet3DConfig:
    """Architecture hyper-parameters (defaults = the official ScanNet config)."""

    in_channels: int = 6
    num_classes: int = 20
    embed_kernel: int = 5
    enc_depths: tuple[int, ...] = (2, 2, 2, 6, 2)
    enc_channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    dec_depths: tuple[int, ...] = (2, 2, 2, 2)
    dec_channels: tuple[int, ...] = (64, 64, 128, 256)
    stride: tuple[int, ...] = (2, 2, 2, 2)
    mlp_ratio: int = 4
    kernel_size: int = 3
    drop_path: float = 0.3
    act: str = "gelu"
    order: tuple[str, ...] = field(default_factory=lambda: ("z", "z-trans", "hilbert", "hilbert-trans"))
    shuffle_orders: bool = True
    sparse_pad: int = 96
    #: BatchNorm momentum (official 0.01; short CPU runs need ~0.1 for the running stats to settle)
    bn_momentum: float = 0.01

    def validate(self) -> None:
        n = len(self.enc_depths)
        if len(self.enc_channels) != n:
            raise FFNetError(
                f"model: enc_depths ({n}) and enc_channels ({len(self.enc_channels)}) differ in length"
            )
        if len(self.dec_depths) != n - 1 or len(self.dec_channels) != n - 1 or len(self.stride) != n - 1:
            raise FFNetError(
                f"model: with {n} encoder stages, dec_depths/dec_channels/stride need {n - 1} entries each, got "
                f"{len(self.dec_depths)}/{len(self.dec_channels)}/{len(self.stride)}"
            )
        check_unet_fields(self)


def check_unet_fields(cfg) -> None:  # noqa: ANN001 (any SerializedUNet config)
    """The checks every serialized U-Net config shares: known serialization orders, activation, channel counts."""
    bad = [o for o in cfg.order if o not in ORDERS]
    if bad or not cfg.order:
        raise FFNetError(f"model.options.order: unknown serialization orders {bad}; expected from {list(ORDERS)}")
    if cfg.act not in ("gelu", "relu"):
        raise FFNetError(f"model.options.act must be 'gelu' or 'relu', got {cfg.act!r}")
    if cfg.in_channels < 1:
        raise FFNetError(f"model: in_channels must be >= 1 (data.feat_keys gives the input channels), got "
                         f"{cfg.in_channels}")
    if cfg.num_classes < 2:
        raise FFNetError(f"model: num_classes must be >= 2 (data.num_classes), got {cfg.num_classes}")


def _ramp(total: int, rate: float) -> list[float]:
    return [float(x) for x in torch.linspace(0, rate, total)] if total else []


class _Stem(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, act: str, padding: int = 1) -> None:
        super().__init__()
        import metamixer.nn.sparse as ms

        self.conv = ms.SubMConv3d(in_channels, out_channels, kernel, padding=padding, bias=False, indice_key="stem")
        self.norm = sparse_bn(out_channels)
        self.act = make_act(act)

    def forward(self, point: Point) -> Point:
        st = self.conv(point.sparse_conv_feat)
        feat = self.act(self.norm(st.features))
        point["feat"] = feat
        point["sparse_conv_feat"] = st.replace_feature(feat)
        return point


class _Stage(nn.Module):
    """Optional down/up-sampling module followed by blocks (keys ``down``/``up`` and ``block{i}``). The blocks
    take the spconv tensor (``sparse_blocks``: FFNet blocks, whose token mixer is a sparse conv) or the ``Point``
    (blocks that also need the serialization orders, such as the PTv3-style peer's)."""

    def __init__(self, sampler: nn.Module | None, sampler_name: str, blocks: Sequence[nn.Module],
                 sparse_blocks: bool = True) -> None:
        super().__init__()
        if sampler is not None:
            self.add_module(sampler_name, sampler)
        self.sampler_name = sampler_name if sampler is not None else None
        for i, b in enumerate(blocks):
            self.add_module(f"block{i}", b)
        self.num_blocks = len(blocks)
        self.sparse_blocks = sparse_blocks

    def forward(self, point: Point) -> Point:
        if self.sampler_name is not None:
            point = getattr(self, self.sampler_name)(point)
        if not self.sparse_blocks:
            for i in range(self.num_blocks):
                point = getattr(self, f"block{i}")(point)
        elif self.num_blocks:
            st = point.sparse_conv_feat.replace_feature(point.feat)
            for i in range(self.num_blocks):
                st = getattr(self, f"block{i}")(st)
            point["feat"] = st.features
            point["sparse_conv_feat"] = st
        return point


class SerializedUNet(nn.Module):
    """The serialized sparse U-Net skeleton of FFNet3D and of its PTv3-style speed peer: serialization and
    sparsification of the input ``Point``, a submanifold-conv stem (``embedding.stem``), encoder stages (stride
    pooling, then blocks) and decoder stages (unpooling onto the skip, then blocks). Subclasses only say which
    blocks a stage holds (:meth:`make_blocks`), so both networks share every other layer and key name.
    ``cfg`` needs in_channels, enc/dec depths and channels, stride, embed_kernel, act, drop_path, order,
    shuffle_orders, sparse_pad and bn_momentum."""

    sparse_blocks = True  # blocks take the spconv tensor (see _Stage)
    stem_padding: int | None = 1  # None: kernel // 2

    def __init__(self, cfg) -> None:  # noqa: ANN001 (FFNet3DConfig or a config with the same fields)
        super().__init__()
        require_spconv()
        cfg.validate()
        self.cfg = cfg
        n = len(cfg.enc_depths)
        pad = cfg.embed_kernel // 2 if self.stem_padding is None else self.stem_padding
        self.embedding = nn.Module()
        self.embedding.add_module("stem", _Stem(cfg.in_channels, cfg.enc_channels[0], cfg.embed_kernel, cfg.act, pad))
        enc_dp = _ramp(sum(cfg.enc_depths), cfg.drop_path)
        self.enc = nn.Module()
        for s in range(n):
            dps = enc_dp[sum(cfg.enc_depths[:s]) : sum(cfg.enc_depths[: s + 1])]
            down = None
            if s > 0:
                down = SerializedPooling(
                    cfg.enc_channels[s - 1], cfg.enc_channels[s], cfg.stride[s - 1], "max", cfg.act, cfg.shuffle_orders
                )
            blocks = self.make_blocks(s, cfg.enc_channels[s], dps, decoder=False)
            self.enc.add_module(f"enc{s}", _Stage(down, "down", blocks, self.sparse_blocks))
        dec_dp = _ramp(sum(cfg.dec_depths), cfg.drop_path)
        self.dec = nn.Module()
        for s in reversed(range(n - 1)):
            coarse = cfg.enc_channels[-1] if s == n - 2 else cfg.dec_channels[s + 1]
            dps = dec_dp[sum(cfg.dec_depths[:s]) : sum(cfg.dec_depths[: s + 1])][::-1]
            up = SerializedUnpooling(coarse, cfg.enc_channels[s], cfg.dec_channels[s], cfg.act)
            blocks = self.make_blocks(s, cfg.dec_channels[s], dps, decoder=True)
            self.dec.add_module(f"dec{s}", _Stage(up, "up", blocks, self.sparse_blocks))
        self.out_channels = cfg.dec_channels[0] if n > 1 else cfg.enc_channels[0]
        init_sparse_weights(self)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = cfg.bn_momentum

    def make_blocks(self, stage: int, channels: int, drop_paths: list[float], decoder: bool) -> list[nn.Module]:
        """The blocks of one encoder (``decoder=False``) or decoder stage, one per drop-path rate."""
        raise NotImplementedError

    def forward(self, point: Point) -> Point:
        cfg = self.cfg
        feat = point["feat"]
        if feat.dim() != 2 or feat.shape[1] != cfg.in_channels:
            raise FFNetError(
                f"model expects point features [N, {cfg.in_channels}] (model.in_channels), got {tuple(feat.shape)}; "
                "check data.feat_keys"
            )
        if feat.shape[0] == 0:
            raise FFNetError("model got a batch with no points")
        point = Point(point)
        point.serialization(cfg.order, shuffle_orders=cfg.shuffle_orders and self.training)
        point.sparsify(cfg.sparse_pad)
        point = self.embedding.stem(point)
        for s in range(len(cfg.enc_depths)):
            point = getattr(self.enc, f"enc{s}")(point)
        for s in reversed(range(len(cfg.enc_depths) - 1)):
            point = getattr(self.dec, f"dec{s}")(point)
        return point


class FFNet3D(SerializedUNet):
    """Sparse FFNet U-Net backbone: ``Point`` (coord, grid_coord, feat, offset) -> ``Point`` with 64-ch feat."""

    def __init__(self, cfg: FFNet3DConfig) -> None:
        super().__init__(cfg)

    def make_blocks(self, stage: int, channels: int, drop_paths: list[float], decoder: bool) -> list[nn.Module]:
        cfg = self.cfg
        return [SparseFFNetBlock(channels, cfg.mlp_ratio, cfg.kernel_size, dp, cfg.act, f"subm{stage}")
                for dp in drop_paths]


class Segmentor(nn.Module):
    """A :class:`SerializedUNet` backbone + ``Linear(64, num_classes)`` head; ``forward(point) -> logits
    [N, num_classes]`` (``forward_features`` / ``forward_head`` as in timm). Subclasses name the backbone."""

    backbone_cls: type[SerializedUNet] = SerializedUNet

    def __init__(self, cfg) -> None:  # noqa: ANN001
        super().__init__()
        self.backbone = self.backbone_cls(cfg)
        self.seg_head = nn.Linear(self.backbone.out_channels, cfg.num_classes)
        nn.init.trunc_normal_(self.seg_head.weight, std=0.02)
        nn.init.zeros_(self.seg_head.bias)
        self.num_classes = cfg.num_classes
        self.config = asdict(cfg)

    def forward_features(self, point: Point) -> torch.Tensor:
        return self.backbone(point)["feat"]

    def forward_head(self, feat: torch.Tensor) -> torch.Tensor:
        return self.seg_head(feat)

    def forward(self, point: Point) -> torch.Tensor:
        return self.forward_head(self.forward_features(point))


class FFNet3DSegmentor(Segmentor):
    """FFNet3D backbone + ``Linear(64, num_classes)`` head; ``forward(point) -> logits [N, num_classes]``."""

    backbone_cls = FFNet3D
