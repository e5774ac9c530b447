"""Result files of evaluations, quick starts and benchmarks: written atomically, readable by everyone.

An interrupted run must never leave a truncated results file behind, and a results file is meant to be shared
(mode 0644 under the usual umask, not the 0600 that ``mkstemp`` gives).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from metamixer.train.atomic import atomic_write

__all__ = ["write_json", "write_results", "environment"]


def write_json(path: str | os.PathLike[str], obj: object) -> Path:
    """Write ``obj`` as indented JSON, creating parent folders, atomically (temp file + rename).

    Every app writes its results (eval metrics, benchmark tables) through this, so an interrupted run never
    leaves a truncated results file behind.
    """
    text = json.dumps(obj, indent=2) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def environment() -> dict[str, str]:
    """Versions a result depends on: Python, torch, metamixer, the installed FFNet apps, the CPU."""
    import platform
    import sys
    from importlib import metadata

    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("metamixer", "ffnet-classification", "ffnet-sr", "ffnet-timeseries", "ffnet-pointcloud",
                 "ffnet-generation"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    versions["platform"] = f"{sys.platform} {platform.machine()}"
    versions["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return versions


def write_results(path: str | os.PathLike[str], *, metrics: dict, data: object = None, checkpoint: object = None,
                  protocol: object = None, wall_s: float | None = None, **extra: object) -> Path:
    """The one ``results.json`` shape every evaluation and quick start writes: ``metrics``, ``data`` (what was
    scored), ``checkpoint``, ``protocol`` (how it was scored), ``versions``, ``wall_s`` and any app extras."""
    record = {"metrics": metrics, "data": data, "checkpoint": None if checkpoint is None else str(checkpoint),
              "protocol": protocol, "versions": environment(), "wall_s": wall_s, **extra}
    return write_json(path, record)
