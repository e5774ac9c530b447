"""Scene loading, validation and the dataset classes (ScanNet v2, ScanNet200, S3DIS, generic folder, synthetic).

Preprocessed layout (Pointcept's, so existing preprocessed copies work as they are): one folder per scene with
``coord.npy [N,3] float``, ``color.npy [N,3] 0..255``, ``normal.npy [N,3]`` and a label array: ScanNet
``segment20.npy`` / ``segment200.npy`` (-1 = unlabelled), S3DIS ``segment.npy``. Splits are sub-folders:
``scannet/{train,val,test}/scene0000_00/``, ``s3dis/Area_{1..6}/office_1/``. A generic folder may also hold scene
files: ``.npy``/``.txt`` matrices with columns ``x y z [r g b] [nx ny nz] [label]``, ``.npz`` with the array names
above, or ``.ply`` point clouds (x y z, red green blue, nx ny nz, label/class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metamixer.train.errors import FFNetError

from .ply import read_ply
from .synthetic import SYNTH_CLASSES

__all__ = [
    "SCANNET20_CLASSES",
    "S3DIS_CLASSES",
    "DATASETS",
    "load_scene",
    "validate_scene",
    "SceneDataset",
    "list_scenes",
    "dataset_info",
]

SCANNET20_CLASSES = (
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "desk",
    "curtain",
    "refrigerator",
    "shower curtain",
    "toilet",
    "sink",
    "bathtub",
    "otherfurniture",
)
S3DIS_CLASSES = (
    "ceiling",
    "floor",
    "wall",
    "beam",
    "column",
    "window",
    "door",
    "table",
    "chair",
    "sofa",
    "bookcase",
    "board",
    "clutter",
)

#: dataset type -> (label array name, class names or count, default train/val splits)
DATASETS: dict[str, dict[str, Any]] = {
    "scannet": {"segment_key": "segment20", "classes": SCANNET20_CLASSES, "train": ["train"], "val": ["val"]},
    "scannet200": {"segment_key": "segment200", "classes": 200, "train": ["train"], "val": ["val"]},
    "s3dis": {
        "segment_key": "segment",
        "classes": S3DIS_CLASSES,
        "train": ["Area_1", "Area_2", "Area_3", "Area_4", "Area_6"],
        "val": ["Area_5"],
    },
    "folder": {"segment_key": "segment", "classes": None, "train": ["train"], "val": ["val"]},
    "synthetic": {"segment_key": "segment", "classes": SYNTH_CLASSES, "train": ["train"], "val": ["val"]},
}

_SCENE_FILE_SUFFIXES = (".npy", ".npz", ".ply", ".txt")


def dataset_info(kind: str) -> dict[str, Any]:
    if kind not in DATASETS:
        raise FFNetError(f"data.dataset: unknown dataset {kind!r}; expected one of {', '.join(DATASETS)}")
    info = dict(DATASETS[kind])
    classes = info["classes"]
    info["class_names"] = [f"class_{i:03d}" for i in range(classes)] if isinstance(classes, int) else classes
    return info


def _matrix_scene(m: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    if m.ndim != 2 or m.shape[1] < 3:
        raise FFNetError(
            f"{path}: expected a matrix with columns x y z [r g b] [nx ny nz] [label], got {m.shape}"
        )
    cols = m.shape[1]
    scene = {"coord": m[:, :3].astype(np.float32)}
    if cols in (6, 7, 9, 10):
        scene["color"] = m[:, 3:6].astype(np.float32)
    if cols in (9, 10):
        scene["normal"] = m[:, 6:9].astype(np.float32)
    if cols in (4, 7, 10):
        scene["segment"] = m[:, -1].astype(np.int64)
    if cols not in (3, 4, 6, 7, 9, 10):
        raise FFNetError(f"{path}: {cols} columns; expected 3/4 (xyz[,label]), 6/7 (+rgb), 9/10 (+normals)")
    return scene


def load_scene(path: str | Path, segment_key: str = "segment") -> dict[str, Any]:
    """Load one scene (folder of arrays or a single file) as a dict of numpy arrays with ``segment`` labels."""
    path = Path(path)
    if path.is_dir():
        scene: dict[str, Any] = {}
        for key in ("coord", "color", "normal", "instance"):
            f = path / f"{key}.npy"
            if f.exists():
                scene[key] = np.load(f)
        seg = path / f"{segment_key}.npy"
        if seg.exists():
            scene["segment"] = np.load(seg).astype(np.int64).reshape(-1)
        if "coord" not in scene:
            raise FFNetError(f"{path}: scene folder has no coord.npy")
    elif path.suffix == ".npz":
        with np.load(path) as z:
            scene = {k: z[k] for k in z.files if k in ("coord", "color", "normal", "instance")}
            if segment_key in z.files:
                scene["segment"] = z[segment_key].astype(np.int64).reshape(-1)
            elif "segment" in z.files:
                scene["segment"] = z["segment"].astype(np.int64).reshape(-1)
        if "coord" not in scene:
            raise FFNetError(f"{path}: .npz has no 'coord' array")
    elif path.suffix == ".npy":
        scene = _matrix_scene(np.load(path), path)
    elif path.suffix == ".txt":
        scene = _matrix_scene(np.loadtxt(path, ndmin=2), path)
    elif path.suffix == ".ply":
        v = read_ply(path).get("vertex")
        if v is None or not {"x", "y", "z"} <= set(v):
            raise FFNetError(f"{path}: PLY has no vertex x/y/z")
        scene = {"coord": np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)}
        if {"red", "green", "blue"} <= set(v):
            scene["color"] = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32)
        if {"nx", "ny", "nz"} <= set(v):
            scene["normal"] = np.stack([v["nx"], v["ny"], v["nz"]], 1).astype(np.float32)
        for key in ("label", "class", "segment", segment_key):
            if key in v:
                scene["segment"] = v[key].astype(np.int64)
    elif not path.exists():
        raise FFNetError(f"scene not found: {path}")
    else:
        raise FFNetError(
            f"{path}: unsupported scene file (expected a folder or {', '.join(_SCENE_FILE_SUFFIXES)})"
        )
    scene["name"] = path.stem if path.is_file() else path.name
    return scene


def validate_scene(
    scene: dict[str, Any],
    num_classes: int | None = None,
    ignore_index: int = -1,
    require_labels: bool = False,
) -> dict[str, Any]:
    """Check a scene before it reaches the model; raise FFNetError naming the scene and the problem."""
    name = scene.get("name", "?")
    coord = np.asarray(scene.get("coord"))
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise FFNetError(f"scene {name!r}: coord must be [N, 3], got shape {coord.shape}")
    n = coord.shape[0]
    if n == 0:
        raise FFNetError(f"scene {name!r} is empty (0 points)")
    finite = np.isfinite(coord).all(1)
    if not finite.all():
        raise FFNetError(
            f"scene {name!r}: {int((~finite).sum())} of {n} points have NaN/inf coordinates "
            f"(first at row {int(np.argmin(finite))})"
        )
    for key in ("color", "normal", "segment", "instance"):
        if key in scene and len(scene[key]) != n:
            raise FFNetError(
                f"scene {name!r}: {key} has {len(scene[key])} rows but coord has {n} (mismatched arrays)"
            )
    for key in ("color", "normal"):
        if key in scene:
            arr = np.asarray(scene[key])
            if arr.ndim != 2 or arr.shape[1] != 3:
                raise FFNetError(f"scene {name!r}: {key} must be [N, 3], got {arr.shape}")
            if not np.isfinite(arr).all():
                raise FFNetError(f"scene {name!r}: {key} contains NaN/inf")
    if "segment" in scene and num_classes is not None:
        seg = np.asarray(scene["segment"])
        bad = (seg != ignore_index) & ((seg < 0) | (seg >= num_classes))
        if bad.any():
            vals = np.unique(seg[bad])[:5].tolist()
            raise FFNetError(
                f"scene {name!r}: {int(bad.sum())} labels outside [0, {num_classes}) and not the ignore "
                f"index {ignore_index} (e.g. {vals}); check data.num_classes / the label mapping"
            )
    elif require_labels and "segment" not in scene:
        raise FFNetError(f"scene {name!r} has no labels (segment array) but evaluation needs them")
    scene["coord"] = coord.astype(np.float32)
    return scene


def list_scenes(root: Path, splits: Sequence[str]) -> list[Path]:
    """Scenes under ``root/<split>``: sub-folders with coord.npy (any depth) or scene files."""
    root = Path(root)
    scenes: list[Path] = []
    for split in splits:
        folder = root / split
        if not folder.is_dir():
            raise FFNetError(f"dataset split folder not found: {folder} (data.root={root}, split {split!r})")
        found = sorted({p.parent for p in folder.rglob("coord.npy")})
        found += sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _SCENE_FILE_SUFFIXES)
        scenes += found
    if not scenes:
        raise FFNetError(
            f"no scenes found under {root} for splits {list(splits)} (expected scene folders with "
            f"coord.npy or {', '.join(_SCENE_FILE_SUFFIXES)} files)"
        )
    return scenes


class SceneDataset:
    """Map-style dataset of scenes; ``__getitem__`` returns the transformed numpy dict (or fragment list).

    ``loop`` repeats the scene list within one epoch (Pointcept's ``loop``), useful with few large scenes.
    Scenes are validated on load, so a bad file fails with its name instead of deep inside the model.
    """

    def __init__(
        self,
        root: str | Path,
        splits: Sequence[str],
        segment_key: str = "segment",
        transform: Callable[[dict], Any] | None = None,
        num_classes: int | None = None,
        ignore_index: int = -1,
        loop: int = 1,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.paths = list_scenes(self.root, splits)
        self.segment_key = segment_key
        self.transform = transform
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.loop = max(1, int(loop))
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.paths) * self.loop

    def raw(self, index: int) -> dict[str, Any]:
        i = index % len(self.paths)
        if self._cache is not None and i in self._cache:
            return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._cache[i].items()}
        scene = validate_scene(
            load_scene(self.paths[i], self.segment_key), self.num_classes, self.ignore_index
        )
        if self._cache is not None:
            self._cache[i] = scene
            return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in scene.items()}
        return scene

    def __getitem__(self, index: int) -> Any:
        scene = self.raw(index)
        return self.transform(scene) if self.transform is not None else scene
