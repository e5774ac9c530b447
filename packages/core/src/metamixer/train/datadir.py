"""Where the real datasets live (for the apps' command lines, tests and benchmarks; library code never looks).

Data is never committed or downloaded at test time; it sits in a ``shared/data`` folder next to the repository
(``<parent>/shared/data`` when the repo is ``<parent>/<repo>``), or wherever the ``FFNET_DATA`` environment
variable points. Code and tests never hard-code that location: they call :func:`data_root` / :func:`data_path`
so one environment variable relocates everything.
"""

from __future__ import annotations

import os
from pathlib import Path

from metamixer.train.errors import FFNetError

__all__ = ["DATA_ENV_VAR", "data_root", "data_path", "find_repo_root"]

DATA_ENV_VAR = "FFNET_DATA"


def _is_repo_root(folder: Path) -> bool:
    """The monorepo root is the folder that holds ``packages/`` and ``apps/`` (or the root pyproject)."""
    return (folder / "packages").is_dir() and ((folder / "apps").is_dir() or (folder / "pyproject.toml").is_file())


def find_repo_root(start: Path | None = None) -> Path | None:
    """Return the monorepo root above ``start`` (default: this file, then the working directory), or None.

    Both starting points are tried because an editable install resolves from this file, while a regular
    install in site-packages only finds the repo from the directory the user runs in.
    """
    starts = [start] if start is not None else [Path(__file__).resolve(), Path.cwd().resolve()]
    for origin in starts:
        for folder in [origin, *origin.parents]:
            if _is_repo_root(folder):
                return folder
    return None


def data_root() -> Path:
    """Return the data folder: ``$FFNET_DATA`` if set, else ``shared/data`` beside the repository root.

    The folder is not required to exist (callers such as tests use ``data_root().exists()`` to skip);
    :func:`data_path` is the checked accessor.
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    candidates: list[Path] = []
    for origin in (Path(__file__).resolve(), Path.cwd().resolve()):
        for folder in [origin, *origin.parents]:
            if _is_repo_root(folder):
                candidates.append(folder.parent / "shared" / "data")
                break
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    if candidates:
        return candidates[0]
    return Path.cwd().resolve().parent / "shared" / "data"


def data_path(*parts: str | os.PathLike[str], what: str = "") -> Path:
    """Return ``data_root()/parts...``, raising :class:`FFNetError` if it does not exist.

    ``what`` names the dataset in the message (e.g. ``"Set5 HR images"``), so the user knows what is missing
    and how to point the code at it instead of reading a bare ``FileNotFoundError``.
    """
    root = data_root()
    path = root.joinpath(*[os.fspath(p) for p in parts])
    if not path.exists():
        label = f"{what} " if what else ""
        source = f"${DATA_ENV_VAR}={os.environ[DATA_ENV_VAR]}" if os.environ.get(DATA_ENV_VAR) else "default location"
        raise FFNetError(
            f"{label}not found at {path} (data root {root}, from {source}); "
            f"put the data there or set {DATA_ENV_VAR} to the folder that contains it"
        )
    return path
