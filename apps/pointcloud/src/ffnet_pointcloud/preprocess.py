"""Raw dataset releases -> the preprocessed per-scene layout read by the loaders.

``ffnet-pc-preprocess scannet --input ScanNet/scans --output data/scannet --split train [--scenes LIST.txt]``
    reads ``<scene>/<scene>_vh_clean_2.ply`` (mesh: vertices + faces) and ``<scene>_vh_clean_2.labels.ply``
    (NYU40 ids per vertex), writes ``<output>/<split>/<scene>/{coord,color,normal,segment20}.npy``. Vertex normals
    are area-weighted face normals of the mesh; NYU40 ids outside the 20 benchmark classes become -1 (ignored).
``ffnet-pc-preprocess s3dis --input Stanford3dDataset_v1.2 --output data/s3dis [--areas Area_5 ...]``
    reads ``Area_k/<room>/Annotations/<class>_<i>.txt`` (x y z r g b), writes
    ``<output>/Area_k/<room>/{coord,color,normal,segment}.npy``; normals are estimated by PCA over 16 neighbours
    and oriented towards the room centre; unknown classes (``stairs``) map to ``clutter`` as usual.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metamixer.train.errors import FFNetError, run_cli

from .data.datasets import S3DIS_CLASSES
from .data.ply import read_ply

__all__ = [
    "SCANNET20_NYU40_IDS",
    "preprocess_scannet_scene",
    "preprocess_s3dis_room",
    "mesh_vertex_normals",
    "estimate_normals",
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


def preprocess_scannet_scene(scene_dir: Path, out_dir: Path) -> Path:
    scene_dir = Path(scene_dir)
    name = scene_dir.name
    mesh_path = scene_dir / f"{name}_vh_clean_2.ply"
    label_path = scene_dir / f"{name}_vh_clean_2.labels.ply"
    mesh = read_ply(mesh_path)
    v = mesh["vertex"]
    coord = _vertex_array(v, ("x", "y", "z"), mesh_path).astype(np.float32)
    color = _vertex_array(v, ("red", "green", "blue"), mesh_path).astype(np.float32)
    faces = mesh.get("face", {}).get("vertex_indices")
    if faces is None:
        faces = mesh.get("face", {}).get("vertex_index")
    if faces is not None and len(faces) and (faces.dtype == object or faces.ndim != 2 or faces.shape[1] != 3):
        raise FFNetError(f"{mesh_path}: expected a triangle mesh (3 vertex indices per face)")
    normal = (
        mesh_vertex_normals(coord, np.asarray(faces))
        if faces is not None and len(faces)
        else estimate_normals(coord)
    )
    out = Path(out_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "coord.npy", coord)
    np.save(out / "color.npy", color)
    np.save(out / "normal.npy", normal)
    if label_path.exists():
        labels = read_ply(label_path)["vertex"].get("label")
        if labels is None or len(labels) != len(coord):
            raise FFNetError(f"{label_path}: expected a per-vertex 'label' for all {len(coord)} vertices")
        lut = np.full(max(256, int(labels.max()) + 1), -1, dtype=np.int64)
        lut[list(SCANNET20_NYU40_IDS)] = np.arange(len(SCANNET20_NYU40_IDS))
        np.save(out / "segment20.npy", lut[labels.astype(np.int64)])
    return out


def preprocess_s3dis_room(room_dir: Path, out_dir: Path) -> Path:
    room_dir = Path(room_dir)
    ann = room_dir / "Annotations"
    files = sorted(ann.glob("*.txt"))
    if not files:
        raise FFNetError(f"{ann}: no <class>_<i>.txt annotation files")
    lookup = {c: i for i, c in enumerate(S3DIS_CLASSES)}
    coords, colors, labels = [], [], []
    for f in files:
        cls = f.stem.rsplit("_", 1)[0]
        m = np.loadtxt(f, ndmin=2)
        if m.shape[1] < 6:
            raise FFNetError(f"{f}: expected columns x y z r g b, got {m.shape[1]} columns")
        coords.append(m[:, :3])
        colors.append(m[:, 3:6])
        labels.append(np.full(len(m), lookup.get(cls, lookup["clutter"]), dtype=np.int64))
    coord = np.concatenate(coords).astype(np.float32)
    out = Path(out_dir) / room_dir.parent.name / room_dir.name
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "coord.npy", coord)
    np.save(out / "color.npy", np.concatenate(colors).astype(np.float32))
    np.save(out / "normal.npy", estimate_normals(coord))
    np.save(out / "segment.npy", np.concatenate(labels))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "ffnet-pc-preprocess", description="Convert raw ScanNet / S3DIS releases."
    )
    sub = parser.add_subparsers(dest="dataset", required=True)
    p = sub.add_parser("scannet", help="ScanNet v2 scans folder -> <output>/<split>/<scene>/")
    p.add_argument("--input", required=True, help="folder holding scene0000_00/ ... (ScanNet 'scans')")
    p.add_argument("--output", required=True)
    p.add_argument("--split", default="train", help="output split folder name (train/val/test)")
    p.add_argument("--scenes", default=None, help="text file listing the scenes of this split (default: all)")
    p = sub.add_parser("s3dis", help="Stanford3dDataset_v1.2 -> <output>/Area_k/<room>/")
    p.add_argument("--input", required=True, help="folder holding Area_1 ... Area_6")
    p.add_argument("--output", required=True)
    p.add_argument("--areas", nargs="*", default=None, help="default: every Area_* folder")
    args = parser.parse_args(argv)
    src = Path(args.input)
    if not src.is_dir():
        raise FFNetError(f"--input folder not found: {src}")
    done = 0
    if args.dataset == "scannet":
        if args.scenes:
            names = [s.strip() for s in Path(args.scenes).read_text().split() if s.strip()]
            dirs = [src / n for n in names]
        else:
            dirs = sorted(
                d for d in src.iterdir() if d.is_dir() and (d / f"{d.name}_vh_clean_2.ply").exists()
            )
        if not dirs:
            raise FFNetError(f"{src}: no ScanNet scene folders (<scene>/<scene>_vh_clean_2.ply)")
        for d in dirs:
            preprocess_scannet_scene(d, Path(args.output) / args.split)
            done += 1
            print(f"[{done}/{len(dirs)}] {d.name}")
    else:
        areas = args.areas or sorted(
            d.name for d in src.iterdir() if d.is_dir() and d.name.startswith("Area_")
        )
        rooms = [r for a in areas for r in sorted((src / a).iterdir()) if (r / "Annotations").is_dir()]
        if not rooms:
            raise FFNetError(f"{src}: no rooms with Annotations/ under {areas}")
        for r in rooms:
            preprocess_s3dis_room(r, Path(args.output))
            done += 1
            print(f"[{done}/{len(rooms)}] {r.parent.name}/{r.name}")
    print(f"wrote {done} scenes to {args.output}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
