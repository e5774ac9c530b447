"""Running an SR model on whole images: exact tiling, x8 self-ensemble, padding, uint8 conversion, and the
image-in/image-out :data:`Upscaler` s (model or MATLAB bicubic) that evaluation, training's validation and the
quick start share.

Tiling is exact, not blended: each LR tile of side ``tile`` is processed together with ``tile_pad`` pixels of
real context on every side (clipped at the image border, where the model sees the same zero padding as on the
whole image) and only its core is kept. With ``tile_pad >= receptive radius`` (``2 + 3·depth`` LR pixels for
FFNetSR: 110 for the light model) the tiled output equals the untiled one up to float rounding, while peak
memory depends only on ``(tile + 2·tile_pad)²``, not on the image size. A smaller ``tile_pad`` is faster and
approximate (seams may become visible at very small values).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metamixer.kernels.native import cache_dir
from metamixer.nn.inference import FastFFNetBlock2d
from metamixer.nn.inference import prepare_for_inference as prepare_blocks

from .data.dataset import to_rgb
from .imresize import imresize

__all__ = [
    "Upscaler",
    "bicubic_upscaler",
    "model_upscaler",
    "load_model_for_inference",
    "receptive_radius",
    "forward_tiled",
    "forward_self_ensemble",
    "upscale_tensor",
    "tensor_to_uint8",
    "image_to_tensor",
    "pad_to_multiple",
    "cpu_fast_layout",
    "prepare_for_inference",
]


def receptive_radius(model: nn.Module) -> int:
    """LR-pixel radius of the output's dependence on the input (conservative: counts every k>1 conv, and the
    depthwise convs inside the deploy path's fused blocks)."""
    radius = 0
    for m in model.modules():
        if isinstance(m, FastFFNetBlock2d):
            radius += m.receptive_radius
        elif isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            dh, dw = m.dilation
            radius += max((kh - 1) * dh, (kw - 1) * dw) // 2
    return radius


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad ``[B,C,H,W]`` on the bottom/right to a multiple (for models with windows or strides)."""
    if multiple <= 1:
        return x, 0, 0
    ph = (-x.shape[-2]) % multiple
    pw = (-x.shape[-1]) % multiple
    if ph or pw:
        mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, ph, pw


def _run(model: nn.Module, x: torch.Tensor, scale: int, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    xp, _, _ = pad_to_multiple(x, multiple)
    y = model(xp)
    return y[..., : h * scale, : w * scale]


@torch.no_grad()
def forward_tiled(
    model: nn.Module,
    x: torch.Tensor,
    scale: int,
    tile: int | None = None,
    tile_pad: int | None = None,
    multiple: int = 1,
    out_device: torch.device | str | None = None,
) -> torch.Tensor:
    """``model(x)`` for ``x`` = ``[B,C,H,W]``, optionally tile by tile (see module docstring).

    ``tile=None`` (or a tile covering the image) runs the whole image at once. ``tile_pad=None`` uses the
    model's receptive radius, which makes the result equal to the untiled one. The output is assembled on
    ``out_device`` (default: the input's device), so a GPU only ever holds one tile.
    """
    b, c, h, w = x.shape
    out_device = torch.device(out_device) if out_device is not None else x.device
    if tile is None or (tile >= h and tile >= w):
        return _run(model, x, scale, multiple).to(out_device)
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    pad = receptive_radius(model) if tile_pad is None else int(tile_pad)
    out: torch.Tensor | None = None
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0 = max(top - pad, 0), max(left - pad, 0)
            t1, l1 = min(bottom + pad, h), min(right + pad, w)
            y = _run(model, x[:, :, t0:t1, l0:l1], scale, multiple)
            if out is None:
                out = torch.empty((b, y.shape[1], h * scale, w * scale), dtype=y.dtype, device=out_device)
            core = y[:, :, (top - t0) * scale : (bottom - t0) * scale, (left - l0) * scale : (right - l0) * scale]
            out[:, :, top * scale : bottom * scale, left * scale : right * scale] = core.to(out_device)
    assert out is not None
    return out


_TRANSFORMS: list[tuple[bool, bool, bool]] = [(h, v, t) for t in (False, True) for v in (False, True) for h in (False, True)]


def _dihedral(x: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    if transpose:
        x = x.transpose(-1, -2)
    return x


def _inverse_dihedral(x: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if transpose:
        x = x.transpose(-1, -2)
    if vflip:
        x = x.flip(-2)
    if hflip:
        x = x.flip(-1)
    return x


@torch.no_grad()
def forward_self_ensemble(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x8 self-ensemble (EDSR's "+"): average ``run`` over the 8 flips/rotations, each mapped back."""
    acc: torch.Tensor | None = None
    for hflip, vflip, transpose in _TRANSFORMS:
        y = _inverse_dihedral(run(_dihedral(x, hflip, vflip, transpose)), hflip, vflip, transpose)
        acc = y.float() if acc is None else acc + y.float()
    assert acc is not None
    return acc / len(_TRANSFORMS)


def upscale_tensor(
    model: nn.Module,
    x: torch.Tensor,
    scale: int,
    tile: int | None = None,
    tile_pad: int | None = None,
    self_ensemble: bool = False,
    multiple: int = 1,
    autocast: Callable[[], object] | None = None,
    out_device: torch.device | str | None = None,
) -> torch.Tensor:
    """Full inference path: optional self-ensemble around optional tiling, inside an optional autocast context."""

    def run(inp: torch.Tensor) -> torch.Tensor:
        if autocast is None:
            return forward_tiled(model, inp, scale, tile, tile_pad, multiple, out_device).float()
        with autocast():
            return forward_tiled(model, inp, scale, tile, tile_pad, multiple, out_device).float()

    if self_ensemble:
        return forward_self_ensemble(run, x)
    return run(x)


def image_to_tensor(img: np.ndarray, max_value: float = 255.0) -> torch.Tensor:
    """``HWC`` (or ``HW``) integer image -> ``[1, C, H, W]`` float32 in [0, 1]."""
    arr = img if img.ndim == 3 else img[:, :, None]
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32))
    return t.div_(max_value).unsqueeze(0)


def tensor_to_uint8(t: torch.Tensor, max_value: int = 255) -> np.ndarray:
    """``[1, C, H, W]`` / ``[C, H, W]`` float in [0, 1] -> ``HWC`` integer image, clamped and rounded.

    Rounding (not truncation) matters: truncating lowers PSNR by ~0.2 dB on average. ``max_value=65535``
    returns uint16.
    """
    if t.ndim == 4:
        t = t[0]
    arr = t.detach().float().clamp(0, 1).mul(max_value).round().cpu().numpy().transpose(1, 2, 0)
    return arr.astype(np.uint16 if max_value > 255 else np.uint8)


#: ``Upscaler(lr)`` maps an ``HW``/``HWC`` uint8 LR image to the uint8 SR image of the same layout.
Upscaler = Callable[[np.ndarray], np.ndarray]

#: BT.601 luma weights (sum 1): turns an RGB network output back into one grey channel for grey inputs.
_LUMA = np.array([65.481, 128.553, 24.966]) / 219.0


def cpu_fast_layout(x: torch.Tensor) -> torch.Tensor:
    """A CPU input in channels-last layout, anything else as it is.

    Why: on CPU, PyTorch runs the depthwise 3x3 convolutions that make up most of FFNetSR through oneDNN only for
    channels-last inputs; in the default layout they take a slow generic path. Measured on 2 cores with the
    quick start's model: 1.4-2.3x less CPU time per image and ~1.5x per training step, same outputs up to float
    rounding (Set14 + 30 B100 images: identical PSNR/SSIM to 4 decimals). The weights keep their layout, so
    checkpoints and GPU runs are unchanged.
    """
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" and x.ndim == 4 else x


def bicubic_upscaler(scale: int) -> Upscaler:
    """MATLAB-bicubic upscaling, rounded to uint8 (the literature's "Bicubic" row)."""

    def run(lr: np.ndarray) -> np.ndarray:
        return imresize(lr, float(scale))

    return run


def model_upscaler(
    model: nn.Module,
    scale: int,
    device: torch.device,
    tile: int | None = None,
    tile_pad: int | None = None,
    self_ensemble: bool = False,
    precision: str = "fp32",
    pad_multiple: int = 1,
) -> Upscaler:
    """Wrap a model as an :data:`Upscaler`. Grey inputs are replicated to RGB and mapped back with the luma
    weights (grey in, grey out), so a greyscale test image is scored on the same footing as for bicubic."""
    from metamixer.train.amp import autocast

    def run(lr: np.ndarray) -> np.ndarray:
        grey = lr.ndim == 2 or lr.shape[2] == 1
        x = cpu_fast_layout(image_to_tensor(to_rgb(lr)).to(device))
        y = upscale_tensor(
            model, x, scale, tile, tile_pad, self_ensemble, pad_multiple,
            autocast=lambda: autocast(device, precision), out_device=device,
        )
        if grey:
            y = (y * torch.tensor(_LUMA, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            return tensor_to_uint8(y)[:, :, 0]
        return tensor_to_uint8(y)

    return run


def prepare_for_inference(model: nn.Module, *, fast: bool = True, compile: bool = False) -> nn.Module:
    """The one SR deploy path (``ffnet-sr-upscale``, ``-eval``, ``-bench`` and the quick start use it): an
    eval-mode copy, fused, channels-last, its FFNet blocks run by core's fused channels-last kernels
    (:func:`metamixer.nn.inference.prepare_for_inference`; ``fast=False``: plain PyTorch ops, channels-last).

    ``compile=True`` instead compiles the fused channels-last model with ``torch.compile`` (inductor, one graph
    per input shape, ``dynamic=False``). Graphs are cached in the process and on disk under the kernel cache
    (``$FFNET_CACHE_DIR/inductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` is set), so later images and later runs of
    the same shape reuse them; with tiling every tile has one shape, so a folder of images of any size compiles
    once. It pays only when many images share a shape: compiling takes tens of seconds on a laptop CPU
    (``ffnet-sr-bench --compare-authors --compiled`` times it). Inductor's ``freezing`` is on: run under
    ``torch.no_grad()`` / ``inference_mode()`` (as upscale and eval do), the weights are folded into the graph as
    constants and oneDNN's convolutions take them prepacked, with bias/GELU/residual fused in (under autograd
    freezing does not apply). Outputs equal the plain model's up to float rounding."""
    if not compile:
        return prepare_blocks(model, fast_blocks=fast)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    return torch.compile(prepare_blocks(model, fast_blocks=False), dynamic=False, options={"freezing": True})


def load_model_for_inference(checkpoint: str | Path, device: torch.device, prepare: bool = True,
                             compile: bool = False) -> nn.Module:
    """Any FFNetSR weights (our checkpoint, EMA preferred; or the authors' ``params`` file), architecture
    inferred from the tensor shapes, on ``device``: the deploy form (:func:`prepare_for_inference`) unless
    ``prepare=False`` (then the plain model in eval mode)."""
    from metamixer.train.checkpoint import load_state_dict_checked

    from .models import model_from_state_dict, read_weights

    sd = read_weights(checkpoint)
    model = model_from_state_dict(sd, checkpoint)
    load_state_dict_checked(model, sd, str(checkpoint))
    model = model.to(device).eval()
    return prepare_for_inference(model, compile=compile) if prepare else model
