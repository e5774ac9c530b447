"""SemanticKITTI: the shared real scans against the MANIFEST and a by-hand learning_map, bad files, the official split
over a fake folder tree, the .label writer round trip, PointClip, and the dataset through the app's builders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ffnet_pointcloud.config import Config
from ffnet_pointcloud.data.datasets import SemanticKittiDataset, dataset_info
from ffnet_pointcloud.data.semantic_kitti import (
    SEMANTIC_KITTI_CLASSES,
    list_scans,
    load_scan,
    prediction_path,
    read_label_file,
    read_labels_yaml,
    write_prediction,
)
from ffnet_pointcloud.data.transforms import build_transforms
from ffnet_pointcloud.runtime import build_dataset, check_config
from metamixer.train.datadir import data_root
from metamixer.train.errors import FFNetError

KITTI = data_root() / "pointcloud" / "semantickitti"
needs_kitti = pytest.mark.skipif(not (KITTI / "semantic-kitti.yaml").is_file(),
                                 reason=f"SemanticKITTI sample not found at {KITTI} (set FFNET_DATA)")
#: MANIFEST section 3: (sequence, frame, points)
SCANS = [("00", "000000", 124668), ("00", "000001", 124605), ("00", "000002", 124478), ("08", "000000", 123389)]

#: a small label file of the official shape (raw 0 unlabeled, 1 outlier, 10 car, 40 road, 252 moving car)
TINY_YAML = {
    "labels": {0: "unlabeled", 1: "outlier", 10: "car", 40: "road", 252: "moving-car"},
    "color_map": {0: [0, 0, 0], 1: [0, 0, 255], 10: [245, 150, 100], 40: [255, 0, 255], 252: [245, 150, 100]},
    "learning_map": {0: 0, 1: 0, 10: 1, 40: 2, 252: 1},
    "learning_map_inv": {0: 0, 1: 10, 2: 40},
    "split": {"train": [0, 1, 2, 3, 4, 5, 6, 7, 9, 10], "valid": [8], "test": list(range(11, 22))},
}


def _write_scan(root: Path, seq: str, frame: str, points: np.ndarray, raw: np.ndarray | None = None) -> Path:
    scan = root / "sequences" / seq / "velodyne" / f"{frame}.bin"
    scan.parent.mkdir(parents=True, exist_ok=True)
    points.astype("<f4").tofile(scan)
    if raw is not None:
        label = root / "sequences" / seq / "labels" / f"{frame}.label"
        label.parent.mkdir(parents=True, exist_ok=True)
        raw.astype("<u4").tofile(label)
    return scan


def _tiny_root(tmp: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "semantic-kitti.yaml").write_text(yaml.safe_dump(TINY_YAML))
    return tmp


def _points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.hstack([rng.uniform(-20, 20, (n, 3)), rng.random((n, 1))]).astype(np.float32)


# ------------------------------------------------------------------------------------------- the real scans
@needs_kitti
@pytest.mark.parametrize(("seq", "frame", "points"), SCANS, ids=[f"{s}/{f}" for s, f, _ in SCANS])
def test_load_scan_on_every_shared_scan(seq: str, frame: str, points: int) -> None:
    bin_path = KITTI / "sequences" / seq / "velodyne" / f"{frame}.bin"
    scan = load_scan(bin_path)
    raw_points = np.fromfile(bin_path, dtype="<f4").reshape(-1, 4)
    raw_labels = np.fromfile(KITTI / "sequences" / seq / "labels" / f"{frame}.label", dtype="<u4")
    assert len(scan["coord"]) == points == len(raw_labels)
    assert scan["coord"].shape == (points, 3) and scan["coord"].dtype == np.float32
    assert scan["strength"].shape == (points, 1) and scan["strength"].dtype == np.float32
    assert np.array_equal(scan["coord"], raw_points[:, :3])
    assert np.array_equal(scan["strength"][:, 0], raw_points[:, 3])
    # learning_map applied by hand, point by point, from the YAML text
    learning_map = yaml.safe_load((KITTI / "semantic-kitti.yaml").read_text())["learning_map"]
    by_hand = np.array([learning_map[int(v) & 0xFFFF] - 1 for v in raw_labels], dtype=np.int64)
    assert scan["segment"].dtype == np.int64 and np.array_equal(scan["segment"], by_hand)
    assert np.array_equal(scan["instance"], (raw_labels >> 16).astype(np.int64))
    assert scan["segment"].min() == -1 and scan["segment"].max() <= 18
    ignored = float((scan["segment"] == -1).mean())
    assert 0.0355 <= ignored < 0.0565, ignored  # MANIFEST: 3.6-5.6 % (one decimal) of each scan is train id 0
    assert np.array_equal(scan["segment"] == -1, np.isin(raw_labels & 0xFFFF, [0, 1, 52, 99]))
    assert scan["name"] == f"{seq}_{frame}"


@needs_kitti
def test_yaml_names_colours_and_official_split() -> None:
    meta = read_labels_yaml(KITTI)
    assert meta.names == SEMANTIC_KITTI_CLASSES == tuple(dataset_info("semantickitti")["class_names"])
    assert meta.num_classes == 19
    assert meta.colors[0].tolist() == [100, 150, 245]  # car: color_map 10 is BGR [245, 150, 100]
    assert meta.split == {"train": (0, 1, 2, 3, 4, 5, 6, 7, 9, 10), "valid": (8,), "test": tuple(range(11, 22))}
    lines: list[str] = []
    train = list_scans(KITTI, ["train"], log=lines.append)
    assert [p.parent.parent.name for p in train] == ["00", "00", "00"] and [p.stem for p in train] == [
        "000000", "000001", "000002"]
    assert len(lines) == 1 and "01, 02, 03, 04, 05, 06, 07, 09, 10" in lines[0] and "skipped" in lines[0]
    assert [p.parent.parent.name for p in list_scans(KITTI, ["val"])] == ["08"]
    with pytest.raises(FFNetError, match="no scans for splits"):
        list_scans(KITTI, ["test"])  # 11-21 are not in the sample


# ----------------------------------------------------------------------------------------------- bad files
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path / "kitti")
    good = _write_scan(root, "00", "000000", _points(5), np.array([10, 40, 0, 1, 252]))
    assert load_scan(good)["segment"].tolist() == [0, 1, -1, -1, 0]
    cases = {}
    truncated = _write_scan(root, "00", "000001", _points(3))
    truncated.write_bytes(truncated.read_bytes()[:-5])  # 43 bytes: not a whole number of points
    cases["truncated"] = (truncated, truncated.name, "not a multiple of 16")
    mismatch = _write_scan(root, "00", "000002", _points(4), np.array([10, 40, 40]))
    cases["count"] = (mismatch, "000002.label", "3 labels but its scan has 4 points")
    unknown = _write_scan(root, "00", "000003", _points(3), np.array([10, 77 | (5 << 16), 40]))
    cases["unknown id"] = (unknown, "000003.label", "raw semantic ids [77]")
    odd = _write_scan(root, "00", "000004", _points(2), np.array([10, 40]))
    label = odd.parent.parent / "labels" / "000004.label"
    label.write_bytes(label.read_bytes()[:-1])
    cases["short label"] = (odd, "000004.label", "not a multiple of 4")
    for name, (path, needle_file, needle) in cases.items():
        with pytest.raises(FFNetError) as exc:
            load_scan(path)
        message = str(exc.value)
        assert needle_file in message and needle in message, (name, message)
        assert "\n" not in message
    (root / "semantic-kitti.yaml").unlink()
    with pytest.raises(FFNetError, match=r"semantic-kitti\.yaml: SemanticKITTI label file not found"):
        load_scan(good)
    (root / "semantic-kitti.yaml").write_text("learning_map: [1, 2]\n")
    with pytest.raises(FFNetError, match="no 'learning_map' mapping"):
        load_scan(good)


# -------------------------------------------------------------------------------------------------- split
def test_split_over_a_fake_tree_skips_absent_sequences_and_reads_test_without_labels(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path / "kitti")
    expected = {}
    for seq, frames, labelled in (("00", 2, True), ("05", 1, True), ("08", 1, True), ("11", 2, False),
                                  ("13", 0, False)):
        paths = [_write_scan(root, seq, f"{i:06d}", _points(3, i), np.array([10, 40, 0]) if labelled else None)
                 for i in range(frames)]
        expected[seq] = paths
    (root / "sequences" / "13" / "velodyne").mkdir(parents=True)  # an empty sequence folder
    (root / "sequences" / "00" / "velodyne" / ".000009.bin.tmp").write_bytes(b"")  # hidden temporaries skipped
    lines: list[str] = []
    assert list_scans(root, ["train"], log=lines.append) == expected["00"] + expected["05"]
    assert lines == [f"SemanticKITTI {root}: sequences 01, 02, 03, 04, 06, 07, 09, 10 of ['train'] not on disk, "
                     "skipped"]
    assert list_scans(root, ["val"]) == list_scans(root, ["valid"]) == list_scans(root, ["8"]) == expected["08"]
    assert list_scans(root, ["test"]) == expected["11"]
    assert list_scans(root, ["08", "11", "08"]) == expected["08"] + expected["11"]  # duplicates once
    test_scan = load_scan(expected["11"][0])
    assert "segment" not in test_scan and "instance" not in test_scan and len(test_scan["coord"]) == 3
    with pytest.raises(FFNetError, match=r"sequences: no scans for splits \['13'\]"):
        list_scans(root, ["13"])
    with pytest.raises(FFNetError, match="expected train, val, test or a sequence number"):
        list_scans(root, ["training"])
    shutil.rmtree(root / "sequences" / "08")
    with pytest.raises(FFNetError, match=str(root / "sequences")):
        list_scans(root, ["val"])  # a split with no scan at all names the folder


def test_semantickitti_dataset_through_the_app_builders(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path / "kitti")
    for i in range(2):
        _write_scan(root, "00", f"{i:06d}", _points(50, i), np.where(np.arange(50) % 2 == 0, 10, 40))
    _write_scan(root, "08", "000000", _points(40, 7), np.full(40, 252))
    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.num_classes = "semantickitti", str(root), 2
    cfg.data.class_names, cfg.data.feat_keys = ["car", "road"], ["coord", "strength"]
    cfg.data.train_splits, cfg.data.val_splits = ["train"], ["val"]
    clip = [{"type": "PointClip", "point_cloud_range": [-10, -10, -2, 10, 10, 2]}]
    cfg.data.train_transforms = clip + [{"type": "GridSample", "grid_size": 0.5}]
    cfg.data.val_transforms = cfg.data.train_transforms
    check_config(cfg)
    lines: list[str] = []
    raw = build_dataset(cfg, "val", log=lines.append)
    assert isinstance(raw, SemanticKittiDataset) and len(raw) == 1 and not lines
    assert raw[0]["segment"].tolist() == [0] * 40  # moving-car -> car
    train = build_dataset(cfg, "train", cfg.data.train_transforms, seed=0, log=lines.append)
    sample = train.sample(1, epoch=0)
    assert {"grid_coord", "strength", "segment"} <= set(sample) and np.abs(sample["coord"]).max() <= 10
    assert len(lines) == 1 and "skipped" in lines[0]
    cfg.data.num_classes, cfg.data.class_names = 1, ["car"]
    with pytest.raises(FFNetError, match="labels outside"):
        build_dataset(cfg, "train").raw(0)  # road (class 1) outside data.num_classes=1: named on load


# ---------------------------------------------------------------------------------------- prediction files
def _round_trip(scan_path: Path, tmp_path: Path) -> None:
    scan = load_scan(scan_path)
    meta = read_labels_yaml(scan_path.parents[3])
    out = prediction_path(tmp_path / "preds", scan_path)
    assert out == tmp_path / "preds" / "sequences" / scan_path.parent.parent.name / "predictions" / (
        scan_path.stem + ".label")
    write_prediction(out, scan["segment"], meta)
    raw = read_label_file(out, len(scan["coord"]))
    assert raw.dtype == np.uint32 and out.stat().st_size == 4 * len(scan["coord"])
    assert set(np.unique(raw).tolist()) <= {0, *meta.inverse.tolist()}  # only learning_map_inv targets
    learning_map = yaml.safe_load(meta.path.read_text())["learning_map"]
    again = np.array([learning_map[int(v)] - 1 for v in raw], dtype=np.int64)
    assert np.array_equal(again, scan["segment"])
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary left behind


def test_label_writer_round_trip_on_a_fake_scan(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path / "kitti")
    scan = _write_scan(root, "11", "000042", _points(6), np.array([10, 40, 252, 0, 1, 40]) | (3 << 16))
    _round_trip(scan, tmp_path)
    meta = read_labels_yaml(root)
    raw = read_label_file(write_prediction(tmp_path / "x.label", np.array([0, 1, -1]), meta))
    assert raw.tolist() == [10, 40, 0]  # moving-car came back as car: learning_map_inv has no moving classes
    with pytest.raises(ValueError, match=r"\[-1, 2\)"):
        write_prediction(tmp_path / "y.label", np.array([2]), meta)
    assert not (tmp_path / "y.label").exists()


@needs_kitti
def test_label_writer_round_trip_on_the_real_validation_scan(tmp_path: Path) -> None:
    _round_trip(KITTI / "sequences" / "08" / "velodyne" / "000000.bin", tmp_path)


def test_point_clip_clamps_and_keeps_every_point() -> None:
    data = {"coord": np.array([[-60.0, 0, 0], [1, 2, 3], [40, -40, -9]], dtype=np.float32),
            "segment": np.array([1, 2, 3])}
    out = build_transforms([{"type": "PointClip", "point_cloud_range": [-35.2, -35.2, -4, 35.2, 35.2, 2]}])(data)
    assert np.allclose(out["coord"], [[-35.2, 0, 0], [1, 2, 2], [35.2, -35.2, -4]])
    assert out["coord"].dtype == np.float32 and out["segment"].tolist() == [1, 2, 3]
    with pytest.raises(FFNetError, match="min < max"):
        build_transforms([{"type": "PointClip", "point_cloud_range": [0, 0, 0, -1, 1, 1]}], where="t")


# ------------------------------------------------------------------------------------ quick-start reporting
def test_bev_picture_orientation_colours_and_legend(tmp_path: Path) -> None:
    """A car point 10 m ahead must be painted above the centre of the ground-truth panel in the official car
    colour (BGR [245, 150, 100] in the YAML -> RGB), a road point 10 m to the left, left of it; the errors panel
    marks the wrong one red."""
    from PIL import Image

    from ffnet_pointcloud.kitti_report import write_bev

    meta = read_labels_yaml(_tiny_root(tmp_path / "kitti"))
    coord = np.array([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [-5.0, -5.0, 0.0]], dtype=np.float32)
    segment, pred = np.array([0, 1, -1]), np.array([0, 0, 1])
    png = write_bev(tmp_path / "bev.png", coord, segment, pred, meta, extent=20.0, pixel=1.0)
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB"))
    gap, header, size = 12, 36, 40  # the layout of write_bev at 2 x 20 m / 1 m per pixel

    def pixel(panel: int, x: float, y: float) -> list[int]:
        row, col = int(np.floor(20.0 - x)), int(np.floor(20.0 - y))
        return rgb[header + row, gap + panel * (size + gap) + col].tolist()

    assert pixel(0, 10, 0) == [100, 150, 245] and pixel(0, 0, 10) == [255, 0, 255]  # car ahead, road left
    assert pixel(0, -5, -5) == [70, 70, 70] and pixel(1, -5, -5) == [255, 0, 255]  # ignored gt, predicted road
    assert pixel(1, 0, 10) == [100, 150, 245]  # the road point predicted as car ...
    assert pixel(2, 0, 10) == [230, 40, 40] and pixel(2, 10, 0) == [60, 200, 90]  # ... is red in the errors
    assert rgb.shape[1] == 3 * size + 4 * gap


def test_baselines_majority_and_nearest_training_point() -> None:
    from ffnet_pointcloud.kitti_report import baseline_metrics, present_classes

    train = [{"coord": np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], dtype=np.float32),
              "segment": np.array([1, 1, 0])},
             {"coord": np.array([[9, 9, 9]], dtype=np.float32), "segment": np.array([-1])}]  # ignored: unused
    scan = {"coord": np.array([[0.1, 0, 0], [2.2, 0, 0], [8, 8, 8]], dtype=np.float32),
            "segment": np.array([1, 0, 0])}
    assert present_classes(scan["segment"], 3) == [0, 1]
    b = baseline_metrics(train, scan, 3, ["a", "b", "c"])
    assert b["majority"]["class"] == "b" and b["majority"]["allAcc"] == pytest.approx(1 / 3)
    # nearest: [0.1] -> b (right), [2.2] -> a (right), [8, 8, 8] -> a (its nearest labelled point is [2, 0, 0])
    assert b["nearest_training_point"]["allAcc"] == 1.0 and b["nearest_training_point"]["mIoU_present"] == 1.0
