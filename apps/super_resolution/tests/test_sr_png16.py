"""16-bit PNG I/O through OpenCV: bit-exact round trips, RGB channel order against independent readers/writers,
EXIF on 16-bit files, and one clear error for corrupt files or a missing ``cv2``."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ffnet_sr.data.io import read_image, write_png
from ffnet_sr.upscale import cli as upscale_cli
from metamixer.train.errors import FFNetError


def _u16(*shape: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)
    a.flat[0], a.flat[-1] = 0, 65535  # both ends of the range survive
    return a


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, colour_type: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_rgb_rgba_and_grey_round_trip_bit_exact(tmp_path: Path) -> None:
    rgb, alpha, grey = _u16(7, 11, 3), _u16(7, 11, seed=1), _u16(9, 5, seed=2)
    write_png(tmp_path / "rgb.png", rgb)
    back = read_image(tmp_path / "rgb.png")
    assert back.bit_depth == 16 and back.alpha is None and np.array_equal(back.color, rgb)
    write_png(tmp_path / "rgba.png", rgb, alpha)
    back = read_image(tmp_path / "rgba.png")
    assert np.array_equal(back.color, rgb) and np.array_equal(back.alpha, alpha)
    write_png(tmp_path / "rgba4.png", np.dstack([rgb, alpha]))  # alpha as a 4th channel works the same
    assert np.array_equal(read_image(tmp_path / "rgba4.png").alpha, alpha)
    write_png(tmp_path / "grey.png", grey)
    back = read_image(tmp_path / "grey.png")
    assert back.color.shape == (9, 5) and back.color.dtype == np.uint16 and np.array_equal(back.color, grey)


def test_grey_with_alpha_keeps_values(tmp_path: Path) -> None:
    grey, alpha = _u16(6, 4), _u16(6, 4, seed=3)
    # a real grey+alpha file (colour type 4, big-endian samples, filter 0) reads back as HW grey + alpha
    raw = np.dstack([grey, alpha]).astype(">u2").reshape(6, 8).view(np.uint8)
    rows = np.concatenate([np.zeros((6, 1), np.uint8), raw], axis=1).tobytes()
    (tmp_path / "ga.png").write_bytes(_png(4, 6, 4, zlib.compress(rows)))
    back = read_image(tmp_path / "ga.png")
    assert (
        back.color.shape == (6, 4) and np.array_equal(back.color, grey) and np.array_equal(back.alpha, alpha)
    )
    # OpenCV cannot write grey+alpha: written as RGBA with the grey in R, G and B, values exact
    write_png(tmp_path / "out.png", grey, alpha)
    back = read_image(tmp_path / "out.png")
    assert np.array_equal(back.color, np.dstack([grey] * 3)) and np.array_equal(back.alpha, alpha)


def test_opencv_file_is_read_in_rgb_order(tmp_path: Path) -> None:
    bgr = np.zeros((3, 4, 3), np.uint16)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 1000, 20000, 65535  # OpenCV order: B, G, R
    bgr[1, 2] = (7, 8, 9)
    assert cv2.imwrite(str(tmp_path / "cv.png"), bgr)
    color = read_image(tmp_path / "cv.png").color
    assert color[0, 0].tolist() == [65535, 20000, 1000] and color[1, 2].tolist() == [9, 8, 7]


def test_written_files_match_independent_readers(tmp_path: Path) -> None:
    rgb, grey = _u16(5, 6, 3), _u16(5, 6, seed=4)
    write_png(tmp_path / "rgb.png", rgb)
    with Image.open(tmp_path / "rgb.png") as img:  # Pillow keeps the high byte of 16-bit RGB
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), (rgb >> 8).astype(np.uint8))
    write_png(tmp_path / "grey.png", grey)
    with Image.open(tmp_path / "grey.png") as img:
        assert img.mode.startswith("I;16") and np.array_equal(np.asarray(img), grey)
    Image.fromarray(grey).save(tmp_path / "pil_grey.png")  # a 16-bit grey PNG from Pillow reads back exact
    assert np.array_equal(read_image(tmp_path / "pil_grey.png").color, grey)


def test_exif_orientation_of_16bit_png_matches_pillow(tmp_path: Path) -> None:
    rgb = _u16(4, 7, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    ok, buf = cv2.imencode(".png", rgb[..., ::-1].copy())
    data = buf.tobytes()
    (tmp_path / "deep.png").write_bytes(data[:-12] + _chunk(b"eXIf", exif.tobytes()[6:]) + data[-12:])
    Image.fromarray((rgb >> 8).astype(np.uint8)).save(tmp_path / "flat.png", exif=exif)
    deep = read_image(tmp_path / "deep.png", exif_transpose=True).color
    flat = read_image(tmp_path / "flat.png", exif_transpose=True).color  # Pillow's exif_transpose
    assert ok and deep.shape == (7, 4, 3) and np.array_equal((deep >> 8).astype(np.uint8), flat)
    assert np.array_equal(read_image(tmp_path / "deep.png").color, rgb)  # benchmark reads ignore EXIF


def test_corrupt_16bit_png_gives_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_png(tmp_path / "good.png", _u16(8, 8, 3))
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(FFNetError, match=r"cut\.png: corrupt 16-bit PNG"):
        read_image(tmp_path / "cut.png")
    # checksums right, pixel data wrong: passes the upscaler's up-front Pillow verify, fails in OpenCV
    bad = tmp_path / "in" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(_png(8, 8, 2, b"this is not zlib data"))
    with pytest.raises(FFNetError, match=r"bad\.png: corrupt 16-bit PNG \(OpenCV could not decode it\)"):
        read_image(bad)
    with pytest.raises(SystemExit) as code:
        upscale_cli([str(bad), "--scale", "2", "--output", str(tmp_path / "out"), "--bicubic"])
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.count("\n") == 1 and "bad.png: corrupt 16-bit PNG" in err, err


def test_missing_cv2_costs_only_16bit_support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_png(tmp_path / "deep.png", _u16(4, 4, 3))
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(tmp_path / "flat.png")
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` now raises ImportError
    with pytest.raises(
        FFNetError, match=r"deep\.png: 16-bit PNGs need OpenCV.*pip install opencv-python-headless"
    ):
        read_image(tmp_path / "deep.png")
    with pytest.raises(FFNetError, match="16-bit PNGs need OpenCV"):
        write_png(tmp_path / "out.png", _u16(4, 4))
    assert read_image(tmp_path / "flat.png").color[0, 0].tolist() == [9, 9, 9]
    code = "import sys, ffnet_sr.data.io, ffnet_sr.upscale; print('cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the package imports cv2 only when a 16-bit PNG is read or written
