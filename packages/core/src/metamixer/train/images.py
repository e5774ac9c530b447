"""Reading user images safely, the same way in every app that reads them (classification, SR, generation).

Why one reader: images from users come rotated by their camera (EXIF orientation), as grey, palette, RGBA, CMYK or
16-bit files, truncated, misnamed, or crafted so that a tiny file declares billions of pixels (a decompression
bomb). Each case must end in a correctly oriented array or in one message naming the file, never in a traceback
or a silently sideways photo.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from metamixer.train.errors import FFNetError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageReadError", "open_image", "image_size"]

#: Pillow's own threshold (``PIL.Image.MAX_IMAGE_PIXELS``: 1024 * 1024 * 1024 // 4 // 3 pixels)
DEFAULT_MAX_PIXELS = 89_478_485


class ImageReadError(FFNetError):
    """An image file could not be read (missing, empty, not an image, truncated, too many pixels)."""


def _pil() -> Any:
    try:
        from PIL import Image, ImageFile, ImageOps
    except ImportError:  # pragma: no cover - every image app depends on pillow
        raise FFNetError("reading images needs Pillow: pip install pillow") from None
    return Image, ImageFile, ImageOps


def image_size(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` from the header only (no pixel data decoded), after the same checks as :func:`open_image`."""
    with _opened(Path(path), max_pixels) as img:
        return img.size


def _opened(path: Path, max_pixels: int | None) -> Any:
    Image, _, _ = _pil()
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file, not an image")
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # our own limit below, named in our message, replaces Pillow's warning/error
        img = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageReadError(f"{path}: declares more pixels than Pillow allows at all (a decompression bomb?)") from None
    except Exception as exc:  # UnidentifiedImageError, OSError, SyntaxError from broken headers
        text = " ".join(str(exc).split())[:120]
        if "truncated" in text.lower():
            raise ImageReadError(f"{path}: image data is truncated or corrupt ({text})") from None
        raise ImageReadError(f"{path}: not a readable image ({type(exc).__name__}: {text})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ImageReadError(f"{path}: {width}x{height} = {width * height:,} pixels is more than the limit of "
                             f"{max_pixels:,} (a decompression bomb, or a genuinely huge image: raise the limit "
                             "(max_pixels; a --max-pixels option where the command has one))")
    return img


def open_image(path: str | os.PathLike[str], mode: str | None = "RGB", *,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, exif: bool = True) -> Any:
    """The decoded, upright PIL image of ``path``, converted to ``mode`` (None: as stored).

    ``exif``: apply the EXIF orientation (what a phone photo's viewer shows). ``mode="RGB"`` turns grey, palette
    and CMYK images into RGB and composites RGBA / LA / transparent-palette images on white (a transparent
    background shown as a viewer would, not as black); 16-bit grey is scaled to 8 bits. ``max_pixels`` (None: no
    limit) guards against decompression bombs before any pixel is decoded. Every failure is an
    :class:`ImageReadError` naming the file.
    """
    Image, _, ImageOps = _pil()
    path = Path(path)
    img = _opened(path, max_pixels)
    try:
        with img:
            img.load()
            if exif:
                img = ImageOps.exif_transpose(img)
            return _convert(img, mode) if mode is not None else img.copy()
    except ImageReadError:
        raise
    except Exception as exc:  # truncated data shows up only when pixels are decoded
        raise ImageReadError(f"{path}: image data is truncated or corrupt ({' '.join(str(exc).split())[:120]})") from None


def _convert(img: Any, mode: str) -> Any:
    Image, _, _ = _pil()
    if img.mode == mode:
        return img.copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I") and mode in ("RGB", "L"):
        import numpy as np

        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        grey = Image.fromarray(np.clip(np.rint(array * 255.0 / top), 0, 255).astype(np.uint8), "L")
        return grey.convert(mode)
    if mode == "RGB" and (img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert(mode)
