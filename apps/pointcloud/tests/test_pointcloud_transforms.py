"""GridSample coverage, inverse maps and its two hash types, SphereCrop (also mode "all": crops covering every
point), pipelines that split a scene, the augmentation transforms, collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffnet_pointcloud.config import s3dis_tta_views, scannet_train_pipeline, scannet_tta_views
from ffnet_pointcloud.data.collate import collate_scenes
from ffnet_pointcloud.data.synthetic import make_scene
from ffnet_pointcloud.data.transforms import (
    GridSample,
    SphereCrop,
    build_transforms,
    check_single_output,
    set_rng,
    voxelize,
)
from metamixer.train.errors import FFNetError


def _cloud(n: int = 3000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    coord = rng.random((n, 3)).astype(np.float32) * np.array([1.0, 0.6, 0.3], dtype=np.float32)
    return {
        "coord": coord,
        "color": rng.integers(0, 256, (n, 3)).astype(np.float32),
        "normal": rng.normal(size=(n, 3)).astype(np.float32),
        "segment": rng.integers(0, 5, n),
        "name": "cloud",
    }


def _voxel_key(coord: np.ndarray, grid: float) -> np.ndarray:
    g = np.floor(coord / grid).astype(np.int64)
    g -= g.min(0)
    return g[:, 0] * 1_000_000 + g[:, 1] * 1000 + g[:, 2]


def test_gridsample_train_keeps_one_point_per_voxel_with_inverse() -> None:
    data = _cloud()
    keys = _voxel_key(data["coord"], 0.05)
    gs = GridSample(0.05, mode="train", return_inverse=True)
    gs.rng = np.random.default_rng(1)
    out = gs(dict(data))
    n_vox = len(np.unique(keys))
    assert len(out["coord"]) == n_vox and len(out["segment"]) == n_vox
    out_keys = _voxel_key_like(out["grid_coord"])
    assert len(np.unique(out_keys)) == n_vox  # one point per voxel
    # inverse maps every original point to the kept point of its own voxel
    inv = out["inverse"]
    assert inv.shape == (len(data["coord"]),)
    assert np.array_equal(
        _voxel_key_like(out["grid_coord"][inv]), _voxel_key_like(_grid(data["coord"], 0.05))
    )
    # kept points are real input points with their own attributes
    rows = {tuple(c): i for i, c in enumerate(data["coord"].tolist())}
    idx = np.array([rows[tuple(c)] for c in out["coord"].tolist()])
    assert np.array_equal(out["segment"], data["segment"][idx])
    assert np.array_equal(out["color"], data["color"][idx])


def _grid(coord: np.ndarray, size: float) -> np.ndarray:
    g = np.floor(coord / size).astype(np.int64)
    return g - g.min(0)


def _voxel_key_like(g: np.ndarray) -> np.ndarray:
    return g[:, 0] * 1_000_000 + g[:, 1] * 1000 + g[:, 2]


def test_gridsample_test_fragments_cover_every_point() -> None:
    data = _cloud(4000)
    keys = _voxel_key(data["coord"], 0.05)
    counts = np.unique(keys, return_counts=True)[1]
    frags = GridSample(0.05, mode="test")(dict(data))
    assert len(frags) == counts.max()
    covered = np.zeros(len(keys), dtype=np.int64)
    for f in frags:
        assert len(np.unique(_voxel_key_like(f["grid_coord"]))) == len(f["coord"])  # one point per voxel
        assert len(f["coord"]) == len(np.unique(keys))  # every voxel in every fragment
        assert np.array_equal(f["coord"], data["coord"][f["index"]])
        assert np.array_equal(f["grid_coord"], _grid(data["coord"], 0.05)[f["index"]])
        covered[np.unique(f["index"])] += 1
    # every point appears in at least one fragment (points of sparse voxels repeat across fragments)
    assert covered.min() >= 1
    union = np.unique(np.concatenate([f["index"] for f in frags]))
    assert np.array_equal(union, np.arange(len(keys)))


def test_sphere_crop_keeps_nearest_points() -> None:
    data = _cloud(1000)
    crop = SphereCrop(point_max=100, mode="center")
    out = crop(dict(data))
    assert len(out["coord"]) == 100
    centre = data["coord"][500]
    d_all = np.sort(((data["coord"] - centre) ** 2).sum(1))
    d_kept = ((out["coord"] - centre) ** 2).sum(1)
    assert d_kept.max() <= d_all[99] + 1e-12


def _groups(coord: np.ndarray, hash_type: str) -> set[frozenset[int]]:
    """The voxels as sets of point rows (independent of the key values and the voxel order)."""
    _, idx_sort, inverse, _ = voxelize(coord, 0.05, hash_type)
    groups: dict[int, set[int]] = {}
    for row, voxel in zip(idx_sort.tolist(), inverse.tolist()):
        groups.setdefault(voxel, set()).add(row)
    return {frozenset(g) for g in groups.values()}


def test_gridsample_hash_types_give_the_same_voxels() -> None:
    data = _cloud(4000)
    truth: dict[tuple[int, ...], set[int]] = {}
    for row, cell in enumerate(_grid(data["coord"], 0.05).tolist()):
        truth.setdefault(tuple(cell), set()).add(row)
    expected = {frozenset(g) for g in truth.values()}
    assert _groups(data["coord"], "ravel") == expected == _groups(data["coord"], "fnv")
    # the keys differ (so does the voxel order), the test fragments hold the same points
    ravel, fnv = (_voxel_order(data["coord"], h) for h in ("ravel", "fnv"))
    assert ravel != fnv
    frags = {h: GridSample(0.05, mode="test", hash_type=h)(dict(data)) for h in ("ravel", "fnv")}
    assert len(frags["ravel"]) == len(frags["fnv"])
    for a, b in zip(frags["ravel"], frags["fnv"]):
        assert set(a["index"].tolist()) == set(b["index"].tolist())
    train = GridSample(0.05, mode="train", hash_type="fnv")
    train.rng = np.random.default_rng(0)
    assert len(train(dict(data))["coord"]) == len(expected)


def _voxel_order(coord: np.ndarray, hash_type: str) -> list[int]:
    _, idx_sort, inverse, count = voxelize(coord, 0.05, hash_type)
    return idx_sort[np.concatenate([[0], np.cumsum(count)[:-1]])].tolist()


def test_fnv_keys_are_pointcepts_64_bit_fnv() -> None:
    """The keys equal a pure-Python FNV (offset basis, then per coordinate: multiply by the prime, xor)."""
    from ffnet_pointcloud.data.transforms import _fnv_key

    cells = np.array([[0, 0, 0], [1, 2, 3], [700, 5, 90000]], dtype=np.int64)

    def reference(cell: list[int]) -> int:
        h = 14695981039346656037
        for c in cell:
            h = ((h * 1099511628211) % 2**64) ^ c
        return h

    assert _fnv_key(cells).tolist() == [reference(c) for c in cells.tolist()]


def test_gridsample_refuses_an_unknown_hash_type() -> None:
    with pytest.raises(FFNetError, match="hash_type must be one of ravel, fnv .* got 'md5'"):
        GridSample(0.05, hash_type="md5")
    with pytest.raises(FFNetError, match=r"data.train_transforms\[1\] \(GridSample\): hash_type must be"):
        build_transforms([{"type": "CenterShift"}, {"type": "GridSample", "grid_size": 0.1, "hash_type": "exact"}],
                         where="data.train_transforms")


def test_sphere_crop_all_covers_every_point_in_crops_of_point_max() -> None:
    data = _cloud(3000)
    crop = SphereCrop(point_max=400, mode="all")
    crop.rng = np.random.default_rng(3)
    crops = crop(dict(data))
    assert isinstance(crops, list) and len(crops) >= 3000 // 400 + 1
    union = np.unique(np.concatenate([c["index"] for c in crops]))
    assert np.array_equal(union, np.arange(3000))  # every point in some crop
    for c in crops:
        assert len(c["coord"]) == 400 and np.array_equal(c["coord"], data["coord"][c["index"]])
        assert np.array_equal(c["segment"], data["segment"][c["index"]])
    crop.rng = np.random.default_rng(3)
    again = crop(dict(data))
    assert [c["index"].tolist() for c in again] == [c["index"].tolist() for c in crops]  # seeded
    small = SphereCrop(point_max=5000, mode="all")(dict(data))  # fits in one crop: the scene itself
    assert len(small) == 1 and np.array_equal(small[0]["index"], np.arange(3000))
    with pytest.raises(FFNetError, match="'random', 'center' or 'all'"):
        SphereCrop(mode="every")
    with pytest.raises(FFNetError, match="point_max must be an integer >= 1"):
        SphereCrop(point_max=0, mode="all")


def test_crops_of_fragments_index_the_original_points_and_the_rest_applies_to_each() -> None:
    """GridSample test -> SphereCrop all -> CenterShift: Compose maps the steps after a split over each part and
    the crops' index points into the ORIGINAL scene (composed with the fragment's)."""
    data = _cloud(3000)
    pipe = build_transforms([{"type": "GridSample", "grid_size": 0.05, "mode": "test"},
                             {"type": "SphereCrop", "point_max": 150, "mode": "all"},
                             {"type": "CenterShift", "apply_z": False}])
    set_rng(pipe, np.random.default_rng(0))
    parts = pipe(dict(data))
    fragments = GridSample(0.05, mode="test")(dict(data))
    assert len(parts) > len(fragments)
    assert np.array_equal(np.unique(np.concatenate([p["index"] for p in parts])), np.arange(3000))
    for p in parts:
        assert len(p["coord"]) <= 150
        assert np.array_equal(p["segment"], data["segment"][p["index"]])
        assert np.allclose(p["coord"].min(0)[2], 0)  # CenterShift ran on the crop itself
        shift = data["coord"][p["index"]] - p["coord"]
        assert np.allclose(shift, shift[0], atol=1e-6)


def test_pipelines_that_must_give_one_sample_refuse_splitting_transforms() -> None:
    from ffnet_pointcloud.runtime import SeededTransform

    with pytest.raises(FFNetError, match=r"data.train_transforms\[1\] \(SphereCrop\): mode 'all' returns a list"):
        SeededTransform([{"type": "GridSample", "grid_size": 0.1},
                         {"type": "SphereCrop", "point_max": 10, "mode": "all"}], 0, "data.train_transforms")
    with pytest.raises(FFNetError, match=r"data.val_transforms\[0\] \(GridSample\): mode 'test'"):
        check_single_output(build_transforms([{"type": "GridSample", "grid_size": 0.1, "mode": "test"}]),
                            "data.val_transforms")


def test_official_pipeline_runs_and_is_reproducible() -> None:
    scene = make_scene(3, density=150)
    pipe = build_transforms(scannet_train_pipeline(grid_size=0.05, point_max=4000))
    set_rng(pipe, np.random.default_rng(7))
    a = pipe({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in scene.items()})
    set_rng(pipe, np.random.default_rng(7))
    b = pipe({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in scene.items()})
    assert np.array_equal(a["coord"], b["coord"]) and np.array_equal(a["segment"], b["segment"])
    n = len(a["coord"])
    assert n <= 4000 and all(len(a[k]) == n for k in ("color", "normal", "segment", "grid_coord"))
    assert a["color"].min() >= -1 and a["color"].max() <= 1  # NormalizeColor
    assert np.allclose(np.linalg.norm(a["normal"], axis=1), 1, atol=1e-4)  # rotations keep unit normals
    assert a["grid_coord"].min() >= 0


def test_tta_view_counts_match_official_configs() -> None:
    assert len(scannet_tta_views()) == 13
    assert len(s3dis_tta_views()) == 10


def test_flip_and_rotation_move_normals_with_points() -> None:
    data = _cloud(50)
    flip = build_transforms([{"type": "RandomFlip", "p": 1}])
    out = flip({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in data.items()})
    assert np.allclose(out["coord"][:, :2], -data["coord"][:, :2]) and np.allclose(
        out["normal"][:, 2], data["normal"][:, 2]
    )
    rot = build_transforms(
        [{"type": "RandomRotateTargetAngle", "angle": [0.5], "axis": "z", "center": [0, 0, 0]}]
    )
    out = rot({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in data.items()})
    assert np.allclose(out["coord"][:, 0], -data["coord"][:, 1], atol=1e-6)
    assert np.allclose(out["normal"][:, 1], data["normal"][:, 0], atol=1e-6)


def test_unknown_transform_and_bad_options() -> None:
    with pytest.raises(FFNetError, match="unknown type 'Nope'"):
        build_transforms([{"type": "Nope"}])
    with pytest.raises(FFNetError, match="GridSample"):
        build_transforms([{"type": "GridSample", "grid_sze": 0.1}])
    with pytest.raises(FFNetError, match="mode"):
        GridSample(0.1, mode="val")


def test_collate_builds_offsets_and_features() -> None:
    a, b = _cloud(30, 0), _cloud(20, 1)
    for d in (a, b):
        d["grid_coord"] = _grid(d["coord"], 0.1)
    p = collate_scenes([a, b], ("color", "normal"))
    assert p.feat.shape == (50, 6) and p.offset.tolist() == [30, 50]
    assert torch.equal(p.batch, torch.tensor([0] * 30 + [1] * 20))
    with pytest.raises(FFNetError, match="feat_keys"):
        collate_scenes([a], ("color", "height"))


def test_mix3d_collate_merges_scene_pairs() -> None:
    scenes = []
    for seed, n in ((0, 10), (1, 20), (2, 30)):
        d = _cloud(n, seed)
        d["grid_coord"] = _grid(d["coord"], 0.1)
        scenes.append(d)
    assert collate_scenes(scenes, mix_prob=0.0).offset.tolist() == [10, 30, 60]
    mixed = collate_scenes(scenes, mix_prob=1.0)
    assert mixed.offset.tolist() == [30, 60]  # scenes 0+1 overlaid, scene 2 alone
    assert torch.equal(mixed.batch, torch.tensor([0] * 30 + [1] * 30))
