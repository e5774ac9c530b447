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


# ---------------------------------------------------------------------------------------------- checkpoints
class _WritesMarker:
    """Unpickling this object runs code: it writes its marker file. A loader that ever runs pickled code is
    caught by the marker existing afterwards."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "pickled code ran"))


def checkpoint_corpus(folder: Path, good: Path | None = None) -> dict[str, Path]:
    """name -> path of checkpoints every ``--checkpoint`` / ``--resume`` must refuse with one message: a
    truncated one (``good`` cut in half; a small torch file without one), a foreign file (a zip that is no torch
    file), a text file, an empty file, the weights of another network, and one whose unpickling would run code
    (marker: ``folder / "PICKLED_CODE_RAN"``)."""
    import torch
    from torch import nn

    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / name for name in ("truncated.pth", "foreign.pth", "text.pth", "empty.pth",
                                              "wrong_architecture.pth", "pickled_code.pth")}
    source = good.read_bytes() if good is not None else None
    if source is None:
        buffer = io.BytesIO()
        torch.save({"model": nn.Linear(64, 64).state_dict()}, buffer)
        source = buffer.getvalue()
    files["truncated.pth"].write_bytes(source[: len(source) // 2])
    import zipfile

    with zipfile.ZipFile(files["foreign.pth"], "w") as archive:
        archive.writestr("weights/readme.txt", "a zip archive, but not a torch checkpoint")
    files["text.pth"].write_text("model: not a checkpoint\n")
    files["empty.pth"].write_bytes(b"")
    other = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Linear(5, 2))
    torch.save({"model": other.state_dict(), "step": 1, "epoch": 1}, files["wrong_architecture.pth"])
    torch.save({"model": _WritesMarker(folder / "PICKLED_CODE_RAN")}, files["pickled_code.pth"])
    return files


def pickled_code_ran(folder: Path) -> bool:
    return (folder / "PICKLED_CODE_RAN").exists()


# ---------------------------------------------------------------------------------------------- forecasting CSVs
def _csv_rows(n: int = 200, start: str = "2020-01-01 00:00:00", freq_hours: int = 1) -> list[str]:
    import datetime as dt

    t0 = dt.datetime.fromisoformat(start)
    rows = []
    for i in range(n):
        t = t0 + dt.timedelta(hours=freq_hours * i)
        rows.append(f"{t:%Y-%m-%d %H:%M:%S},{np.sin(i / 7):.4f},{np.cos(i / 5):.4f},{(i % 24) / 24:.4f}")
    return rows


def csv_corpus(folder: Path, n: int = 200) -> dict[str, Path]:
    """name -> path: ``good.csv`` (hourly, date + 3 columns, ``OT`` last, TSLib's layout) and one file per
    defect a user's export really has."""
    folder.mkdir(parents=True, exist_ok=True)
    header = "date,a,b,OT"
    rows = _csv_rows(n)
    cases = {
        "good.csv": [header, *rows],
        "duplicate_timestamps.csv": [header, *rows[:50], rows[49], *rows[50:]],
        "unsorted_timestamps.csv": [header, *rows[:60], rows[80], *rows[61:80], rows[60], *rows[81:]],
        "semicolon.csv": [header.replace(",", ";"), *(r.replace(",", ";") for r in rows)],
        "gap.csv": [header, *rows[:100], *rows[130:]],
        "missing_column.csv": ["date,a,b", *(r.rsplit(",", 1)[0] for r in rows)],
        "not_numeric.csv": [header, *rows[:20], rows[20].rsplit(",", 1)[0] + ",n/a", *rows[21:]],
        "bad_dates.csv": [header, *rows[:10], "yesterday" + rows[10][19:], *rows[11:]],
        "empty.csv": [],
        "header_only.csv": [header],
    }
    files = {}
    for name, lines in cases.items():
        files[name] = folder / name
        files[name].write_text("\n".join(lines) + ("\n" if lines else ""))
    return files


# ---------------------------------------------------------------------------------------------- running CLIs
def run_cli(script: str, *args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None):
    """Run a console script of the venv in a fresh interpreter (first-use bugs cannot hide behind an earlier
    test's warm-up); returns the CompletedProcess (text)."""
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).with_name(script)
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **(env or {}))
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=full_env)


def assert_one_line_error(result, *needles: str, code: int = 2) -> str:  # noqa: ANN001
    """The CLI rule: exit ``code``, no traceback, exactly one non-empty line on stderr containing every needle."""
    where = f"exit {result.returncode}\nstdout: {result.stdout[-1500:]}\nstderr: {result.stderr[-3000:]}"
    assert result.returncode == code, where
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, where
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, where
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def assert_folder_run(result, bad: dict[str, Path], total: int, what: str = "images") -> list[str]:  # noqa: ANN001
    """The folder-run rule: exit 1, no traceback, one ``error:`` line per bad input naming it, then one line
    listing all of them (``error: N of TOTAL <what> failed: ...``). Returns the error lines."""
    where = f"exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}"
    assert result.returncode == 1, where
    assert "Traceback" not in result.stderr + result.stdout, where
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in errors), where
    assert len(errors) == len(bad) + 1, where  # one line per bad file, then the list of all of them
    assert errors[-1].startswith(f"error: {len(bad)} of {total} {what} failed"), where
    for name, path in bad.items():
        assert sum(str(path) in line for line in errors[:-1]) == 1, (name, where)
        assert str(path) in errors[-1], (name, where)
    return errors
