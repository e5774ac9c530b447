"""Scene loading, validation and the dataset classes (ScanNet v2, ScanNet200, S3DIS, SemanticKITTI, generic folder,
synthetic).

Preprocessed layout (Pointcept's, so existing preprocessed copies work as they are): one folder per scene with
``coord.npy [N,3] float``, ``color.npy [N,3] 0..255``, ``normal.npy [N,3]`` and a label array: ScanNet
``segment20.npy`` / ``segment200.npy`` (-1 = unlabelled), S3DIS ``segment.npy``. Splits are sub-folders:
``scannet/{train,val,test}/scene0000_00/``, ``s3dis/Area_{1..6}/office_1/``. A generic folder may also hold scene
files: ``.npy``/``.txt`` matrices with columns ``x y z [r g b] [nx ny nz] [label]``, ``.npz`` with the array names
above, or ``.ply`` point clouds (x y z, red green blue, nx ny nz, label/class). SemanticKITTI is read in its
release layout (``sequences/SS/velodyne/*.bin`` + ``labels/*.label``, :mod:`.semantic_kitti`).
"""

from __future__ import annotations

import pickle
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metamixer.train.errors import FFNetError

from .ply import read_ply
from .scannet_classes import SCANNET200_CLASSES
from .semantic_kitti import SEMANTIC_KITTI_CLASSES, list_scans, load_scan
from .synthetic import SYNTH_CLASSES

__all__ = [
    "SCANNET20_CLASSES",
    "S3DIS_CLASSES",
    "DATASETS",
    "load_scene",
    "validate_scene",
    "SceneDataset",
    "SemanticKittiDataset",
    "list_scenes",
    "dataset_info",
    "load_array",
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
    "scannet200": {"segment_key": "segment200", "classes": SCANNET200_CLASSES, "train": ["train"], "val": ["val"]},
    "s3dis": {
        "segment_key": "segment",
        "classes": S3DIS_CLASSES,
        "train": ["Area_1", "Area_2", "Area_3", "Area_4", "Area_6"],
        "val": ["Area_5"],
    },
    # splits: the label YAML's (train 00-07,09,10 / valid 08 / test 11-21) or sequence numbers ("08")
    "semantickitti": {"segment_key": "segment", "classes": SEMANTIC_KITTI_CLASSES, "train": ["train"],
                      "val": ["val"]},
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


# what a damaged .npy/.npz/.txt raises inside numpy: a truncated file, a text file under an array's name, an
# object array (never unpickled), a zip that is no .npz, a corrupt member
_ARRAY_ERRORS = (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError, KeyError)


def load_array(path: Path) -> np.ndarray:
    """``np.load`` of one .npy array without pickles; a damaged file is one FFNetError naming it, not numpy's
    traceback (a truncated download, an empty or text file named .npy, an object array)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except FileNotFoundError:
        raise FFNetError(f"{path}: file not found") from None
    except OSError as e:
        raise FFNetError(f"{path}: cannot read ({e.strerror or e})") from None
    if not magic:
        raise FFNetError(f"{path}: empty file (0 bytes); expected a .npy array written by numpy.save")
    if magic != b"\x93NUMPY":
        raise FFNetError(f"{path}: not a .npy file (it starts with {magic!r}, not the .npy magic "
                         "b'\\x93NUMPY'); expected an array written by numpy.save")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise FFNetError(f"{path}: holds a pickled object array, which is never loaded (unpickling can run "
                             "code); expected a numeric array (numpy.save of a float/int array)") from None
        raise FFNetError(f"{path}: truncated or damaged .npy array ({_reason(e)}); expected a complete file "
                         "written by numpy.save") from None
    except _ARRAY_ERRORS as e:
        raise FFNetError(f"{path}: truncated or damaged .npy array ({_reason(e)}); expected a complete file "
                         "written by numpy.save") from None


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


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
        scene["segment"] = _labels(m[:, -1], path)
    if cols not in (3, 4, 6, 7, 9, 10):
        raise FFNetError(f"{path}: {cols} columns; expected 3/4 (xyz[,label]), 6/7 (+rgb), 9/10 (+normals)")
    return scene


def _load_text(path: Path) -> np.ndarray:
    """A whitespace-separated number matrix; words, ragged rows or an unreadable file name the file."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "loadtxt: input contained no data", UserWarning)
            return np.loadtxt(path, ndmin=2)
    except (ValueError, UnicodeDecodeError) as e:
        raise FFNetError(f"{path}: not a text matrix of numbers ({_reason(e)}); expected rows "
                         "'x y z [r g b] [nx ny nz] [label]'") from None


def _labels(values: np.ndarray, path: Path) -> np.ndarray:
    """Per-point class ids as int64; fractional or NaN ids would be silently truncated by a plain cast."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind not in "iuf":
        raise FFNetError(f"{path}: labels must be integers, got dtype {values.dtype}")
    if values.dtype.kind == "f" and not (np.isfinite(values).all() and (values == np.round(values)).all()):
        raise FFNetError(f"{path}: labels must be whole class ids, found NaN/inf or fractional values")
    return values.astype(np.int64)


def load_scene(path: str | Path, segment_key: str = "segment") -> dict[str, Any]:
    """Load one scene (folder of arrays or a single file) as a dict of numpy arrays with ``segment`` labels."""
    path = Path(path)
    if path.is_dir():
        scene: dict[str, Any] = {}
        for key in ("coord", "color", "normal", "instance"):
            f = path / f"{key}.npy"
            if f.exists():
                scene[key] = load_array(f)
        seg = path / f"{segment_key}.npy"
        if seg.exists():
            scene["segment"] = _labels(load_array(seg), seg)
        if "coord" not in scene:
            raise FFNetError(f"{path}: scene folder has no coord.npy")
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                scene = {k: z[k] for k in z.files if k in ("coord", "color", "normal", "instance")}
                key = segment_key if segment_key in z.files else "segment"
                if key in z.files:
                    scene["segment"] = _labels(z[key], path)
        except _ARRAY_ERRORS as e:
            raise FFNetError(f"{path}: not a readable .npz archive ({_reason(e)}); expected arrays written by "
                             "numpy.savez (coord, color, normal, segment)") from None
        if "coord" not in scene:
            raise FFNetError(f"{path}: .npz has no 'coord' array")
    elif path.suffix == ".npy":
        scene = _matrix_scene(load_array(path), path)
    elif path.suffix == ".txt":
        scene = _matrix_scene(_load_text(path), path)
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
                scene["segment"] = _labels(v[key], path)
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
    source: str | Path | None = None,
) -> dict[str, Any]:
    """Check a scene before it reaches the model; raise FFNetError naming the scene (``source``: its file or
    folder, which is what the user has to find and fix) and the problem."""
    label = str(source) if source is not None else f"scene {scene.get('name', '?')!r}"
    coord = np.asarray(scene.get("coord"))
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise FFNetError(f"{label}: coord must be [N, 3], got shape {coord.shape}")
    n = coord.shape[0]
    if n == 0:
        raise FFNetError(f"{label}: the scene is empty (0 points)")
    finite = np.isfinite(coord).all(1)
    if not finite.all():
        raise FFNetError(
            f"{label}: {int((~finite).sum())} of {n} points have NaN/inf coordinates "
            f"(first at row {int(np.argmin(finite))})"
        )
    for key in ("color", "normal", "segment", "instance"):
        if key in scene and len(scene[key]) != n:
            raise FFNetError(
                f"{label}: {key} has {len(scene[key])} rows but coord has {n} (mismatched arrays)"
            )
    for key in ("color", "normal"):
        if key in scene:
            arr = np.asarray(scene[key])
            if arr.ndim != 2 or arr.shape[1] != 3:
                raise FFNetError(f"{label}: {key} must be [N, 3], got {arr.shape}")
            if not np.isfinite(arr).all():
                raise FFNetError(f"{label}: {key} contains NaN/inf")
    if "segment" in scene and num_classes is not None:
        seg = np.asarray(scene["segment"])
        bad = (seg != ignore_index) & ((seg < 0) | (seg >= num_classes))
        if bad.any():
            vals = np.unique(seg[bad])[:5].tolist()
            raise FFNetError(
                f"{label}: {int(bad.sum())} labels outside [0, {num_classes}) and not the ignore "
                f"index {ignore_index} (e.g. {vals}); check data.num_classes / the label mapping"
            )
    elif require_labels and "segment" not in scene:
        raise FFNetError(f"{label}: the scene has no labels (segment array) but evaluation needs them")
    scene["coord"] = coord.astype(np.float32)
    return scene


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def list_scenes(root: Path, splits: Sequence[str]) -> list[Path]:
    """Scenes under ``root/<split>``: sub-folders with coord.npy (any depth) or scene files."""
    root = Path(root)
    scenes: list[Path] = []
    for split in splits:
        folder = root / split
        if not folder.is_dir():
            raise FFNetError(f"dataset split folder not found: {folder} (data.root={root}, split {split!r})")
        # hidden entries are skipped: they are temporaries of an interrupted writer (.name.tmp-PID), not scenes
        found = sorted({p.parent for p in folder.rglob("coord.npy") if not _hidden(p.relative_to(folder))})
        found += sorted(p for p in folder.iterdir()
                        if p.is_file() and p.suffix in _SCENE_FILE_SUFFIXES and not p.name.startswith("."))
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
        self.paths = self.find(self.root, splits)
        self.segment_key = segment_key
        self.transform = transform
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.loop = max(1, int(loop))
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.paths) * self.loop

    def find(self, root: Path, splits: Sequence[str]) -> list[Path]:
        """The scene paths of ``splits`` (a subclass reads another layout)."""
        return list_scenes(root, splits)

    def load(self, path: Path) -> dict[str, Any]:
        """One scene as a dict of arrays, before validation."""
        return load_scene(path, self.segment_key)

    def raw(self, index: int) -> dict[str, Any]:
        i = index % len(self.paths)
        if self._cache is not None and i in self._cache:
            return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._cache[i].items()}
        scene = validate_scene(self.load(self.paths[i]), self.num_classes, self.ignore_index, source=self.paths[i])
        if self._cache is not None:
            self._cache[i] = scene
            return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in scene.items()}
        return scene

    def __getitem__(self, index: int) -> Any:
        scene = self.raw(index)
        return self.transform(scene) if self.transform is not None else scene


class SemanticKittiDataset(SceneDataset):
    """SemanticKITTI scans of the splits' sequences (``train`` / ``val`` / ``test`` as the label YAML defines
    them, or sequence numbers); sequences absent on disk are skipped with one ``log`` line. Scans without a
    ``labels/`` file (the test sequences) load without ``segment``, for prediction."""

    def __init__(self, root: str | Path, splits: Sequence[str], transform: Callable[[dict], Any] | None = None,
                 num_classes: int | None = None, ignore_index: int = -1, loop: int = 1, cache: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self._log = log
        super().__init__(root, splits, "segment", transform, num_classes, ignore_index, loop, cache)

    def find(self, root: Path, splits: Sequence[str]) -> list[Path]:
        return list_scans(root, splits, self._log)

    def load(self, path: Path) -> dict[str, Any]:
        return load_scan(path)  # the label YAML is read (cached) from the dataset root when labels exist
