"""Raw dataset releases -> the preprocessed per-scene layout read by the loaders.

``ffnet-pc-preprocess scannet --input ScanNet/scans --output data/scannet --split train [--scenes LIST.txt]``
    reads ``<scene>/<scene>_vh_clean_2.ply`` (mesh: vertices + faces) and ``<scene>_vh_clean_2.labels.ply``
    (NYU40 ids per vertex), writes ``<output>/<split>/<scene>/{coord,color,normal,segment20}.npy``. Vertex normals
    are area-weighted face normals of the mesh; NYU40 ids outside the 20 benchmark classes become -1 (ignored).
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
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from metamixer.train.cli import OverrideParser
from metamixer.train.errors import FFNetError, for_each_input, run_cli

from .data.datasets import S3DIS_CLASSES
from .data.ply import read_ply

__all__ = [
    "SCANNET20_NYU40_IDS",
    "preprocess_scannet_scene",
    "preprocess_s3dis_room",
    "mesh_vertex_normals",
    "estimate_normals",
    "write_scene_atomic",
    "main",
    "cli",
]

#: NYU40 ids of the 20 ScanNet benchmark classes, in class-index order (wall ... otherfurniture)
SCANNET20_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)


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


def _alive(pid: str) -> bool:
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
            if name and pid.isdigit() and not _alive(pid):
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


def scannet_scene_arrays(scene_dir: Path) -> dict[str, np.ndarray]:
    """The arrays of one raw ScanNet scene (``coord color normal [segment20]``), every check done first."""
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
        ids = labels.astype(np.int64)
        lut = np.full(max(256, int(ids.max()) + 1), -1, dtype=np.int64)
        lut[list(SCANNET20_NYU40_IDS)] = np.arange(len(SCANNET20_NYU40_IDS))
        arrays["segment20"] = np.where(ids >= 0, lut[np.clip(ids, 0, None)], -1)
    return arrays


def preprocess_scannet_scene(scene_dir: Path, out_dir: Path) -> Path:
    """Raw ScanNet scene -> ``out_dir/<scene>/`` (written atomically; nothing is written for a bad scene)."""
    return write_scene_atomic(Path(out_dir) / Path(scene_dir).name, scannet_scene_arrays(scene_dir))


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
        inputs, dest = _scannet_dirs(src, args.scenes), output / args.split
        action, label = (lambda d: preprocess_scannet_scene(d, dest)), (lambda d: d.name)
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
