"""The generation commands' two output formats beyond core's: NPZ arrays and copied files, both through core's
:func:`~metamixer.train.atomic.atomic_write` (sampling 50,000 images takes hours; an interrupted run must never
leave a truncated ``samples.npz``). Output paths and created folders: :mod:`metamixer.train.outputs`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from metamixer.train.atomic import atomic_write

__all__ = ["copy_file", "save_npz"]


def copy_file(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` to ``target`` atomically (a copied checkpoint is never seen half-written)."""
    with open(source, "rb") as src:
        return atomic_write(target, lambda handle: shutil.copyfileobj(src, handle, 1 << 20))


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` atomically (a file handle, so numpy does not append a second ``.npz``)."""
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))







