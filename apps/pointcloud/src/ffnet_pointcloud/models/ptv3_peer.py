"""``ptv3_style``: a Point-Transformer-V3-style attention U-Net, the same-run speed peer of ``ffnet3d``.

Why it exists: FFNet3D replaces PTv3's serialized patch attention with a convolutional token mixer, so the fair
speed question is "how much faster than the attention network it replaces, on the same scene, in the same
process". This module builds that attention network from the published architecture (Wu et al., "Point
Transformer V3", arXiv 2312.10035, ScanNet semantic-segmentation defaults) out of this app's own pieces: the
serialization orders (``serialization.py``), ``Point`` (``structure.py``), serialized grid pooling/unpooling
(``pooling.py``) and core's spconv wrapper. It is written from the paper's description, not from Pointcept's code,
and its state_dict does **not** load the authors' checkpoints (hence the name ``ptv3_style``, not ``ptv3``).

Architecture (defaults of :class:`PTv3StyleConfig`):

* four serialization orders (z, z-trans, hilbert, hilbert-trans); block ``i`` of every stage walks the points
  along order ``i mod 4`` (shuffling of the orders is off, so runs are deterministic);
* stem: ``SubMConv3d(in -> 32, k5, no bias)`` -> BN -> GELU;
* encoder depths (2, 2, 2, 6, 2), channels (32, 64, 128, 256, 512), heads (2, 4, 8, 16, 32); stages 1..4 start
  with stride-2 serialized grid pooling (Linear, per-cell max, BN, GELU);
* decoder depths (2, 2, 2, 2), channels (64, 64, 128, 256), heads (4, 4, 8, 16); each stage starts with grid
  unpooling (Linear+BN+GELU on the coarse and the skip features, added);
* block: xCPE ``x + LN(Linear(SubM_k3(x)))``, then ``x + DropPath(Attn(LN(x)))``, then
  ``x + DropPath(MLP(LN(x)))`` (MLP ratio 4, GELU); attention = serialized patch attention below;
* head: ``Linear(64 -> num_classes)``.

Serialized patch attention: the points of each scene are sorted along the block's order and cut into patches
of ``K = min(patch_size, points of the smallest scene in the batch)`` consecutive points (PTv3 shrinks the patch
the same way). A scene whose count is not a multiple of ``K`` gets a padded last patch whose empty slots are
filled with the points one patch earlier, so that patch is the window of the scene's last ``K`` points; only its
new points' outputs are kept. Every patch then runs multi-head softmax attention
(``torch.nn.functional.scaled_dot_product_attention``, scale ``head_dim ** -0.5``) with a qkv Linear (bias) and an
output Linear; no relative position encoding (PTv3's default when flash attention is on).

Parameter count: 46,167,572 for 6 input channels and 20 classes (block ``40 C^2 + 17 C``; see the test), which
is PTv3's published 46.2 M. Details that differ from the authors' model, none of which changes a parameter:

* attention runs through torch's SDPA (on CPU its flash-attention kernel) instead of the flash-attn package;
  the patch layout above is computed in torch (no varlen ``cu_seqlens``);
* order shuffling per forward/pooling is off (PTv3 trains with it on: it changes which order a block sees, not
  the cost); ``drop_path`` defaults to 0 (the ScanNet recipe trains with 0.3: pass ``drop_path=0.3``);
* one ``patch_size`` for every stage (PTv3's per-stage lists are all 1024 in this config);
* weights start from this app's init (trunc-normal 0.02, as ``ffnet3d``), not PyTorch's defaults;
* PDNorm / multi-dataset conditioning, the classification mode and the stage-wise ``traceable`` bookkeeping
  are not built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from metamixer.nn.layers import DropPath
from metamixer.train.errors import FFNetError

from ..structure import Point
from .ffnet3d import Segmentor, SerializedUNet, check_unet_fields
from .pooling import make_act

__all__ = [
    "PTv3StyleConfig",
    "PTv3StyleBackbone",
    "PTv3StyleSegmentor",
    "PTv3StyleBlock",
    "SerializedPatchAttention",
    "patch_layout",
]


@dataclass
class PTv3StyleConfig:
    """Architecture hyper-parameters; defaults = PTv3's ScanNet semantic-segmentation configuration."""

    in_channels: int = 6
    num_classes: int = 20
    embed_kernel: int = 5
    enc_depths: tuple[int, ...] = (2, 2, 2, 6, 2)
    enc_channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    enc_heads: tuple[int, ...] = (2, 4, 8, 16, 32)
    dec_depths: tuple[int, ...] = (2, 2, 2, 2)
    dec_channels: tuple[int, ...] = (64, 64, 128, 256)
    dec_heads: tuple[int, ...] = (4, 4, 8, 16)
    stride: tuple[int, ...] = (2, 2, 2, 2)
    patch_size: int = 1024
    mlp_ratio: int = 4
    qkv_bias: bool = True
    drop_path: float = 0.0
    act: str = "gelu"
    order: tuple[str, ...] = field(default_factory=lambda: ("z", "z-trans", "hilbert", "hilbert-trans"))
    shuffle_orders: bool = False
    sparse_pad: int = 96
    bn_momentum: float = 0.01

    def validate(self) -> None:
        n = len(self.enc_depths)
        for name in ("enc_channels", "enc_heads"):
            if len(getattr(self, name)) != n:
                raise FFNetError(f"model: enc_depths ({n}) and {name} ({len(getattr(self, name))}) differ in length")
        for name in ("dec_depths", "dec_channels", "dec_heads", "stride"):
            if len(getattr(self, name)) != n - 1:
                raise FFNetError(
                    f"model: with {n} encoder stages, {name} needs {n - 1} entries, got {len(getattr(self, name))}"
                )
        for where, chans, heads in (("enc", self.enc_channels, self.enc_heads),
                                    ("dec", self.dec_channels, self.dec_heads)):
            for c, h in zip(chans, heads):
                if h < 1 or c % h:
                    raise FFNetError(f"model: {where}_channels {c} is not divisible by {where}_heads {h}")
        if self.patch_size < 1:
            raise FFNetError(f"model.options.patch_size must be >= 1, got {self.patch_size}")
        check_unet_fields(self)


def patch_layout(
    order: torch.Tensor, inverse: torch.Tensor, batch: torch.Tensor, patch_size: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Index maps of the padded patch layout for one serialization order.

    ``order [N]`` lists the points along the curve (scene by scene, since the batch index is in the code's top
    bits) and ``inverse`` is its inverse permutation. Returns ``gather [P]`` (the point in each padded slot,
    ``P`` a multiple of ``K``), ``unpad [N]`` (the slot holding each point's own output) and ``K`` (module
    docstring: padding slots repeat the points one patch earlier).
    """
    counts = torch.bincount(batch)
    counts = counts[counts > 0]  # a scene index without points has no patches
    k = int(min(patch_size, int(counts.min())))
    padded = (counts + k - 1) // k * k
    start = torch.cumsum(counts, 0) - counts
    pad_start = torch.cumsum(padded, 0) - padded
    scene = torch.repeat_interleave(torch.arange(len(counts), device=order.device), padded)
    local = torch.arange(int(padded.sum()), device=order.device) - pad_start[scene]
    local = torch.where(local < counts[scene], local, local - k)
    gather = order[start[scene] + local]
    # scene of each point in sorted position: positions are grouped by scene in ``order``
    sorted_scene = torch.repeat_interleave(torch.arange(len(counts), device=order.device), counts)
    scene_of_point = sorted_scene[inverse]
    unpad = inverse - start[scene_of_point] + pad_start[scene_of_point]
    return gather, unpad, k


class SerializedPatchAttention(nn.Module):
    """Multi-head softmax attention inside patches of ``patch_size`` points along one serialization order."""

    def __init__(self, dim: int, heads: int, patch_size: int, order_index: int = 0, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise FFNetError(f"attention: {dim} channels are not divisible by {heads} heads")
        self.dim, self.heads, self.patch_size, self.order_index = dim, heads, patch_size, order_index
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def layout(self, point: Point) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The patch layout of this block's order, cached in ``point`` (shared by every block of the level and
        by the decoder, whose Points are shallow copies of the encoder's)."""
        k = self.order_index % point.serialized_order.shape[0]
        key = f"patch_layout_{k}_{self.patch_size}"
        if key not in point:
            point[key] = patch_layout(point.serialized_order[k], point.serialized_inverse[k], point.batch,
                                      self.patch_size)
        return point[key]

    def forward(self, feat: torch.Tensor, point: Point) -> torch.Tensor:
        gather, unpad, k = self.layout(point)
        head_dim = self.dim // self.heads
        qkv = self.qkv(feat)[gather].view(-1, k, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [patches, H, K, d]
        out = out.transpose(1, 2).reshape(-1, self.dim)[unpad]
        return self.proj(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, patch_size={self.patch_size}, order_index={self.order_index}"


class PTv3StyleBlock(nn.Module):
    """xCPE (SubM k3 + Linear + LN, residual), pre-norm patch attention, pre-norm MLP; on a ``Point``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        patch_size: int,
        order_index: int,
        mlp_ratio: int = 4,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        act: str = "gelu",
        indice_key: str | None = None,
    ) -> None:
        super().__init__()
        import metamixer.nn.sparse as ms

        self.cpe = nn.Module()
        self.cpe.conv = ms.SubMConv3d(dim, dim, 3, padding=1, bias=True, indice_key=indice_key)
        self.cpe.proj = nn.Linear(dim, dim)
        self.cpe.norm = nn.LayerNorm(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SerializedPatchAttention(dim, heads, patch_size, order_index, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, dim * mlp_ratio))
        self.mlp.add_module("act", make_act(act))
        self.mlp.add_module("fc2", nn.Linear(dim * mlp_ratio, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, point: Point) -> Point:
        st = self.cpe.conv(point.sparse_conv_feat.replace_feature(point.feat))
        feat = point.feat + self.cpe.norm(self.cpe.proj(st.features))
        feat = feat + self.drop_path(self.attn(self.norm1(feat), point))
        feat = feat + self.drop_path(self.mlp(self.norm2(feat)))
        point["feat"] = feat
        # the conv output carries the index pairs of this level: later convs with the same key reuse them
        point["sparse_conv_feat"] = st.replace_feature(feat)
        return point


class PTv3StyleBackbone(SerializedUNet):
    """PTv3-style U-Net: ``Point`` (coord, grid_coord, feat, offset/batch) -> ``Point`` with 64-channel feat. The
    skeleton (serialization, stem, pooling, unpooling) is FFNet3D's :class:`SerializedUNet`; the blocks are
    :class:`PTv3StyleBlock`, which take the ``Point`` (they walk its serialization orders)."""

    sparse_blocks = False
    stem_padding = None  # 'same' padding for the k5 stem

    def __init__(self, cfg: PTv3StyleConfig) -> None:
        super().__init__(cfg)

    def make_blocks(self, stage: int, channels: int, drop_paths: list[float], decoder: bool) -> list[nn.Module]:
        cfg = self.cfg
        heads = (cfg.dec_heads if decoder else cfg.enc_heads)[stage]
        return [PTv3StyleBlock(channels, heads, cfg.patch_size, i, cfg.mlp_ratio, cfg.qkv_bias, dp, cfg.act,
                               f"cpe{stage}") for i, dp in enumerate(drop_paths)]


class PTv3StyleSegmentor(Segmentor):
    """Backbone + ``Linear(64, num_classes)``; same ``forward_features`` / ``forward_head`` / ``forward`` contract
    as ``FFNet3DSegmentor``, so the app's trainer, tester and benchmark take either."""

    backbone_cls = PTv3StyleBackbone
