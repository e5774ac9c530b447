"""Output paths of the CLIs: checked before any work starts, and folders a failed command created removed again.

Why: an evaluation or a sampling run that fails only after an hour because ``--output`` names a folder (or a
file where a folder is wanted) wastes the hour; one that fails half-way must not leave a folder that looks
finished. Files themselves are written through :func:`metamixer.train.atomic.atomic_write`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from metamixer.train.errors import FFNetError

__all__ = ["check_output_file", "check_output_folder", "created_folder"]


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


def check_output_file(path: str | Path | None, option: str = "--output") -> Path | None:
    """An output file argument (None: not given) must not be an existing folder, and its folder must be
    creatable."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise FFNetError(f"{option} {path}: is a folder, expected a file path such as {path / 'results.json'}")
    above = _first_existing(path.parent)
    if not above.is_dir():
        raise FFNetError(f"{option} {path}: {above} is a file, so the file's folder cannot be created there")
    return path


@contextlib.contextmanager
def created_folder(path: str | Path) -> Iterator[Path]:
    """Create ``path`` (with parents); if the body fails, remove every folder this call created. A folder that
    existed before is kept as it was, so a failed run never deletes a user's earlier results."""
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
