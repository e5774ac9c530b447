"""Image reading/writing that keeps what SR evaluation needs to know.

- Greyscale files stay ``HW`` (the metrics use grey values directly as Y; silently converting to RGB would change
  the published numbers).
- 16-bit PNGs keep their 16-bit values (``uint16``) instead of being truncated to 8 bits by PIL's mode "I".
- EXIF orientation is applied for user-facing upscaling (phones store portrait photos sideways), but is optional
  because benchmark files have none and must be read byte-exact.
- Anything PIL cannot decode raises :class:`~metamixer.train.errors.FFNetError` naming the file.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from metamixer.train.errors import FFNetError

from .png16 import png_info, read_png16, write_png16

__all__ = ["IMAGE_EXTENSIONS", "LoadedImage", "read_image", "read_rgb_or_grey", "write_png", "list_images"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class LoadedImage:
    """Decoded pixels plus how they were stored: ``color`` is ``HW`` grey or ``HWC`` RGB; ``alpha`` is ``HW`` or None."""

    color: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int  # 8 or 16
    path: Path


def list_images(folder: Path) -> list[Path]:
    """Sorted image files directly inside ``folder`` (not recursive: datasets keep HR and LR in sibling folders)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise FFNetError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise FFNetError(f"expected an image file, got a folder: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise FFNetError(f"cannot read image {path}: not a readable image file ({type(exc).__name__})") from None
    return img


def read_image(path: str | Path, exif_transpose: bool = False) -> LoadedImage:
    """Decode ``path`` into grey/RGB (+ alpha) arrays, keeping 16-bit depth when the file has it."""
    path = Path(path)
    img = _open(path)
    info = png_info(path) if img.format == "PNG" else None
    if info is not None and info[2] == 16 and info[3] in (2, 4, 6) and not info[4]:
        return _read_colour16(path, img if exif_transpose else None)
    if exif_transpose:
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        if mode == "I" and arr.max(initial=0) <= 255 and img.format != "PNG":
            return LoadedImage(arr.astype(np.uint8), None, 8, path)
        return LoadedImage(np.clip(arr, 0, 65535).astype(np.uint16), None, 16, path)
    if mode == "F":
        raise FFNetError(f"cannot read image {path}: floating-point images are not supported")
    if mode in ("L", "1"):
        return LoadedImage(np.asarray(img.convert("L")), None, 8, path)
    if mode == "LA" or (mode == "P" and "transparency" in img.info) or mode == "PA":
        la = np.asarray(img.convert("LA"))
        if mode.startswith("P"):
            rgba = np.asarray(img.convert("RGBA"))
            return LoadedImage(rgba[..., :3].copy(), rgba[..., 3].copy(), 8, path)
        return LoadedImage(la[..., 0].copy(), la[..., 1].copy(), 8, path)
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"))
        return LoadedImage(rgba[..., :3].copy(), rgba[..., 3].copy(), 8, path)
    if mode == "RGB":
        return LoadedImage(np.asarray(img), None, 8, path)
    return LoadedImage(np.asarray(img.convert("RGB")), None, 8, path)


def _read_colour16(path: Path, pil_img: Image.Image | None) -> LoadedImage:
    """16-bit RGB(A)/grey+alpha PNG at full depth (Pillow would truncate it to 8 bits)."""
    try:
        pix = read_png16(path)
    except (ValueError, zlib.error) as exc:
        raise FFNetError(f"cannot read image {path}: corrupt 16-bit PNG ({exc})") from None
    if pil_img is not None:
        orientation = pil_img.getexif().get(0x0112, 1)
        pix = _apply_orientation(pix, orientation)
    ch = pix.shape[2]
    color = pix[:, :, 0] if ch in (1, 2) else pix[:, :, :3]
    alpha = pix[:, :, -1] if ch in (2, 4) else None
    return LoadedImage(np.ascontiguousarray(color), None if alpha is None else np.ascontiguousarray(alpha), 16, path)


def _apply_orientation(pix: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation (1-8) applied to an array, as ``ImageOps.exif_transpose`` does for PIL images."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.swapaxes(a, 0, 1)[::-1],
    }
    return np.ascontiguousarray(ops[orientation](pix)) if orientation in ops else pix


def read_rgb_or_grey(path: str | Path) -> np.ndarray:
    """Benchmark reader: ``HW`` uint8 for grey files, ``HWC`` uint8 RGB otherwise (alpha dropped, no EXIF)."""
    loaded = read_image(path)
    arr = loaded.color
    if loaded.bit_depth == 16:
        arr = np.floor(arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


def write_png(path: str | Path, arr: np.ndarray, alpha: np.ndarray | None = None) -> None:
    """Write ``HW``/``HWC`` uint8 or uint16 pixels (+ optional alpha of the same dtype) as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == np.uint16:
        if alpha is not None or arr.ndim == 3:
            # Pillow cannot write 16-bit colour PNGs: use the small codec in png16.
            planes = [arr[:, :, None] if arr.ndim == 2 else arr]
            if alpha is not None:
                planes.append(alpha.astype(np.uint16)[:, :, None])
            write_png16(path, np.concatenate(planes, axis=2))
        else:
            Image.fromarray(arr).save(path)
        return
    if alpha is not None:
        if arr.ndim == 2:
            img = Image.fromarray(np.stack([arr, alpha], axis=-1))
        else:
            img = Image.fromarray(np.concatenate([arr, alpha[..., None]], axis=-1))
    else:
        img = Image.fromarray(arr)
    img.save(path)
