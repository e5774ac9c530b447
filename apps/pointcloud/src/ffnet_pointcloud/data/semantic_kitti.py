"""SemanticKITTI: velodyne scans, ``.label`` files, the official label YAML, the split, and prediction files.

Layout (the official release, read in place: no preprocessing step)::

    ROOT/semantic-kitti.yaml                      labels, color_map (BGR), learning_map(_inv), split
    ROOT/sequences/SS/velodyne/FFFFFF.bin         float32 x y z remission per point (16 bytes)
    ROOT/sequences/SS/labels/FFFFFF.label         uint32 per point: lower 16 bits raw semantic id, upper instance
    OUT/sequences/SS/predictions/FFFFFF.label     what :func:`write_prediction` writes (the semantic-kitti-api's
                                                  evaluate_semantics.py reads exactly this layout)

Train ids: the YAML's ``learning_map`` sends the 34 raw ids to 0..19 where 0 is "unlabeled" (also outliers and
the classes merged away); the network's classes are train ids 1..19 shifted to 0..18 and train id 0 becomes
the ignore index -1, so the loss and metrics need no special case. Why the YAML is read and never hard-coded:
it is the benchmark's definition (merges, moving classes, the inverse map a submission must use), and a copy
in code would silently drift from the file the evaluation server uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from metamixer.train.atomic import atomic_write
from metamixer.train.errors import FFNetError

__all__ = [
    "YAML_NAME",
    "SEMANTIC_KITTI_CLASSES",
    "KittiLabels",
    "read_labels_yaml",
    "dataset_root",
    "label_path",
    "load_scan",
    "read_label_file",
    "raw_to_train",
    "train_to_raw",
    "write_prediction",
    "prediction_path",
    "sequence_ids",
    "list_scans",
]

YAML_NAME = "semantic-kitti.yaml"
#: the 19 evaluated classes in train-id order (train id t = index t-1); equal to the official YAML's names
SEMANTIC_KITTI_CLASSES = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
    "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
    "traffic-sign",
)
_SPLIT_NAMES = {"train": "train", "val": "valid", "valid": "valid", "test": "test"}
_UNKNOWN = -2  # raw-id table entry of an id that learning_map does not list


@dataclass(frozen=True)
class KittiLabels:
    """What the label YAML defines, as arrays: ``lut[raw]`` = network class (0..18, -1 ignore, -2 unknown),
    ``inverse[c]`` = raw id of network class c, ``colors[c]`` = RGB of class c (``ignore_color`` for -1)."""

    path: Path
    lut: np.ndarray
    inverse: np.ndarray
    names: tuple[str, ...]
    colors: np.ndarray
    ignore_color: np.ndarray
    split: dict[str, tuple[int, ...]]

    @property
    def num_classes(self) -> int:
        return len(self.names)


def _int_map(doc: dict, key: str, path: Path) -> dict[int, int]:
    value = doc.get(key)
    if not isinstance(value, dict) or not value:
        raise FFNetError(f"{path}: no '{key}' mapping; expected the official SemanticKITTI label file")
    try:
        return {int(k): int(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise FFNetError(f"{path}: '{key}' must map integers to integers") from None


@lru_cache(maxsize=8)
def _read_yaml_cached(path: str, mtime_ns: int) -> KittiLabels:
    import yaml

    file = Path(path)
    try:
        doc = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FFNetError(f"{file}: not a readable YAML label file ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise FFNetError(f"{file}: expected a mapping with labels, color_map, learning_map, learning_map_inv")
    learning, inverse = _int_map(doc, "learning_map", file), _int_map(doc, "learning_map_inv", file)
    names_raw = doc.get("labels") or {}
    colors_bgr = doc.get("color_map") or {}
    count = max(learning.values())
    if sorted(inverse) != list(range(count + 1)):
        raise FFNetError(f"{file}: learning_map_inv must list train ids 0..{count} (learning_map's range)")
    if not all(0 <= raw < 2**16 for raw in learning):
        raise FFNetError(f"{file}: learning_map keys must be 16-bit raw semantic ids")
    lut = np.full(2**16, _UNKNOWN, dtype=np.int64)
    for raw, train in learning.items():
        lut[raw] = train - 1  # train id 0 (unlabeled) -> -1 (ignore)
    inv = np.array([inverse[t] for t in range(1, count + 1)], dtype=np.uint32)
    names = tuple(str(names_raw.get(int(r), f"class_{t}")) for t, r in enumerate(inv, 1))
    colors = np.array([colors_bgr.get(int(r), [128, 128, 128])[::-1] for r in inv], dtype=np.uint8)
    ignore = np.array(colors_bgr.get(inverse[0], [0, 0, 0])[::-1], dtype=np.uint8)
    split_doc = doc.get("split") or {}
    split = {name: tuple(int(s) for s in (split_doc.get(name) or ())) for name in ("train", "valid", "test")}
    return KittiLabels(file, lut, inv, names, colors, ignore, split)


def read_labels_yaml(root_or_file: str | os.PathLike[str]) -> KittiLabels:
    """The label YAML of a dataset root (``ROOT/semantic-kitti.yaml``) or the file itself; cached per file
    version, since every scan of a run maps through the same table."""
    path = Path(root_or_file)
    file = path / YAML_NAME if path.is_dir() or path.suffix not in (".yaml", ".yml") else path
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise FFNetError(f"{file}: SemanticKITTI label file not found; it belongs at the dataset root (copy "
                         "config/semantic-kitti.yaml of the semantic-kitti-api there)") from None
    return _read_yaml_cached(str(file.resolve()), stat.st_mtime_ns)


def dataset_root(bin_path: str | os.PathLike[str]) -> Path:
    """``ROOT`` of ``ROOT/sequences/SS/velodyne/FFFFFF.bin``."""
    path = Path(bin_path)
    if len(path.parts) < 4 or path.parent.name != "velodyne" or path.parents[2].name != "sequences":
        raise FFNetError(f"{path}: not in the SemanticKITTI layout ROOT/sequences/SS/velodyne/FFFFFF.bin")
    return path.parents[3]


def label_path(bin_path: str | os.PathLike[str]) -> Path:
    """The ground-truth file of a scan: ``sequences/SS/labels/FFFFFF.label`` beside ``velodyne/``."""
    path = Path(bin_path)
    return path.parent.parent / "labels" / f"{path.stem}.label"


def _read_points(path: Path) -> np.ndarray:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FFNetError(f"{path}: scan not found") from None
    if len(raw) % 16:
        raise FFNetError(f"{path}: {len(raw)} bytes is not a multiple of 16 (float32 x y z remission per "
                         "point): truncated or not a velodyne scan")
    return np.frombuffer(raw, dtype="<f4").reshape(-1, 4)


def read_label_file(path: str | os.PathLike[str], points: int | None = None) -> np.ndarray:
    """uint32 per point; ``points``: the scan's point count, which the file must match."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FFNetError(f"{path}: label file not found") from None
    if len(raw) % 4:
        raise FFNetError(f"{path}: {len(raw)} bytes is not a multiple of 4 (one uint32 per point): truncated")
    labels = np.frombuffer(raw, dtype="<u4")
    if points is not None and len(labels) != points:
        raise FFNetError(f"{path}: {len(labels)} labels but its scan has {points} points (label file of "
                         "another scan, or truncated)")
    return labels


def raw_to_train(semantic: np.ndarray, meta: KittiLabels, source: str | os.PathLike[str] = "labels") -> np.ndarray:
    """Raw semantic ids (lower 16 bits) -> network classes 0..18 / -1; an id the YAML lacks names the file."""
    classes = meta.lut[np.asarray(semantic, dtype=np.int64) & 0xFFFF]
    unknown = classes == _UNKNOWN
    if unknown.any():
        ids = np.unique(np.asarray(semantic)[unknown] & 0xFFFF)[:8].tolist()
        raise FFNetError(f"{source}: {int(unknown.sum())} points have raw semantic ids {ids} that the "
                         f"learning_map of {meta.path} does not list (labels of another label set?)")
    return classes


def train_to_raw(classes: np.ndarray, meta: KittiLabels) -> np.ndarray:
    """Network classes 0..18 -> raw ids through ``learning_map_inv`` (uint32); -1 -> ``learning_map_inv[0]``."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.size and (classes.min() < -1 or classes.max() >= meta.num_classes):
        raise ValueError(f"class ids must lie in [-1, {meta.num_classes}), got {classes.min()}..{classes.max()}")
    table = np.concatenate([[0], meta.inverse]).astype(np.uint32)
    return table[classes + 1]


def load_scan(bin_path: str | os.PathLike[str], meta: KittiLabels | None = None) -> dict[str, Any]:
    """One scan as the app's scene dict: ``coord`` [N,3] float32, ``strength`` [N,1] float32 (remission) and,
    where ``labels/FFFFFF.label`` exists, ``segment`` [N] int64 (0..18, -1 ignore) and ``instance`` [N] int64.
    ``meta``: the label YAML (default: read from the dataset root above the scan)."""
    path = Path(bin_path)
    points = _read_points(path)
    scan: dict[str, Any] = {
        "coord": np.ascontiguousarray(points[:, :3], dtype=np.float32),
        "strength": np.ascontiguousarray(points[:, 3:4], dtype=np.float32),
        "name": f"{path.parent.parent.name}_{path.stem}",
    }
    labels_file = label_path(path)
    if labels_file.is_file():
        meta = meta if meta is not None else read_labels_yaml(dataset_root(path))
        label = read_label_file(labels_file, len(points))
        scan["segment"] = raw_to_train(label & 0xFFFF, meta, labels_file)
        scan["instance"] = (label >> 16).astype(np.int64)
    return scan


def prediction_path(output: str | os.PathLike[str], bin_path: str | os.PathLike[str]) -> Path:
    """``OUT/sequences/SS/predictions/FFFFFF.label`` for the scan ``.../sequences/SS/velodyne/FFFFFF.bin``."""
    path = Path(bin_path)
    return Path(output) / "sequences" / path.parent.parent.name / "predictions" / f"{path.stem}.label"


def write_prediction(path: str | os.PathLike[str], classes: np.ndarray, meta: KittiLabels) -> Path:
    """Write network classes as a SemanticKITTI ``.label`` (raw ids, instance 0), atomically: a run stopped
    mid-write never leaves a short file that the evaluation script would reject or mis-score."""
    raw = train_to_raw(classes, meta).astype("<u4")
    return atomic_write(path, lambda handle: handle.write(raw.tobytes()))


def sequence_ids(splits: Sequence[str | int], meta: KittiLabels | None) -> list[str]:
    """Split names (``train``, ``val``/``valid``, ``test``: the YAML's lists) or sequence numbers -> "SS"."""
    out: list[str] = []
    for split in splits:
        text = str(split).strip()
        if text in _SPLIT_NAMES:
            if meta is None:
                raise FFNetError(f"split {text!r} needs the label YAML ({YAML_NAME}) at the dataset root")
            seqs = meta.split.get(_SPLIT_NAMES[text], ())
            if not seqs:
                raise FFNetError(f"{meta.path}: split '{_SPLIT_NAMES[text]}' lists no sequences")
            out += [f"{s:02d}" for s in seqs]
        elif text.isdigit():
            out.append(f"{int(text):02d}")
        else:
            raise FFNetError(f"SemanticKITTI split {text!r}: expected train, val, test or a sequence number")
    return list(dict.fromkeys(out))


def list_scans(root: str | os.PathLike[str], splits: Sequence[str | int],
               log: Callable[[str], None] | None = None) -> list[Path]:
    """Every ``ROOT/sequences/SS/velodyne/*.bin`` of the splits' sequences, sorted. Sequences missing on disk
    are skipped (one ``log`` line names them: a partial download is normal); no scan at all is an error."""
    root = Path(root)
    meta = read_labels_yaml(root) if any(str(s).strip() in _SPLIT_NAMES for s in splits) else None
    sequences = sequence_ids(splits, meta)
    base = root / "sequences"
    scans: list[Path] = []
    missing: list[str] = []
    for seq in sequences:
        folder = base / seq / "velodyne"
        if not folder.is_dir():
            missing.append(seq)
            continue
        scans += sorted(p for p in folder.glob("*.bin") if not p.name.startswith("."))
    if missing and log is not None:
        log(f"SemanticKITTI {root}: sequences {', '.join(missing)} of {list(splits)} not on disk, skipped")
    if not scans:
        raise FFNetError(f"{base}: no scans for splits {list(splits)} (looked for {', '.join(sequences)}"
                         "/velodyne/*.bin)")
    return scans
