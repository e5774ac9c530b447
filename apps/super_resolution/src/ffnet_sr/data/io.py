"""Image reading/writing that keeps what SR evaluation needs to know.

- Greyscale files stay ``HW`` (the metrics use grey values directly as Y; silently converting to RGB would change
  the published numbers).
- 16-bit PNGs keep their 16-bit values (``uint16``): Pillow truncates 16-bit colour PNGs to 8 bits and cannot
  write them, so every 16-bit PNG is read and written with OpenCV (imported only then, so a missing or broken
  ``cv2`` costs only 16-bit PNG support, with a message saying so). 8-bit files keep going through Pillow.
- 8-bit files are opened by core's :func:`~metamixer.train.images.open_image` (one reader for every app: the
  decompression-bomb pixel guard, EXIF orientation, one message naming the file for missing, empty, truncated
  or non-image files); its mode conversion is not used, because grey must stay grey and alpha is kept apart.
  16-bit PNGs get the same pixel guard from the header (:func:`~metamixer.train.images.image_size`) before
  OpenCV decodes anything, so one limit holds for every file.
- EXIF orientation is applied for user-facing upscaling (phones store portrait photos sideways), but is optional
  because benchmark files have none and must be read byte-exact.
- Anything that cannot be decoded raises :class:`~metamixer.train.errors.FFNetError` naming the file.
- :func:`write_png` / :func:`write_image` (PNG, JPEG, TIFF by the file's extension) write through core's
  :func:`~metamixer.train.atomic.atomic_write` (a temporary name, then a rename), so a failed or interrupted write
  never leaves a partial image under the real name. 16-bit PNG and TIFF go through OpenCV; JPEG holds neither 16
  bits nor alpha, so :func:`write_image` stores 8 bits without alpha there and says so in its return value.
- :func:`list_images` lists a folder, or with ``recursive`` its whole tree (sorted by relative path; hidden
  sub-folders such as ``.ipynb_checkpoints`` and an excluded folder, e.g. the output folder inside an input
  folder, are skipped).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from metamixer.train.atomic import atomic_write
from metamixer.train.errors import FFNetError
from metamixer.train.images import DEFAULT_MAX_PIXELS, image_size, open_image

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "OUTPUT_EXTENSIONS", "LoadedImage", "read_image",
           "read_rgb_or_grey", "write_png", "write_image", "list_images"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: formats :func:`write_image` writes (the ``--ext`` choices)
OUTPUT_EXTENSIONS = ("png", "jpg", "tif")


@dataclass
class LoadedImage:
    """Decoded pixels plus how they were stored: ``color`` is ``HW`` grey or ``HWC`` RGB; ``alpha`` is ``HW`` or None."""

    color: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int  # 8 or 16
    path: Path


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(folder: Path, recursive: bool = False, exclude: Iterable[Path] = ()) -> list[Path]:
    """Sorted image files inside ``folder``: directly inside (the default: datasets keep HR and LR in sibling
    folders), or anywhere below it with ``recursive``, sorted by relative path.

    The recursive walk does not follow symlinked folders (no loops), skips hidden sub-folders and every folder in
    ``exclude`` (an output folder inside an input folder must not feed a second run its own results).
    """
    folder = Path(folder)
    if not recursive:
        return sorted(p for p in folder.iterdir() if _is_image(p))
    skip = {Path(e).resolve() for e in exclude}
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip)
        found.extend(here / f for f in files if _is_image(here / f))
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _open(path: Path, exif_transpose: bool, max_pixels: int | None) -> Image.Image:
    """The decoded image as stored (mode kept), upright when ``exif_transpose``; errors name the file."""
    return open_image(path, mode=None, max_pixels=max_pixels, exif=exif_transpose)


def _png_header(path: Path) -> tuple[int, int] | None:
    """``(bit_depth, colour_type)`` from a PNG's IHDR (the fixed first 26 bytes), or None for anything else.

    Only this sniff decides which decoder runs; the pixels themselves are decoded by Pillow or OpenCV.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None  # missing file / folder: _open reports it
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    depth, colour_type = struct.unpack(">BB", head[24:26])
    return depth, colour_type


def _cv2(path: Path) -> ModuleType:
    """OpenCV, imported on first use so that the package and its 8-bit I/O work without it."""
    try:
        import cv2
    except (ImportError, OSError) as exc:  # not installed, or a broken build (missing shared libraries)
        raise FFNetError(
            f"{path}: 16-bit PNGs need OpenCV, which cannot be imported ({exc}); "
            "pip install opencv-python-headless"
        ) from None
    return cv2


def read_image(path: str | Path, exif_transpose: bool = False,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode ``path`` into grey/RGB (+ alpha) arrays, keeping 16-bit depth when the file has it.

    ``max_pixels`` (None: no limit) refuses a file whose header declares more pixels, before decoding it.
    """
    path = Path(path)
    header = _png_header(path)
    if header is not None and header[0] == 16:
        image_size(path, max_pixels)  # header only: the pixel guard (and not-found/empty) before OpenCV decodes
        return _read_png16(path, header[1], exif_transpose)
    img = _open(path, exif_transpose, max_pixels)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey TIFF/PGM (PNGs went to OpenCV above)
        arr = np.asarray(img)
        if mode == "I" and arr.max(initial=0) <= 255:  # 32-bit container of 8-bit values (PGM/TIFF)
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


def _read_png16(path: Path, colour_type: int, exif_transpose: bool) -> LoadedImage:
    """A 16-bit PNG at full depth via OpenCV (BGR(A) order turned into RGB(A); grey files stay ``HW``)."""
    cv2 = _cv2(path)
    # imdecode on bytes read here (not imread) so non-ASCII paths work on every OS and read errors are ours
    try:
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise FFNetError(f"cannot read image {path}: {exc.strerror or exc}") from None
    pix = _decode_quietly(cv2, data)
    if pix is None or pix.dtype != np.uint16:
        raise FFNetError(f"cannot read image {path}: corrupt 16-bit PNG (OpenCV could not decode it)")
    if exif_transpose:
        pix = _apply_orientation(pix, _exif_orientation(path))
    if pix.ndim == 2:
        pix = pix[:, :, None]
    alpha = pix[:, :, 3] if pix.shape[2] == 4 else None
    if colour_type in (0, 4):  # grey (+alpha): OpenCV replicates grey into B, G, R when there is alpha
        color = pix[:, :, 0]
    else:
        color = pix[:, :, 2::-1]  # BGR -> RGB
    alpha = None if alpha is None else np.ascontiguousarray(alpha)
    return LoadedImage(np.ascontiguousarray(color), alpha, 16, path)


def _decode_quietly(cv2: ModuleType, data: np.ndarray) -> np.ndarray | None:
    """``imdecode`` (UNCHANGED: keep depth and alpha, ignore EXIF) with OpenCV's warnings muted for the call.

    A truncated file would otherwise print an OpenCV ``[ WARN ]`` line before our own error; the caller reports
    the failure once, naming the file (libpng may still print one line of its own for corrupt zlib data).
    """
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    level = log.getLogLevel() if log is not None else None
    if log is not None:
        log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    finally:
        if log is not None:
            log.setLogLevel(level)


def _exif_orientation(path: Path) -> int:
    """EXIF orientation tag (1 = upright) as Pillow reads it; a file without readable EXIF is upright."""
    try:
        with Image.open(path) as img:
            return int(img.getexif().get(0x0112, 1))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return 1


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
    """Write ``HW``/``HWC`` uint8 or uint16 pixels (+ optional alpha of the same dtype) as PNG.

    uint16 goes through OpenCV (Pillow cannot write 16-bit colour); OpenCV has no grey+alpha PNG, so 16-bit grey
    with alpha is stored as RGBA with the grey copied into R, G and B.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == np.uint16:
        _write_png16(path, arr, alpha)
        return
    if alpha is not None:
        if arr.ndim == 2:
            img = Image.fromarray(np.stack([arr, alpha], axis=-1))
        else:
            img = Image.fromarray(np.concatenate([arr, alpha[..., None]], axis=-1))
    else:
        img = Image.fromarray(arr)
    _atomic(path, lambda handle: img.save(handle, format="PNG"))


def _atomic(path: Path, write: Callable[[IO[bytes]], object], kind: str = "PNG") -> None:
    """Core's :func:`~metamixer.train.atomic.atomic_write` (``path`` is the complete new file or untouched); an
    OS error (full disk, read-only folder) is the user's to fix: one message naming the file."""
    try:
        atomic_write(path, write)
    except OSError as exc:
        raise FFNetError(f"{path}: cannot write the {kind} ({exc.strerror or exc})") from None


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by rounding v / 257 (65535 -> 255), the inverse of the 8 -> 16 bit scaling."""
    return np.floor(arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8) if arr.dtype == np.uint16 else arr


def _with_alpha(arr: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    if alpha is None:
        return arr
    return np.concatenate([arr[:, :, None] if arr.ndim == 2 else arr, alpha[:, :, None].astype(arr.dtype)], axis=2)


def write_image(path: str | Path, arr: np.ndarray, alpha: np.ndarray | None = None, jpeg_quality: int = 95) -> list[str]:
    """Write ``HW``/``HWC`` uint8 or uint16 pixels (+ optional alpha) in the format of ``path``'s extension: PNG
    (:func:`write_png`), JPEG (``.jpg``/``.jpeg``, ``jpeg_quality`` 1-100, 4:4:4 chroma so the upscaled colour
    detail is kept) or TIFF (``.tif``/``.tiff``, LZW, lossless; 16 bits kept, through OpenCV).

    Returns what the format could not hold (empty for PNG and TIFF): JPEG has no alpha and no 16 bits, so those
    are dropped / rounded to 8 bits and the caller reports it instead of the file silently losing them.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".png":
        write_png(path, arr, alpha)
        return []
    if ext in (".jpg", ".jpeg"):
        lost = (["16-bit stored as 8-bit"] if arr.dtype == np.uint16 else []) + (["alpha dropped"] if alpha is not None
                                                                                 else [])
        img = Image.fromarray(_to_8bit(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr))
        _atomic(path, lambda handle: img.save(handle, format="JPEG", quality=int(jpeg_quality), subsampling=0),
                "JPEG")
        return [f"{note} (JPEG)" for note in lost]
    if ext in (".tif", ".tiff"):
        pix = _with_alpha(arr, alpha)
        if pix.dtype == np.uint16:
            _write_cv2(path, pix, ".tiff", "TIFF")
        else:
            img = Image.fromarray(pix[:, :, 0] if pix.ndim == 3 and pix.shape[2] == 1 else pix)
            _atomic(path, lambda handle: img.save(handle, format="TIFF", compression="tiff_lzw"), "TIFF")
        return []
    raise FFNetError(f"{path}: cannot write images of type {ext or '(no extension)'}; use .png, .jpg or .tif")


def _write_png16(path: Path, arr: np.ndarray, alpha: np.ndarray | None) -> None:
    _write_cv2(path, _with_alpha(arr[:, :, None] if arr.ndim == 2 else arr, alpha), ".png", "PNG")


def _write_cv2(path: Path, pix: np.ndarray, ext: str, kind: str) -> None:
    """16-bit pixels (``HW`` or ``HWC`` with 1-4 channels, RGB(A) order) encoded by OpenCV, written atomically.
    OpenCV has no grey+alpha: such an image is stored as RGBA with the grey in R, G and B."""
    cv2 = _cv2(path)
    pix = pix[:, :, None] if pix.ndim == 2 else pix
    if pix.shape[2] == 2:
        pix = pix[:, :, [0, 0, 0, 1]]
    convert = {1: None, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}.get(pix.shape[2], -1)
    if convert == -1:
        raise FFNetError(f"write_{kind.lower()} {path}: expected 1-4 channels, got an array of shape {pix.shape}")
    pix = np.ascontiguousarray(pix[:, :, 0] if convert is None else cv2.cvtColor(pix, convert))
    ok, buf = cv2.imencode(ext, pix)
    if not ok:
        raise FFNetError(f"write_{kind.lower()} {path}: OpenCV could not encode a 16-bit {kind} of shape {pix.shape}")
    _atomic(path, lambda handle: handle.write(buf.tobytes()), kind)
