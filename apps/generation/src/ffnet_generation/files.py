"""Output files and folders of the generation commands: written so that a failure leaves nothing half-done.

Why: sampling 50,000 images or encoding ImageNet takes hours, and a run stopped by a bad option, a crash or
Ctrl-C must not leave a truncated ``samples.npz`` or a folder that looks finished. So every file is written to a
temporary name in its own folder and renamed into place (readers see the old file or the new one), a folder a
command creates is removed again if the command fails, and output paths are checked before any work starts.
Core's ``results.write_json`` does the same for JSON; this module covers NPZ / PNG / folders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from metamixer.train.errors import FFNetError

__all__ = ["atomic_write", "copy_file", "save_npz", "check_output_file", "check_output_folder", "created_folder",
           "report_input_error"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """``write(handle)`` into a temporary file beside ``path``, then rename it over ``path`` (parents created).

    The temporary (``.NAME.<pid>.<id>.tmp``) is removed on any failure, Ctrl-C included."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def copy_file(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` to ``target`` atomically (a copied checkpoint is never seen half-written)."""
    with open(source, "rb") as src:
        return atomic_write(target, lambda handle: shutil.copyfileobj(src, handle, 1 << 20))


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` atomically (a file handle, so numpy does not append a second ``.npz``)."""
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_folder(path: str | Path, option: str = "--output") -> Path:
    """An output folder argument must be a folder or not exist yet (and lie below a folder, not a file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FFNetError(f"{option} {path}: is an existing file, expected a folder (existing or new)")
    above = _first_existing(path)
    if not above.is_dir():
        raise FFNetError(f"{option} {path}: {above} is a file, so the folder cannot be created there")
    return path


def check_output_file(path: str | Path, option: str = "--output") -> Path:
    """An output file argument must not be an existing folder, and its folder must be creatable."""
    path = Path(path)
    if path.is_dir():
        raise FFNetError(f"{option} {path}: is a folder, expected a file path such as {path / 'results.json'}")
    above = _first_existing(path.parent)
    if not above.is_dir():
        raise FFNetError(f"{option} {path}: {above} is a file, so the file's folder cannot be created there")
    return path


@contextlib.contextmanager
def created_folder(path: str | Path) -> Iterator[Path]:
    """Create ``path`` (with parents); if the body fails, remove every folder this call created.

    A folder that existed before is kept as it was (files the body wrote there atomically are its own
    business), so a failed run never deletes a user's earlier results."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    top = missing[-1] if missing else None
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        raise


def report_input_error(message: str) -> None:
    """One ``error:`` line on stderr for one bad input of a folder run that goes on (the format of core's
    ``for_each_input``, for inputs that fail inside data-loader workers where that helper cannot run)."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
