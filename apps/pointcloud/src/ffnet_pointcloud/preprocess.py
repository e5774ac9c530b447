"""Raw dataset releases -> the preprocessed per-scene layout read by the loaders.

``ffnet-pc-preprocess scannet --input ScanNet/scans --output data/scannet --split train [--scenes LIST.txt]
[--labels-tsv scannetv2-labels.combined.tsv]``
    reads ``<scene>/<scene>_vh_clean_2.ply`` (mesh: vertices + faces) and ``<scene>_vh_clean_2.labels.ply``
    (NYU40 ids per vertex), writes ``<output>/<split>/<scene>/{coord,color,normal,segment20}.npy``. Vertex normals
    are area-weighted face normals of the mesh; NYU40 ids outside the 20 benchmark classes become -1 (ignored).
    With the label table ``scannetv2-labels.combined.tsv`` (``--labels-tsv``, or found in ``--input`` or the
    folder above it) it also writes ``segment200.npy`` (ScanNet200) from the raw annotations: every object of
    ``<scene>.aggregation.json`` names its raw category and its over-segments, ``<scene>_vh_clean_2.0.010000.segs.json``
    gives each vertex's over-segment, the table's ``id`` column gives the category's id, and ids outside the 200
    benchmark classes (and vertices in no object) become -1. Test scenes (neither JSON file) get no labels.
``ffnet-pc-preprocess s3dis --input Stanford3dDataset_v1.2 --output data/s3dis [--areas Area_5 ...]``
    reads ``Area_k/<room>/Annotations/<class>_<i>.txt`` (x y z r g b), writes
    ``<output>/Area_k/<room>/{coord,color,normal,segment}.npy``; normals are estimated by PCA over 16 neighbours
    and oriented towards the room centre; unknown classes (``stairs``) map to ``clutter`` as usual.

A bad scene (truncated or non-PLY mesh, label file of another length, NaN coordinates, unreadable annotation) is
named on its own ``error:`` line and the run goes on; the summary lists every failed scene and the exit code is 1
(everything else was written). Each output scene is written into a hidden temporary folder and renamed into
place, so a failed or interrupted scene never leaves a half-written folder that a loader would pick up.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from metamixer.train.cli import OverrideParser
from metamixer.train.errors import FFNetError, for_each_input, run_cli

from .data.datasets import S3DIS_CLASSES
from .data.ply import read_ply
from .data.scannet_classes import SCANNET20_IDS, SCANNET200_IDS, ids_to_classes

__all__ = [
    "SCANNET20_NYU40_IDS",
    "LABELS_TSV",
    "read_label_table",
    "find_label_table",
    "scannet200_segment",
    "preprocess_scannet_scene",
    "preprocess_s3dis_room",
    "mesh_vertex_normals",
    "estimate_normals",
    "write_scene_atomic",
    "pid_alive",
    "main",
    "cli",
]

#: NYU40 ids of the 20 ScanNet benchmark classes, in class-index order (wall ... otherfurniture)
SCANNET20_NYU40_IDS = SCANNET20_IDS
#: the ScanNet release's label table (raw category -> ids), needed for ScanNet200 labels
LABELS_TSV = "scannetv2-labels.combined.tsv"
#: per-scene annotation files of the ScanNet release (over-segmentation, objects with their raw category)
SEGS_SUFFIX = "_vh_clean_2.0.010000.segs.json"
AGGREGATION_SUFFIX = ".aggregation.json"


def mesh_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals of a triangle mesh (unit length; zero for isolated vertices)."""
    v = vertices.astype(np.float64)
    f = np.asarray(faces, dtype=np.int64)
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, f[:, k], face_n)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(norm, 1e-12)).astype(np.float32)


def estimate_normals(coord: np.ndarray, k: int = 16) -> np.ndarray:
    """PCA normals (smallest-eigenvalue direction of the k-neighbourhood), oriented towards the centroid."""
    from scipy.spatial import cKDTree

    k = min(k, len(coord))
    _, idx = cKDTree(coord).query(coord, k=k)
    idx = idx.reshape(len(coord), -1)
    nb = coord[idx].astype(np.float64)
    nb = nb - nb.mean(1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb)
    _, vecs = np.linalg.eigh(cov)
    normals = vecs[:, :, 0]
    towards = coord.mean(0) - coord
    flip = (normals * towards).sum(1) < 0
    normals[flip] *= -1
    return normals.astype(np.float32)


def _vertex_array(v: dict, names: Sequence[str], path: Path) -> np.ndarray:
    missing = [n for n in names if n not in v]
    if missing:
        raise FFNetError(f"{path}: PLY vertices lack {missing}")
    return np.stack([v[n] for n in names], 1)


def _check_points(coord: np.ndarray, path: Path) -> None:
    """A scene the loaders would refuse is refused here, naming the raw file (not the output folder)."""
    if len(coord) == 0:
        raise FFNetError(f"{path}: 0 points; expected a non-empty scene")
    finite = np.isfinite(coord).all(1)
    if not finite.all():
        raise FFNetError(f"{path}: {int((~finite).sum())} of {len(coord)} points have NaN/inf coordinates "
                         f"(first at row {int(np.argmin(finite))}); expected finite x y z")


#: infix of the hidden folder a scene is written into before it is renamed into place
_TMP = ".tmp-"
#: infix of the previous version of a scene while the new one is renamed into place
_OLD = ".old-"


def pid_alive(pid: str) -> bool:
    """Whether process ``pid`` still runs (its temporaries must then be left alone)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Clean up after a run killed mid-write: ``.NAME.tmp-PID`` (never a complete scene) is removed, and
    ``.NAME.old-PID`` (the previous complete scene, set aside just before the rename) is put back if NAME is
    missing. Temporaries of a process still running (a parallel run into the same folder) are left alone."""
    if not folder.is_dir():
        return
    for child in sorted(folder.iterdir()):
        if not (child.name.startswith(".") and child.is_dir()):
            continue
        for marker in (_TMP, _OLD):
            name, _, pid = child.name[1:].rpartition(marker)
            if name and pid.isdigit() and not pid_alive(pid):
                if marker == _OLD and not (folder / name).exists():
                    os.replace(child, folder / name)
                else:
                    shutil.rmtree(child, ignore_errors=True)


def write_scene_atomic(out: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``out/<key>.npy`` for every array, all or nothing: into ``.<name>.tmp-PID`` beside ``out``, then
    renamed (an existing ``out`` is replaced only once the new one is complete)."""
    out = Path(out)
    tmp = out.parent / f".{out.name}{_TMP}{os.getpid()}"
    old = out.parent / f".{out.name}{_OLD}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        for key, value in arrays.items():
            np.save(tmp / f"{key}.npy", value)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)  # the previous complete scene stays
        if isinstance(exc, OSError):  # disk full, no permission: the user's to fix, not a bug
            raise FFNetError(f"could not write {out}: {exc.strerror or exc}; nothing of it was kept") from None
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


def read_label_table(path: str | Path) -> dict[str, int]:
    """``scannetv2-labels.combined.tsv`` -> {raw category: id} (the ``raw_category`` and ``id`` columns; the first
    row of a category wins). A missing column or a non-integer id is an FFNetError naming the file and line."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except FileNotFoundError:
        raise FFNetError(f"--labels-tsv {path}: file not found; expected ScanNet's {LABELS_TSV}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FFNetError(f"{path}: cannot read the label table ({e}); expected ScanNet's {LABELS_TSV}") from None
    header = rows[0] if rows else []
    missing = [c for c in ("id", "raw_category") if c not in header]
    if missing:
        raise FFNetError(f"{path}: no {' / '.join(missing)} column in the header {header[:6]}; expected ScanNet's "
                         f"tab-separated {LABELS_TSV}")
    col_id, col_raw = header.index("id"), header.index("raw_category")
    table: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(col_id, col_raw) or not row[col_id].strip().lstrip("-").isdigit():
            raise FFNetError(f"{path}:{line}: expected an integer 'id' and a 'raw_category', got {row[:3]}")
        table.setdefault(row[col_raw], int(row[col_id]))
    if not table:
        raise FFNetError(f"{path}: no label rows below the header")
    return table


def find_label_table(input_dir: Path, given: str | None) -> Path | None:
    """``--labels-tsv`` as given, else ``scannetv2-labels.combined.tsv`` in the scans folder or the folder above
    it (where the ScanNet release puts it); None: ScanNet200 labels cannot be made."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise FFNetError(f"--labels-tsv {path}: file not found; expected ScanNet's {LABELS_TSV}")
        return path
    for folder in (input_dir, input_dir.parent):
        if (folder / LABELS_TSV).is_file():
            return folder / LABELS_TSV
    return None


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FFNetError(f"{path}: not a readable JSON file ({type(e).__name__}: {str(e)[:120]})") from None


def scannet200_segment(scene_dir: Path, vertices: int, table: dict[str, int]) -> np.ndarray | None:
    """ScanNet200 class per vertex (-1: in no object, or a category outside the 200 classes) from the scene's
    aggregation + over-segmentation JSON and the label ``table``; None when the scene has neither file (test)."""
    name = scene_dir.name
    segs_path, agg_path = scene_dir / f"{name}{SEGS_SUFFIX}", scene_dir / f"{name}{AGGREGATION_SUFFIX}"
    if not segs_path.exists() and not agg_path.exists():
        return None
    for path in (segs_path, agg_path):
        if not path.exists():
            other = agg_path if path is segs_path else segs_path
            raise FFNetError(f"{path}: missing, but {other.name} exists; ScanNet200 labels need both files")
    segs = _read_json(segs_path)
    seg_indices = segs.get("segIndices") if isinstance(segs, dict) else None
    if not isinstance(seg_indices, list):
        raise FFNetError(f"{segs_path}: no 'segIndices' list; expected ScanNet's over-segmentation file")
    if len(seg_indices) != vertices:
        raise FFNetError(f"{segs_path}: {len(seg_indices)} segIndices but the mesh has {vertices} vertices; "
                         "expected one per vertex")
    agg = _read_json(agg_path)
    groups = agg.get("segGroups") if isinstance(agg, dict) else None
    if not isinstance(groups, list):
        raise FFNetError(f"{agg_path}: no 'segGroups' list; expected ScanNet's aggregation file")
    segment_class: dict[int, int] = {}
    for i, group in enumerate(groups):
        if not isinstance(group, dict) or not isinstance(group.get("segments"), list) or "label" not in group:
            raise FFNetError(f"{agg_path}: segGroups[{i}] lacks 'label' or a 'segments' list")
        cls = int(ids_to_classes(np.array([table.get(str(group["label"]), 0)]), SCANNET200_IDS)[0])
        for seg in group["segments"]:
            segment_class[int(seg)] = cls  # a segment in two objects takes the later one's class
    unique, inverse = np.unique(np.asarray(seg_indices, dtype=np.int64), return_inverse=True)
    per_segment = np.array([segment_class.get(int(u), -1) for u in unique], dtype=np.int64)
    return per_segment[inverse.reshape(-1)]


def scannet_scene_arrays(scene_dir: Path, label_table: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """The arrays of one raw ScanNet scene (``coord color normal [segment20] [segment200]``), every check done
    first; ``segment200`` needs the ``label_table`` (:func:`read_label_table`) and the annotation JSON files."""
    scene_dir = Path(scene_dir)
    name = scene_dir.name
    mesh_path = scene_dir / f"{name}_vh_clean_2.ply"
    label_path = scene_dir / f"{name}_vh_clean_2.labels.ply"
    mesh = read_ply(mesh_path)
    v = mesh.get("vertex")
    if v is None:
        raise FFNetError(f"{mesh_path}: no 'vertex' element; expected a ScanNet mesh (vertices + faces)")
    coord = _vertex_array(v, ("x", "y", "z"), mesh_path).astype(np.float32)
    color = _vertex_array(v, ("red", "green", "blue"), mesh_path).astype(np.float32)
    _check_points(coord, mesh_path)
    faces = mesh.get("face", {}).get("vertex_indices")
    if faces is None:
        faces = mesh.get("face", {}).get("vertex_index")
    if faces is not None and len(faces) and (faces.dtype == object or faces.ndim != 2 or faces.shape[1] != 3):
        raise FFNetError(f"{mesh_path}: expected a triangle mesh (3 vertex indices per face)")
    if faces is not None and len(faces) and (faces.min() < 0 or faces.max() >= len(coord)):
        raise FFNetError(f"{mesh_path}: face vertex indices outside [0, {len(coord)}) (found {int(faces.min())}.."
                         f"{int(faces.max())}); the face list does not belong to these vertices")
    normal = (
        mesh_vertex_normals(coord, np.asarray(faces))
        if faces is not None and len(faces)
        else estimate_normals(coord)
    )
    arrays = {"coord": coord, "color": color, "normal": normal}
    if label_path.exists():
        labels = read_ply(label_path).get("vertex", {}).get("label")
        if labels is None:
            raise FFNetError(f"{label_path}: no per-vertex 'label' property; expected NYU40 ids per vertex")
        if len(labels) != len(coord):
            raise FFNetError(f"{label_path}: {len(labels)} labels but the mesh {mesh_path.name} has {len(coord)} "
                             "vertices; expected one label per vertex")
        arrays["segment20"] = ids_to_classes(labels.astype(np.int64), SCANNET20_NYU40_IDS)
    if label_table is not None:
        segment200 = scannet200_segment(scene_dir, len(coord), label_table)
        if segment200 is not None:
            arrays["segment200"] = segment200
    return arrays


def preprocess_scannet_scene(scene_dir: Path, out_dir: Path, label_table: dict[str, int] | None = None) -> Path:
    """Raw ScanNet scene -> ``out_dir/<scene>/`` (written atomically; nothing is written for a bad scene)."""
    return write_scene_atomic(Path(out_dir) / Path(scene_dir).name, scannet_scene_arrays(scene_dir, label_table))


def _annotation(path: Path) -> np.ndarray:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "loadtxt: input contained no data", UserWarning)
            m = np.loadtxt(path, ndmin=2)
    except (ValueError, UnicodeDecodeError) as e:
        reason = " ".join(str(e).split())[:160]
        raise FFNetError(f"{path}: not a text matrix of numbers ({reason}); expected rows 'x y z r g b'") from None
    if m.size == 0:
        raise FFNetError(f"{path}: empty annotation file; expected rows 'x y z r g b'")
    if m.shape[1] < 6:
        raise FFNetError(f"{path}: expected columns x y z r g b, got {m.shape[1]} columns")
    _check_points(m[:, :3], path)
    return m


def s3dis_room_arrays(room_dir: Path) -> dict[str, np.ndarray]:
    """The arrays of one raw S3DIS room (``coord color normal segment``), every annotation file checked first."""
    room_dir = Path(room_dir)
    ann = room_dir / "Annotations"
    files = sorted(ann.glob("*.txt"))
    if not files:
        raise FFNetError(f"{ann}: no <class>_<i>.txt annotation files")
    lookup = {c: i for i, c in enumerate(S3DIS_CLASSES)}
    coords, colors, labels = [], [], []
    for f in files:
        cls = f.stem.rsplit("_", 1)[0]
        m = _annotation(f)
        coords.append(m[:, :3])
        colors.append(m[:, 3:6])
        labels.append(np.full(len(m), lookup.get(cls, lookup["clutter"]), dtype=np.int64))
    coord = np.concatenate(coords).astype(np.float32)
    return {"coord": coord, "color": np.concatenate(colors).astype(np.float32), "normal": estimate_normals(coord),
            "segment": np.concatenate(labels)}


def preprocess_s3dis_room(room_dir: Path, out_dir: Path) -> Path:
    """Raw S3DIS room -> ``out_dir/Area_k/<room>/`` (written atomically; nothing is written for a bad room)."""
    room_dir = Path(room_dir)
    return write_scene_atomic(Path(out_dir) / room_dir.parent.name / room_dir.name, s3dis_room_arrays(room_dir))


def _parser() -> OverrideParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on failure show the full traceback")
    parser = OverrideParser(prog="ffnet-pc-preprocess", parents=[common],
                            description="Convert raw ScanNet / S3DIS releases.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    p = sub.add_parser("scannet", parents=[common], help="ScanNet v2 scans folder -> <output>/<split>/<scene>/")
    p.add_argument("--input", required=True, help="folder holding scene0000_00/ ... (ScanNet 'scans')")
    p.add_argument("--output", required=True)
    p.add_argument("--split", default="train", help="output split folder name (train/val/test)")
    p.add_argument("--scenes", default=None, help="text file listing the scenes of this split (default: all)")
    p.add_argument("--labels-tsv", default=None, metavar="FILE",
                   help=f"ScanNet's {LABELS_TSV} for ScanNet200 labels (segment200.npy); default: looked for in "
                        "--input and the folder above it")
    p = sub.add_parser("s3dis", parents=[common], help="Stanford3dDataset_v1.2 -> <output>/Area_k/<room>/")
    p.add_argument("--input", required=True, help="folder holding Area_1 ... Area_6")
    p.add_argument("--output", required=True)
    p.add_argument("--areas", nargs="*", default=None, help="default: every Area_* folder")
    return parser


def _scannet_dirs(src: Path, scenes: str | None) -> list[Path]:
    if scenes:
        listing = Path(scenes)
        if not listing.is_file():
            raise FFNetError(f"--scenes file not found: {listing}")
        names = [s.strip() for s in listing.read_text().split() if s.strip()]
        if not names:
            raise FFNetError(f"--scenes {listing}: no scene names in it; expected one scene name per line")
        return [src / n for n in names]
    dirs = sorted(d for d in src.iterdir() if d.is_dir() and (d / f"{d.name}_vh_clean_2.ply").exists())
    if not dirs:
        raise FFNetError(f"{src}: no ScanNet scene folders (<scene>/<scene>_vh_clean_2.ply)")
    return dirs


def _s3dis_rooms(src: Path, areas: Sequence[str] | None) -> list[Path]:
    areas = list(areas or sorted(d.name for d in src.iterdir() if d.is_dir() and d.name.startswith("Area_")))
    missing = [a for a in areas if not (src / a).is_dir()]
    if missing:
        raise FFNetError(f"--areas {' '.join(missing)}: no such folder under {src}")
    rooms = [r for a in areas for r in sorted((src / a).iterdir()) if (r / "Annotations").is_dir()]
    if not rooms:
        raise FFNetError(f"{src}: no rooms with Annotations/ under {areas}")
    return rooms


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    src, output = Path(args.input), Path(args.output)
    if not src.is_dir():
        raise FFNetError(f"--input folder not found: {src}")
    if output.exists() and not output.is_dir():
        raise FFNetError(f"--output {output} is a file; expected a folder for the preprocessed scenes")
    # every argument is checked before the first output folder is made
    if args.dataset == "scannet":
        tsv = find_label_table(src, args.labels_tsv)
        table = read_label_table(tsv) if tsv is not None else None
        inputs, dest = _scannet_dirs(src, args.scenes), output / args.split
        print(f"ScanNet200 labels (segment200) from {tsv}" if tsv is not None else
              f"note: no {LABELS_TSV} (--labels-tsv, or in {src} or {src.parent}): segment200.npy (ScanNet200) "
              "is not written")
        action, label = (lambda d: preprocess_scannet_scene(d, dest, table)), (lambda d: d.name)
        remove_stale_temporaries(dest)
    else:
        inputs = _s3dis_rooms(src, args.areas)
        action, label = (lambda r: preprocess_s3dis_room(r, output)), (lambda r: f"{r.parent.name}/{r.name}")
        for area in sorted({r.parent.name for r in inputs}):
            remove_stale_temporaries(output / area)
    done = 0
    position = {item: i for i, item in enumerate(inputs, 1)}

    def one(item: Path) -> Path:
        nonlocal done
        out = action(item)
        done += 1
        print(f"[{position[item]}/{len(inputs)}] {label(item)}")
        return out

    try:
        for_each_input(inputs, one, what="scene")
    finally:
        print(f"wrote {done} of {len(inputs)} scenes to {output}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
