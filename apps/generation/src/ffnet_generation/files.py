"""Output files and folders of the generation commands: written so that a failure leaves nothing half-done.

Why: sampling 50,000 images or encoding ImageNet takes hours, and a run stopped by a bad option, a crash or
Ctrl-C must not leave a truncated ``samples.npz`` or a folder that looks finished. So every file is written to a
temporary name in its own folder and renamed into place (readers see the old file or the new one), a folder a
command creates is removed again if the command fails, and output paths are checked before any work starts.
Core's ``results.write_json`` does the same for JSON; this module covers NPZ / PNG / folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from metamixer.train.atomic import atomic_write  # the one atomic writer; re-exported for the app's callers

__all__ = ["atomic_write", "copy_file", "save_npz"]


def copy_file(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` to ``target`` atomically (a copied checkpoint is never seen half-written)."""
    with open(source, "rb") as src:
        return atomic_write(target, lambda handle: shutil.copyfileobj(src, handle, 1 << 20))


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` atomically (a file handle, so numpy does not append a second ``.npz``)."""
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))







