"""Result files of evaluations, quick starts and benchmarks: written atomically, readable by everyone.

An interrupted run must never leave a truncated results file behind, and a results file is meant to be shared
(mode 0644 under the usual umask, not the 0600 that ``mkstemp`` gives).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["write_json"]


def write_json(path: str | os.PathLike[str], obj: object) -> Path:
    """Write ``obj`` as indented JSON, creating parent folders, atomically (temp file + rename).

    Every app writes its results (eval metrics, benchmark tables) through this, so an interrupted run never
    leaves a truncated results file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a results file is for everyone who may read the folder
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
