"""Synthetic indoor scenes with per-point labels, colours and normals.

No labelled real scene ships with the project, so this generator exercises the whole pipeline (grid sampling,
serialization, sparse convs, fragment TTA, metrics) end to end. A scene is a room: floor, ceiling-less walls,
boxes (cabinets), cylinders (columns/bins), elevated horizontal boards (tables) and thin boards on the walls
(pictures/doors), each a labelled class. Colours overlap between classes on purpose (per-scene tint + per-point
noise), so a model has to use geometry as well as colour; coordinates get sensor-like jitter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SYNTH_CLASSES", "make_scene", "write_scene", "write_synthetic_dataset"]

SYNTH_CLASSES = ("floor", "wall", "box", "cylinder", "table", "board")
_BASE_COLORS = np.array(
    [[150, 120, 90], [190, 185, 170], [120, 80, 60], [90, 110, 150], [140, 100, 70], [170, 160, 120]],
    dtype=np.float64,
)


def _rect(rng: np.random.Generator, origin, u, v, density: float) -> tuple[np.ndarray, np.ndarray]:
    origin, u, v = (np.asarray(a, dtype=np.float64) for a in (origin, u, v))
    area = np.linalg.norm(np.cross(u, v))
    n = max(1, int(rng.poisson(area * density)))
    a, b = rng.random((n, 1)), rng.random((n, 1))
    pts = origin + a * u + b * v
    normal = np.cross(u, v)
    normal = normal / max(np.linalg.norm(normal), 1e-12)
    return pts, np.repeat(normal[None], n, 0)


def _box(rng, lo, size, density, with_bottom: bool = False):
    x, y, z = lo
    dx, dy, dz = size
    faces = [
        ((x, y, z + dz), (dx, 0, 0), (0, dy, 0)),  # top, normal +z
        ((x, y, z), (0, 0, dz), (0, dy, 0)),  # -x
        ((x + dx, y, z), (0, dy, 0), (0, 0, dz)),  # +x
        ((x, y, z), (dx, 0, 0), (0, 0, dz)),  # -y
        ((x, y + dy, z), (0, 0, dz), (dx, 0, 0)),  # +y
    ]
    if with_bottom:
        faces.append(((x, y, z), (0, dy, 0), (dx, 0, 0)))
    parts = [_rect(rng, *f, density) for f in faces]
    return np.concatenate([p for p, _ in parts]), np.concatenate([n for _, n in parts])


def _cylinder(rng, centre, radius, height, density):
    side = 2 * np.pi * radius * height
    n = max(1, int(rng.poisson(side * density)))
    theta = rng.random(n) * 2 * np.pi
    h = rng.random(n) * height
    normal = np.stack([np.cos(theta), np.sin(theta), np.zeros(n)], 1)
    pts = np.stack([centre[0] + radius * normal[:, 0], centre[1] + radius * normal[:, 1], h], 1)
    m = max(1, int(rng.poisson(np.pi * radius**2 * density)))
    r = radius * np.sqrt(rng.random(m))
    t = rng.random(m) * 2 * np.pi
    cap = np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t), np.full(m, height)], 1)
    return np.concatenate([pts, cap]), np.concatenate([normal, np.repeat([[0.0, 0, 1]], m, 0)])


def _free_spot(rng, room, size, placed, margin=0.15, tries=30):
    for _ in range(tries):
        x = rng.uniform(margin, room[0] - size[0] - margin)
        y = rng.uniform(margin, room[1] - size[1] - margin)
        rect = (x, y, x + size[0], y + size[1])
        if all(rect[2] < p[0] or rect[0] > p[2] or rect[3] < p[1] or rect[1] > p[3] for p in placed):
            placed.append(rect)
            return x, y
    return None


def make_scene(seed: int, density: float = 400.0, jitter: float = 0.004, name: str | None = None) -> dict:
    """One random room; ``density`` = points per square metre of surface (ScanNet is ~5-10k at full res).

    Returns a dict of numpy arrays: coord float32 [N,3] (m), color float32 [N,3] (0..255), normal float32 [N,3],
    segment int64 [N] (indices into :data:`SYNTH_CLASSES`), plus ``name``.
    """
    rng = np.random.default_rng(seed)
    room = (rng.uniform(3.5, 6.5), rng.uniform(3.5, 6.5), rng.uniform(2.4, 3.0))
    lx, ly, lz = room
    pts, nrm, lab = [], [], []

    def add(p, n, label):
        pts.append(p)
        nrm.append(n)
        lab.append(np.full(len(p), label, dtype=np.int64))

    add(*_rect(rng, (0, 0, 0), (lx, 0, 0), (0, ly, 0), density), 0)  # floor: normal +z (u x v = +z)
    add(*_rect(rng, (0, 0, 0), (0, ly, 0), (0, 0, lz), density), 1)  # wall x=0, normal +x
    add(*_rect(rng, (lx, 0, 0), (0, 0, lz), (0, ly, 0), density), 1)  # wall x=lx, normal -x
    add(*_rect(rng, (0, 0, 0), (0, 0, lz), (lx, 0, 0), density), 1)  # wall y=0, normal +y
    add(*_rect(rng, (0, ly, 0), (lx, 0, 0), (0, 0, lz), density), 1)  # wall y=ly, normal -y
    placed: list[tuple[float, float, float, float]] = []
    for _ in range(rng.integers(2, 5)):  # boxes (cabinets, crates)
        size = (rng.uniform(0.4, 1.2), rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.6))
        spot = _free_spot(rng, room, size, placed)
        if spot:
            add(*_box(rng, (spot[0], spot[1], 0.0), size, density), 2)
    for _ in range(rng.integers(1, 4)):  # cylinders (columns, bins)
        r = rng.uniform(0.12, 0.35)
        spot = _free_spot(rng, room, (2 * r, 2 * r), placed)
        if spot:
            add(*_cylinder(rng, (spot[0] + r, spot[1] + r), r, rng.uniform(0.5, lz), density), 3)
    for _ in range(rng.integers(1, 3)):  # tables: an elevated board on four thin legs (legs count as table)
        size = (rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0))
        spot = _free_spot(rng, room, size, placed)
        if spot:
            h = rng.uniform(0.65, 0.8)
            add(*_box(rng, (spot[0], spot[1], h), (size[0], size[1], 0.04), density, with_bottom=True), 4)
            for cx, cy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                leg = (spot[0] + cx * (size[0] - 0.05), spot[1] + cy * (size[1] - 0.05), 0.0)
                add(*_box(rng, leg, (0.05, 0.05, h), density), 4)
    for _ in range(rng.integers(1, 4)):  # boards on walls (pictures, doors, whiteboards)
        w, h = rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.8)
        z0 = rng.uniform(0.0, lz - h)
        wall = rng.integers(4)
        off = 0.03
        if wall == 0:
            o = (off, rng.uniform(0, ly - w), z0)
            add(*_rect(rng, o, (0, w, 0), (0, 0, h), density), 5)
        elif wall == 1:
            o = (lx - off, rng.uniform(0, ly - w), z0)
            add(*_rect(rng, o, (0, 0, h), (0, w, 0), density), 5)
        elif wall == 2:
            o = (rng.uniform(0, lx - w), off, z0)
            add(*_rect(rng, o, (0, 0, h), (w, 0, 0), density), 5)
        else:
            o = (rng.uniform(0, lx - w), ly - off, z0)
            add(*_rect(rng, o, (w, 0, 0), (0, 0, h), density), 5)

    coord = np.concatenate(pts)
    normal = np.concatenate(nrm)
    segment = np.concatenate(lab)
    coord = coord + rng.normal(0, jitter, coord.shape)
    tint = rng.normal(0, 20, (len(SYNTH_CLASSES), 3))  # per-scene, per-class colour shift
    brightness = rng.uniform(0.8, 1.2)
    color = (_BASE_COLORS[segment] + tint[segment]) * brightness + rng.normal(0, 25, coord.shape)
    perm = rng.permutation(len(coord))
    return {
        "name": name or f"synthetic_{seed:05d}",
        "coord": coord[perm].astype(np.float32),
        "color": np.clip(color[perm], 0, 255).astype(np.float32),
        "normal": normal[perm].astype(np.float32),
        "segment": segment[perm],
    }


def write_scene(scene: dict, folder: Path, segment_key: str = "segment") -> Path:
    """Write a scene in the preprocessed per-scene layout (``folder/<name>/{coord,color,normal,segment}.npy``)."""
    out = Path(folder) / scene["name"]
    out.mkdir(parents=True, exist_ok=True)
    for key in ("coord", "color", "normal"):
        np.save(out / f"{key}.npy", scene[key])
    np.save(out / f"{segment_key}.npy", scene["segment"])
    return out


def write_synthetic_dataset(
    root: Path, num_train: int, num_val: int, seed: int = 0, density: float = 400.0
) -> Path:
    """``root/{train,val}/synthetic_XXXXX/*.npy`` plus ``root/classes.txt``; returns ``root``."""
    root = Path(root)
    for split, count, base in (("train", num_train, seed * 100000), ("val", num_val, seed * 100000 + 50000)):
        for i in range(count):
            write_scene(make_scene(base + i, density=density), root / split)
    (root / "classes.txt").write_text("\n".join(SYNTH_CLASSES) + "\n")
    return root
