"""Refuse to train on an SR evaluation set (Set5, Set14, B100, Urban100, Manga109).

Why: a model trained on the images it is scored on reports numbers that say nothing about super-resolution, and
nothing in the numbers themselves shows it. The usual way this happens is a path slip (``train_dirs: [sr/B100/HR]``
because the folder was at hand), so every training run checks its folders before anything else, three ways:

1. **path** — the folder is, or is inside, a benchmark folder the app knows: ``<data root>/sr/<set>`` for every
   set name, and any evaluation folder of the same config (``data.val_sets``, ``eval.sets``); compared after
   resolving symlinks, so a link to a benchmark folder is caught too;
2. **name** — a component of the folder's path is a benchmark's name (``Set5``, ``Set14``, ``B100`` / ``BSD100``,
   ``Urban100``, ``Manga109``; case-insensitive, also as a prefix such as ``Urban100_HR``);
3. **content** — an image in the folder has the decoded pixels of a Set5 / Set14 / B100 HR image (sha256 of the
   pixels, so a renamed copy or a re-encoded lossless copy is caught; only images whose size matches a benchmark
   image are decoded, so a DIV2K folder costs one header read per file).

``data.allow_benchmark_training: true`` lets such a run go ahead (the finding is then written to the run log).
The pixel fingerprints (:data:`FINGERPRINTS_FILE`) are written from the benchmark copies by
``python -m ffnet_sr.data.benchmark_guard --write``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from metamixer.train.errors import FFNetError
from metamixer.train.images import image_size

from .io import list_images, read_rgb_or_grey

__all__ = [
    "BENCHMARK_SETS",
    "FINGERPRINTS_FILE",
    "benchmark_by_name",
    "benchmark_by_path",
    "benchmark_by_content",
    "find_benchmark",
    "check_training_dirs",
    "pixel_fingerprint",
]

#: the evaluation sets of the SR literature (the paper's table); none of them may be trained on
BENCHMARK_SETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")

# a path component naming a set: the name (or an alias), then the end or a non-alphanumeric character
# ("Set5", "set14_HR", "Urban100-x2"); BSDS300 / BSDS500 / BSD200 are not matched: they hold training images too
_NAME = re.compile(r"^(set5|set14|b100|bsd100|bsds100|urban100|manga109)(?![0-9a-z])", re.IGNORECASE)
_CANONICAL = {"set5": "Set5", "set14": "Set14", "b100": "B100", "bsd100": "B100", "bsds100": "B100",
              "urban100": "Urban100", "manga109": "Manga109"}

#: ``{"<w>x<h>": {"<sha256 of the pixels>": "<set>/<image>"}}`` of the Set5, Set14 and B100 HR images
FINGERPRINTS_FILE = Path(__file__).with_name("benchmark_fingerprints.json")

_ALLOW_HINT = ("train on a training set (T91, DIV2K, DF2K) or, if this is deliberate, set "
               "data.allow_benchmark_training=true")


def pixel_fingerprint(pixels: np.ndarray) -> str:
    """sha256 of the decoded pixels and their shape: the same for any lossless copy, whatever its name or format."""
    arr = np.ascontiguousarray(pixels)
    return hashlib.sha256(f"{arr.dtype}{arr.shape}".encode() + arr.tobytes()).hexdigest()


def benchmark_by_name(folder: str | Path) -> str | None:
    """The benchmark a component of ``folder`` (as given, and resolved) names, or None."""
    p = Path(folder).expanduser()
    for part in (*p.parts, *p.resolve().parts):
        m = _NAME.match(part)
        if m:
            return _CANONICAL[m.group(1).lower()]
    return None


def _known_folders(extra: Iterable[str | Path] = ()) -> list[tuple[str, Path]]:
    """Benchmark folders the app knows: ``<data root>/sr/<set>`` (where they exist) and the given eval folders."""
    from metamixer.train.datadir import data_root

    known = [(name, data_root() / "sr" / name) for name in BENCHMARK_SETS]
    for e in extra:
        if e and Path(e).expanduser().is_dir():
            known.append((Path(e).name, Path(e).expanduser()))
        elif e and (data_root() / "sr" / str(e)).is_dir():
            known.append((str(e), data_root() / "sr" / str(e)))
    return [(name, p.resolve()) for name, p in known if p.is_dir()]


def benchmark_by_path(folder: str | Path, eval_folders: Iterable[str | Path] = ()) -> tuple[str, Path] | None:
    """``(set, benchmark folder)`` when ``folder`` is or lies inside a known benchmark folder, else None."""
    resolved = Path(folder).expanduser().resolve()
    for name, bench in _known_folders(eval_folders):
        if resolved == bench or resolved.is_relative_to(bench):
            return name, bench
    return None


@lru_cache(maxsize=1)
def _fingerprints() -> dict[str, dict[str, str]]:
    try:
        return json.loads(FINGERPRINTS_FILE.read_text())
    except FileNotFoundError:  # a build without the data file: path and name checks still run
        return {}


def benchmark_by_content(files: Iterable[Path]) -> tuple[Path, str] | None:
    """``(file, "<set>/<image>")`` for the first file whose pixels are a known benchmark HR image, else None."""
    table = _fingerprints()
    for f in files:
        w, h = image_size(f)
        same_size = table.get(f"{w}x{h}")
        if same_size:
            hit = same_size.get(pixel_fingerprint(read_rgb_or_grey(f)))
            if hit:
                return f, hit
    return None


def find_benchmark(folder: str | Path, eval_folders: Iterable[str | Path] = ()) -> str | None:
    """Why ``folder`` is an evaluation set (a short phrase naming the set), or None when it is not one."""
    by_path = benchmark_by_path(folder, eval_folders)
    if by_path is not None:
        return f"the {by_path[0]} benchmark (it is inside {by_path[1]})"
    name = benchmark_by_name(folder)
    if name is not None:
        return f"the {name} benchmark (its path names it)"
    files = list_images(Path(folder)) if Path(folder).is_dir() else []
    hit = benchmark_by_content(files)
    if hit is not None:
        return f"a copy of the {hit[1].split('/')[0]} benchmark ({hit[0].name} has the pixels of {hit[1]})"
    return None


def check_training_dirs(
    folders: Sequence[str | Path], allow: bool = False, eval_folders: Iterable[str | Path] = ()
) -> list[str]:
    """Raise (one line naming the folder) when a training folder is an evaluation set, unless ``allow``; returns
    the findings (empty for a clean run) so that an allowed run can log them."""
    eval_folders = list(eval_folders)
    findings = []
    for folder in folders:
        why = find_benchmark(folder, eval_folders)
        if why is None:
            continue
        if not allow:
            raise FFNetError(f"data.train_dirs: {folder} is {why}; training on an evaluation set makes its scores "
                             f"meaningless: {_ALLOW_HINT}")
        findings.append(f"{folder} is {why} (data.allow_benchmark_training=true)")
    return findings


def write_fingerprints(sets: Sequence[str | Path], out: Path = FINGERPRINTS_FILE) -> int:
    """Fingerprint every HR image of ``sets`` (names under ``<data root>/sr`` or folders) into ``out``."""
    from .dataset import resolve_set_dir

    table: dict[str, dict[str, str]] = {}
    count = 0
    for s in sets:
        set_dir = resolve_set_dir(s)
        hr_dir = set_dir / "HR" if (set_dir / "HR").is_dir() else set_dir
        for f in list_images(hr_dir):
            w, h = image_size(f)
            table.setdefault(f"{w}x{h}", {})[pixel_fingerprint(read_rgb_or_grey(f))] = f"{set_dir.name}/{f.stem}"
            count += 1
    out.write_text(json.dumps(dict(sorted(table.items())), indent=0, sort_keys=True) + "\n")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write the benchmark pixel fingerprints the training guard checks.")
    p.add_argument("--write", action="store_true", help=f"(re)write {FINGERPRINTS_FILE.name}")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    args = p.parse_args(argv)
    if not args.write:
        p.error("nothing to do: pass --write")
    print(f"{write_fingerprints(args.sets)} images -> {FINGERPRINTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
