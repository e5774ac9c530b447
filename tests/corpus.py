"""A corpus of bad and unusual input files, made on the fly (nothing binary is committed): the images a user's
folder really holds, the CSVs a user really exports, the checkpoints a user really downloads."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, side: int = 100_000) -> Path:
    """A valid PNG header declaring ``side`` x ``side`` RGB pixels, with almost no data (a few hundred bytes)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
                     + _png_chunk(b"IEND", b""))
    return path


def _photo(size: tuple[int, int] = (40, 24)) -> Image.Image:
    y, x = np.mgrid[0:size[1], 0:size[0]]
    return Image.fromarray(np.stack([x * 6 % 256, y * 10 % 256, (x + y) * 3 % 256], -1).astype(np.uint8), "RGB")


def image_corpus(folder: Path) -> dict[str, Path]:
    """name -> path of every case: good ones (readable, possibly unusual) and bad ones (must give one message)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    files: dict[str, Path] = {}

    def save(name: str, img: Image.Image, **kw: object) -> None:
        files[name] = folder / name
        img.save(files[name], **kw)

    save("rgb.png", photo)
    save("grey.png", photo.convert("L"))
    save("rgba.png", photo.convert("RGBA"))
    save("palette.png", photo.convert("P"))
    save("cmyk.jpg", photo.convert("CMYK"), quality=95)
    save("tiny.png", photo.resize((3, 5)))
    grey16 = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)  # mode I;16
    save("grey16.png", grey16)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    save("rotated.jpg", photo, exif=exif.tobytes(), quality=95)
    good = io.BytesIO()
    photo.save(good, "PNG")
    files["truncated.png"] = folder / "truncated.png"
    files["truncated.png"].write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG", quality=95)
    files["truncated.jpg"] = folder / "truncated.jpg"
    files["truncated.jpg"].write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    files["text.png"] = folder / "text.png"
    files["text.png"].write_text("this is not an image\n")
    files["empty.png"] = folder / "empty.png"
    files["empty.png"].write_bytes(b"")
    files["bomb.png"] = bomb_png(folder / "bomb.png")
    return files


#: the corpus entries every image CLI must refuse with one message (the rest must be read)
BAD_IMAGES = ("truncated.png", "truncated.jpg", "text.png", "empty.png", "bomb.png")
