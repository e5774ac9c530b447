"""Minimal 16-bit PNG codec for colour images.

Pillow decodes 16-bit RGB/RGBA PNGs to 8 bits and cannot write them, which would silently throw away half the
precision of a 16-bit photo the user asked to upscale. This module reads and writes the 16-bit colour types
(grey 0, RGB 2, grey+alpha 4, RGBA 6; non-interlaced) with the standard library's zlib. Greyscale 16-bit without
alpha is left to Pillow (mode ``I;16`` is lossless there).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["png_info", "read_png16", "write_png16"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _chunks(data: bytes):
    pos = len(_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        yield ctype, data[pos + 8 : pos + 8 + length]
        pos += 12 + length


def png_info(path: str | Path) -> tuple[int, int, int, int, int] | None:
    """``(width, height, bit_depth, colour_type, interlace)`` of a PNG file, or None if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or not head.startswith(_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return w, h, depth, ctype, interlace


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo the per-row PNG filters; None/Sub/Up are vectorised, Average/Paeth loop over bytes."""
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    pos = 0
    for y in range(height):
        ftype = raw[pos]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=pos + 1)
        pos += stride + 1
        if ftype == 0:
            cur = line.copy()
        elif ftype == 1:  # Sub: running sum per byte lane (mod 256)
            lanes = line.reshape(-1, bpp).astype(np.uint64)
            cur = (np.cumsum(lanes, axis=0) % 256).astype(np.uint8).reshape(-1)
        elif ftype == 2:
            cur = (line.astype(np.uint16) + prev).astype(np.uint8)
        elif ftype in (3, 4):
            cur_l = bytearray(line.tobytes())
            up = prev.tobytes()
            for i in range(stride):
                a = cur_l[i - bpp] if i >= bpp else 0
                b = up[i]
                if ftype == 3:
                    pred = (a + b) >> 1
                else:
                    pred = _paeth(a, b, up[i - bpp] if i >= bpp else 0)
                cur_l[i] = (cur_l[i] + pred) & 0xFF
            cur = np.frombuffer(bytes(cur_l), dtype=np.uint8)
        else:
            raise ValueError(f"invalid PNG filter type {ftype}")
        out[y] = cur
        prev = cur
    return out


def read_png16(path: str | Path) -> np.ndarray:
    """Decode a non-interlaced 16-bit PNG into ``HW`` / ``HWC`` uint16 (C = 1..4 as stored)."""
    data = Path(path).read_bytes()
    if not data.startswith(_SIGNATURE):
        raise ValueError("not a PNG file")
    idat = bytearray()
    header = None
    for ctype, body in _chunks(data):
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif ctype == b"IDAT":
            idat += body
        elif ctype == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    w, h, depth, ctype_id, _c, _f, interlace = header
    if depth != 16 or ctype_id not in _CHANNELS or interlace:
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {ctype_id}, interlace {interlace})")
    ch = _CHANNELS[ctype_id]
    raw = zlib.decompress(bytes(idat))
    stride = w * ch * 2
    if len(raw) < h * (stride + 1):
        raise ValueError("truncated PNG image data")
    pix = _unfilter(raw, h, stride, ch * 2).view(">u2").reshape(h, w, ch).astype(np.uint16)
    return pix[:, :, 0] if ch == 1 else pix


def write_png16(path: str | Path, arr: np.ndarray) -> None:
    """Encode ``HW`` / ``HWC`` (C = 1..4) uint16 as a 16-bit PNG (filter 0, zlib level 6)."""
    a = np.asarray(arr)
    if a.dtype != np.uint16:
        raise ValueError(f"write_png16 needs uint16, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, ch = a.shape
    ctype_id = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    rows = a.astype(">u2").reshape(h, w * ch).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype_id, 0, 0, 0)
    Path(path).write_bytes(_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
