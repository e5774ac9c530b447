"""MATLAB-compatible bicubic ``imresize``.

Every SR paper's LR inputs and its "Bicubic" row were produced with MATLAB's ``imresize(img, 1/s, 'bicubic')``.
PIL/OpenCV/torch bicubic differ from it (no antialiasing, other kernel constant ``a``, other index mapping), which
shifts PSNR by tenths of a dB. This module reproduces MATLAB exactly on the benchmark data of this project
(see ``docs/super_resolution.md``):

- Keys cubic kernel with ``a = -0.5``; when shrinking by ``s < 1`` the kernel is stretched to ``4 / s`` taps and
  scaled by ``s`` (antialiasing).
- Output pixel ``x`` (1-based) samples input coordinate ``u = x / s + 0.5 * (1 - 1 / s)``; the weights of each
  output pixel are normalised to sum to one.
- Out-of-range taps are clamped to the edge pixel (``border="edge"``, the default). ``border="symmetric"``
  mirrors instead; it is kept because some Python ports use it, and it does NOT reproduce the provided LR files
  (1-3 % of border pixels differ by up to 11 levels).
- Rows (height) first, then columns. For ``uint8`` input the intermediate image is rounded (half away from zero)
  and saturated to ``uint8`` after EACH pass, like MATLAB's uint8 path; rounding once at the end leaves 10-15 %
  of pixels off by up to 12 levels.

All arithmetic is float64 NumPy; the function works on ``HW`` or ``HWC`` arrays of ``uint8``, ``uint16`` or float.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["imresize", "cubic_kernel", "resize_weights"]


def cubic_kernel(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=256)
def _weights_cached(in_len: int, out_len: int, scale: float, antialias: bool, border: str) -> np.ndarray:
    kernel_width = 4.0
    if scale < 1 and antialias:
        width = kernel_width / scale

        def kernel(v: np.ndarray) -> np.ndarray:
            return scale * cubic_kernel(scale * v)
    else:
        width = kernel_width
        kernel = cubic_kernel
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based input indices
    w = kernel(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    idx0 = idx.astype(np.int64) - 1  # 0-based
    if border == "edge":
        idx0 = np.clip(idx0, 0, in_len - 1)
    elif border == "symmetric":
        period = 2 * in_len
        m = np.mod(idx0, period)
        idx0 = np.where(m < in_len, m, period - 1 - m)
    else:
        raise ValueError(f"border must be 'edge' or 'symmetric', got {border!r}")
    dense = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(dense, (rows, idx0.ravel()), w.ravel())
    dense.setflags(write=False)
    return dense


def resize_weights(
    in_len: int, out_len: int, scale: float, antialias: bool = True, border: str = "edge"
) -> np.ndarray:
    """Dense ``[out_len, in_len]`` interpolation matrix for one axis (float64, read-only, cached)."""
    return _weights_cached(int(in_len), int(out_len), float(scale), bool(antialias), border)


def _round_saturate(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    # MATLAB rounds half away from zero; values are clipped first so only the positive branch matters.
    return np.floor(np.clip(x, info.min, info.max) + 0.5).astype(dtype)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
    *,
    antialias: bool = True,
    border: str = "edge",
) -> np.ndarray:
    """Resize ``img`` (``HW`` or ``HWC``) like MATLAB ``imresize(img, scale, 'bicubic')``.

    Give either ``scale`` (output size ``ceil(H * scale) x ceil(W * scale)``) or ``output_shape=(H, W)``.
    Integer input returns the same integer dtype (rounded after each pass, see module docstring); float input
    returns float64 without clipping, so float pipelines can keep overshoot (useful for training targets).
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HW or HWC array, got shape {img.shape}")
    in_h, in_w = img.shape[:2]
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale or output_shape")
    if output_shape is not None:
        out_h, out_w = int(output_shape[0]), int(output_shape[1])
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        # MATLAB computes ceil(in * scale); a tiny tolerance keeps 1/3 * 3 from becoming 1.0000000000000002.
        out_h = int(math.ceil(in_h * scale - 1e-9))
        out_w = int(math.ceil(in_w * scale - 1e-9))
        scale_h = scale_w = float(scale)
    integer = np.issubdtype(img.dtype, np.integer)
    out_dtype = img.dtype
    x = img.astype(np.float64)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, :, None]
    # Pass 1: rows (height axis).
    wh = resize_weights(in_h, out_h, scale_h, antialias, border)
    x = np.tensordot(wh, x, axes=([1], [0]))  # [out_h, W, C]
    if integer:
        x = _round_saturate(x, out_dtype).astype(np.float64)
    # Pass 2: columns (width axis).
    ww = resize_weights(in_w, out_w, scale_w, antialias, border)
    x = np.tensordot(x, ww, axes=([1], [1]))  # [out_h, C, out_w]
    x = np.transpose(x, (0, 2, 1))
    if integer:
        x = _round_saturate(x, out_dtype)
    if squeeze:
        x = x[:, :, 0]
    return np.ascontiguousarray(x)
