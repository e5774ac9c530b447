"""The deploy form of a 2-D FFNet model: fused, channels-last, with every plain FFNet block run by the fused
channels-last kernels of :mod:`metamixer.kernels.nhwc`.

Why: after :func:`~metamixer.nn.reparam.reparameterize` an FFNet block is five convolutions and two GELUs, which
PyTorch runs as seven passes over memory (the 2x wide FFN hidden tensor four times). :class:`FastFFNetBlock2d`
runs the same block as five fused steps, and the FFN never writes its hidden tensor to memory. Measured results
and the comparisons behind them: ``docs/speed.md``.

:func:`prepare_for_inference` is the one deploy path the apps use; the result is an eval-mode copy (the training
model and its weights are not touched, nothing aliases them) whose outputs equal the fused model's up to float
rounding. It is for inference: its state_dict is not a checkpoint (save the original model).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from ..kernels.nhwc import (Depthwise, PackedPointwise, depthwise_gelu_depthwise, depthwise_mlp, nhwc_kernels,
                            pointwise, to_channels_last)
from .blocks import ConvFFN, FFNetBlock, FFNifiedAttention, Residual
from .reparam import reparameterize

__all__ = ["FastFFNetBlock2d", "FastFFNetChain", "prepare_for_inference", "fast_block_count"]


def _plain_conv(conv: nn.Module, depthwise_conv: bool) -> bool:
    if not isinstance(conv, nn.Conv2d) or conv.stride != (1, 1) or conv.dilation != (1, 1):
        return False
    kh, kw = conv.kernel_size
    if depthwise_conv:
        return (conv.groups == conv.in_channels == conv.out_channels and kh % 2 == 1 and kw % 2 == 1
                and conv.padding == (kh // 2, kw // 2) and conv.padding_mode == "zeros")
    return conv.kernel_size == (1, 1) and conv.groups == 1 and conv.padding in ((0, 0), 0)


def _exact_gelu(act: nn.Module) -> bool:
    return isinstance(act, nn.GELU) and act.approximate == "none"


def _unwrap(mixer: nn.Module, kind: type) -> tuple[nn.Module, torch.Tensor | None] | None:
    """The bare mixer of ``kind`` and its LayerScale (None) inside a norm-free :class:`Residual` (possibly in a
    Sequential with Identity companions), or None where the layout is another one."""
    if isinstance(mixer, nn.Sequential) and not isinstance(mixer, (FFNifiedAttention, ConvFFN)):
        parts = [m for m in mixer if not isinstance(m, nn.Identity)]
        if len(parts) != 1:
            return None
        mixer = parts[0]
    if not isinstance(mixer, Residual) or "norm" in mixer._modules:
        return None
    if mixer.drop_path.training and float(getattr(mixer.drop_path, "drop_prob", 0.0)) > 0:
        return None
    return (mixer.main, mixer.layer_scale) if isinstance(mixer.main, kind) else None


def _layers(mixer: nn.Module) -> list[nn.Module]:
    """The mixer's layers without its dropouts (identities in eval mode, which :meth:`from_block` requires)."""
    return [m for m in mixer.children() if not isinstance(m, nn.Dropout)]


class FastFFNetBlock2d(nn.Module):
    """``t = x + ls1 · DW2(GELU(DW1(FC(x))))``; ``y = t + ls2 · FC2(GELU(FC1(DW3(t))))`` with LayerScales folded
    into DW2 / FC2, run by :mod:`metamixer.kernels.nhwc` (PyTorch ops where those cannot run)."""

    def __init__(self, token: nn.Module, channel: nn.Module, ls_token: torch.Tensor | None,
                 ls_channel: torch.Tensor | None) -> None:
        super().__init__()
        fc, dw1, _, dw2 = _layers(token)
        dw3, fc1, _, fc2 = _layers(channel)
        self.dim, self.hidden = fc.in_channels, fc1.out_channels
        with torch.no_grad():
            self._pointwise("fc", fc.weight, fc.bias)
            self._depthwise("dw1", dw1.weight, dw1.bias)
            self._depthwise("dw2", dw2.weight, dw2.bias, ls_token)
            self._depthwise("dw3", dw3.weight, dw3.bias)
            self._pointwise("fc1", fc1.weight, fc1.bias)
            self._pointwise("fc2", fc2.weight, fc2.bias, ls_channel)

    @staticmethod
    def _scaled(weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor | None):  # noqa: ANN205
        weight = weight.detach().clone().float()
        bias = bias.detach().clone().float() if bias is not None else weight.new_zeros(weight.shape[0])
        if scale is not None:
            s = scale.detach().float().reshape(-1)
            weight, bias = weight * s.view(-1, 1, 1, 1), bias * s
        return weight.contiguous(), bias.contiguous()

    def _pointwise(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None,
                   scale: torch.Tensor | None = None) -> None:
        weight, bias = self._scaled(weight, bias, scale)
        packed = PackedPointwise.from_conv(weight, bias).packed
        self.register_buffer(f"{name}_weight", weight, persistent=False)
        self.register_buffer(f"{name}_bias", bias, persistent=False)
        self.register_buffer(f"{name}_packed", packed if packed is not None else torch.empty(0), persistent=False)

    def _depthwise(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None,
                   scale: torch.Tensor | None = None) -> None:
        weight, bias = self._scaled(weight, bias, scale)
        self.register_buffer(f"{name}_weight", weight, persistent=False)
        self.register_buffer(f"{name}_bias", bias, persistent=False)
        self.register_buffer(f"{name}_taps", weight.reshape(weight.shape[0], -1).t().contiguous(), persistent=False)

    def _conv(self, name: str) -> PackedPointwise:
        packed = getattr(self, f"{name}_packed")
        on_cpu = packed.numel() and packed.device.type == "cpu"
        return PackedPointwise(getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias"),
                               packed if on_cpu else None)

    def _dw(self, name: str) -> Depthwise:
        return Depthwise(getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias"), getattr(self, f"{name}_taps"))

    @classmethod
    def from_block(cls, block: nn.Module) -> FastFFNetBlock2d | None:
        """The fast form of a fused, eval-mode 2-D :class:`FFNetBlock` with plain convs, or None (another layout:
        norms inside the residual, strided or dilated convs, other activations, active DropPath)."""
        if not isinstance(block, FFNetBlock) or block.training:
            return None
        if block.residual:
            token, channel, ls_t, ls_c = block.token_mixer, block.channel_mixer, None, None
            if not isinstance(token, FFNifiedAttention) or not isinstance(channel, ConvFFN):
                return None
        else:
            t, c = _unwrap(block.token_mixer, FFNifiedAttention), _unwrap(block.channel_mixer, ConvFFN)
            if t is None or c is None:
                return None
            (token, ls_t), (channel, ls_c) = t, c
        tl, cl = _layers(token), _layers(channel)
        if len(tl) != 4 or len(cl) != 4:
            return None
        if not (_plain_conv(tl[0], False) and _plain_conv(tl[1], True) and _exact_gelu(tl[2])
                and _plain_conv(tl[3], True) and _plain_conv(cl[0], True) and _plain_conv(cl[1], False)
                and _exact_gelu(cl[2]) and _plain_conv(cl[3], False)):
            return None
        return cls(token, channel, ls_t, ls_c)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None,
                scratch: torch.Tensor | None = None) -> torch.Tensor:
        """The block on ``x``; ``out`` / ``scratch``: buffers shaped like ``x`` to write the result / the block's
        intermediates into (:class:`FastFFNetChain` passes them; either must not overlap ``x``, else a new buffer
        is taken)."""
        # Three kernels, two buffers beside the input: FC writes u into ``out``; the depthwise pair reads u and x
        # and writes t into ``scratch`` (its GELU'd middle lives in a ring of three rows, never in memory); the
        # ConvFFN reads t and writes the result over the dead u. A block thus holds three activations at its
        # peak, where the plain module sequence holds the FFN's 2x wide hidden tensor twice.
        u = pointwise(x, self._conv("fc"), out=out)
        t = depthwise_gelu_depthwise(u, self._dw("dw1"), self._dw("dw2"), residual=x, out=scratch)
        return depthwise_mlp(t, self._dw("dw3"), self._conv("fc1"), self._conv("fc2"), out=u)

    @property
    def receptive_radius(self) -> int:
        """Input-pixel radius of one output's dependence on the input (the three depthwise convs)."""
        return sum(max(getattr(self, f"dw{i}_weight").shape[-2:]) // 2 for i in (1, 2, 3))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}"


class FastFFNetChain(nn.Sequential):
    """Consecutive :class:`FastFFNetBlock2d` s that share three activation buffers per call: each block writes
    its result into the buffer the block before it read, and all use one scratch buffer.

    Why: a fresh multi-MiB tensor pays first-touch page faults on every call (~1.3 ms for a 96 x 90 x 160 map,
    4 % of an FFNetSR block), and every block would otherwise take one. The buffers live only for one call (the
    last block's result is handed to the caller as is), so nothing is shared across calls or threads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        caller, scratch, free = x, torch.empty_like(x), torch.empty_like(x)
        for block in self:
            y = block(x, out=free, scratch=scratch)
            free = x if x is not caller else None  # the caller's tensor is never written; a block makes the 3rd
            x = y
        return x


def _channels_last_input(module: nn.Module, args: tuple) -> tuple:
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4 and args[0].device.type == "cpu":
        return (to_channels_last(args[0]),) + tuple(args[1:])
    return args


def _replace_blocks(module: nn.Module) -> int:
    """Replaces every plain FFNet block below ``module`` by its fast form, and every Sequential of two or more
    blocks that all have one by a :class:`FastFFNetChain`; returns the number of blocks replaced."""
    count = 0
    for name, child in module.named_children():
        fast = FastFFNetBlock2d.from_block(child)
        if fast is not None:
            setattr(module, name, fast)
            count += 1
            continue
        count += _replace_blocks(child)
        setattr(module, name, _chained(child))
    return count


def _chained(module: nn.Module) -> nn.Module:
    if type(module) is nn.Sequential and len(module) > 1 and all(isinstance(m, FastFFNetBlock2d) for m in module):
        return FastFFNetChain(OrderedDict(module.named_children()))
    return module


def prepare_for_inference(model: nn.Module, *, fuse: bool = True, channels_last: bool = True,
                          fast_blocks: bool = True) -> nn.Module:
    """An eval-mode deploy copy of ``model``: re-parameterized (``fuse``), its plain 2-D FFNet blocks replaced
    by :class:`FastFFNetBlock2d` (``fast_blocks``), the remaining convs' weights and every CPU input in
    channels-last layout (``channels_last``; oneDNN runs depthwise convs fast only in that layout). Works on any
    device; the fused kernels run on CPU float32 and every other case takes the same PyTorch ops."""
    prepared = reparameterize(model, inplace=False) if fuse else copy.deepcopy(model)
    prepared.eval()
    if fast_blocks:
        nhwc_kernels()  # build once here, not inside the first timed forward
        _replace_blocks(prepared)
        prepared = _chained(prepared)
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
        prepared.register_forward_pre_hook(_channels_last_input)
    for p in prepared.parameters():
        p.requires_grad_(False)
    return prepared


def fast_block_count(model: nn.Module) -> int:
    """How many blocks of ``model`` run as :class:`FastFFNetBlock2d`."""
    return sum(isinstance(m, FastFFNetBlock2d) for m in model.modules())
