"""One way to write any output file so that a failure never leaves a partial one: write a temporary file in the
same folder, fsync it, rename it over the target, fsync the folder.

Same folder = same filesystem, so the rename is atomic: readers see the old file or the new one. The temporary
(``.NAME.<pid>.<id>.tmp``, the pattern the trainer's start-up clean-up removes) is deleted on any failure, Ctrl-C
included. Files are created with ``open()``, so their mode follows the umask (0644 usually), not ``mkstemp``'s 0600.
Checkpoints, result JSON and the apps' images / arrays all go through :func:`atomic_write`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write"]


def _temporary_name(path: Path) -> Path:
    """The temporary beside ``path`` that :func:`atomic_write` writes first."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # persist the rename itself (the directory entry)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """``write(handle)`` into a binary temporary beside ``path`` (parent folders created), then rename it over
    ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
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
    _sync_folder(path.parent)
    return path
