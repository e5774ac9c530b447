"""Dataset layouts, raw preprocessing, PLY I/O, the synthetic generator and every bad-input case."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from ffnet_pointcloud.data.datasets import SceneDataset, dataset_info, load_scene, validate_scene
from ffnet_pointcloud.data.ply import read_ply, write_ply
from ffnet_pointcloud.data.synthetic import SYNTH_CLASSES, make_scene, write_scene
from ffnet_pointcloud.preprocess import main as preprocess_main
from ffnet_pointcloud.preprocess import mesh_vertex_normals
from metamixer.train.errors import FFNetError, run_cli


def _scene(n: int = 40, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "name": f"s{seed}",
        "coord": rng.random((n, 3)).astype(np.float32),
        "color": rng.integers(0, 255, (n, 3)).astype(np.float32),
        "normal": rng.normal(size=(n, 3)).astype(np.float32),
        "segment": rng.integers(0, 5, n),
    }


def test_synthetic_scene_labels_normals_and_determinism() -> None:
    a, b = make_scene(11, density=100), make_scene(11, density=100)
    assert np.array_equal(a["coord"], b["coord"]) and np.array_equal(a["segment"], b["segment"])
    assert set(np.unique(a["segment"])) == set(range(len(SYNTH_CLASSES)))
    assert np.allclose(np.linalg.norm(a["normal"], axis=1), 1, atol=1e-5)
    floor = a["segment"] == 0
    assert np.allclose(a["normal"][floor], [0, 0, 1]) and abs(a["coord"][floor, 2]).max() < 0.03
    # wall normals point into the room (towards the horizontal centre)
    wall = a["segment"] == 1
    centre = (a["coord"][:, :2].min(0) + a["coord"][:, :2].max(0)) / 2
    inward = ((centre - a["coord"][wall, :2]) * a["normal"][wall, :2]).sum(1)
    assert (inward > 0).mean() > 0.99
    assert a["color"].min() >= 0 and a["color"].max() <= 255


def test_layouts_scannet_s3dis_and_generic_folder(tmp_path: Path) -> None:
    s = _scene()
    # ScanNet: <root>/<split>/<scene>/segment20.npy
    d = tmp_path / "scannet" / "val" / "scene0000_00"
    d.mkdir(parents=True)
    for k in ("coord", "color", "normal"):
        np.save(d / f"{k}.npy", s[k])
    np.save(d / "segment20.npy", s["segment"])
    np.save(d / "segment200.npy", s["segment"] + 100)
    ds = SceneDataset(tmp_path / "scannet", ["val"], dataset_info("scannet")["segment_key"], num_classes=20)
    assert len(ds) == 1 and np.array_equal(ds[0]["segment"], s["segment"])
    ds200 = SceneDataset(
        tmp_path / "scannet", ["val"], dataset_info("scannet200")["segment_key"], num_classes=200
    )
    assert np.array_equal(ds200[0]["segment"], s["segment"] + 100)
    # S3DIS: <root>/Area_5/<room>/segment.npy; Area 5 is the default test split
    write_scene({**s, "name": "office_1"}, tmp_path / "s3dis" / "Area_5")
    info = dataset_info("s3dis")
    assert info["val"] == ["Area_5"] and len(info["class_names"]) == 13
    assert len(SceneDataset(tmp_path / "s3dis", info["val"], "segment", num_classes=13)) == 1
    # generic folder of files: .npy matrix, .txt, .npz and .ply
    g = tmp_path / "generic" / "train"
    g.mkdir(parents=True)
    mat = np.concatenate([s["coord"], s["color"], s["normal"], s["segment"][:, None]], 1)
    np.save(g / "a.npy", mat)
    np.savetxt(g / "b.txt", np.c_[s["coord"], s["color"], s["segment"]])
    np.savez(g / "c.npz", coord=s["coord"], color=s["color"], segment=s["segment"])
    c8 = s["color"].astype(np.uint8)
    write_ply(
        g / "d.ply",
        s["coord"],
        red=c8[:, 0],
        green=c8[:, 1],
        blue=c8[:, 2],
        label=s["segment"].astype(np.int32),
    )
    ds = SceneDataset(tmp_path / "generic", ["train"], num_classes=5)
    assert [Path(p).name for p in ds.paths] == ["a.npy", "b.txt", "c.npz", "d.ply"]
    for i in range(4):
        sc = ds[i]
        assert np.allclose(sc["coord"], s["coord"], atol=1e-5) and np.array_equal(sc["segment"], s["segment"])
        assert np.allclose(sc["color"], c8 if i == 3 else s["color"], atol=1e-3)
    assert "normal" in ds[0] and "normal" not in ds[1]


def test_ply_roundtrip_binary(tmp_path: Path) -> None:
    coord = np.random.default_rng(0).random((25, 3)).astype(np.float32)
    write_ply(
        tmp_path / "x.ply", coord, red=np.arange(25, dtype=np.uint8), pred=np.arange(25, dtype=np.int32)
    )
    v = read_ply(tmp_path / "x.ply")["vertex"]
    assert np.array_equal(np.stack([v["x"], v["y"], v["z"]], 1), coord)
    assert v["red"].dtype == np.uint8 and v["pred"].tolist() == list(range(25))


def _write_mesh_ply(path: Path, verts: np.ndarray, colors: np.ndarray, faces: np.ndarray) -> None:
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(verts)}\nproperty float x\n"
        "property float y\nproperty float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"property uchar alpha\nelement face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode())
        for v, c in zip(verts, colors):
            f.write(struct.pack("<fffBBBB", *v, *c, 255))
        for tri in faces:
            f.write(struct.pack("<Biii", 3, *tri))


def test_preprocess_scannet_raw_and_s3dis_raw(tmp_path: Path) -> None:
    # a 2x2 square of two triangles in the z=0 plane: normals +z; NYU40 labels 1 (wall), 5 (chair), 13 (ignored)
    scene = tmp_path / "scans" / "scene0001_00"
    scene.mkdir(parents=True)
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)
    colors = np.array([[10, 20, 30]] * 4, dtype=np.uint8)
    _write_mesh_ply(scene / "scene0001_00_vh_clean_2.ply", verts, colors, np.array([[0, 1, 2], [0, 2, 3]]))
    labels = (
        "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
        "property ushort label\nend_header\n0 0 0 1\n1 0 0 5\n1 1 0 13\n0 1 0 39\n"
    )
    (scene / "scene0001_00_vh_clean_2.labels.ply").write_text(labels)
    assert (
        preprocess_main(
            [
                "scannet",
                "--input",
                str(tmp_path / "scans"),
                "--output",
                str(tmp_path / "out"),
                "--split",
                "val",
            ]
        )
        == 0
    )
    out = tmp_path / "out" / "val" / "scene0001_00"
    assert np.load(out / "segment20.npy").tolist() == [0, 4, -1, 19]
    assert np.allclose(np.load(out / "normal.npy"), [0, 0, 1])
    assert np.array_equal(np.load(out / "coord.npy"), verts)
    # S3DIS raw: Area_5/office_1/Annotations/<class>_<i>.txt; 'stairs' maps to clutter
    ann = tmp_path / "s3dis_raw" / "Area_5" / "office_1" / "Annotations"
    ann.mkdir(parents=True)
    rng = np.random.default_rng(0)
    floor = np.c_[rng.random((400, 2)) * 3, np.zeros(400), np.full((400, 3), 100)]
    chair = np.c_[rng.random((30, 3)) * 0.5 + 1, np.full((30, 3), 50)]
    np.savetxt(ann / "floor_1.txt", floor)
    np.savetxt(ann / "chair_1.txt", chair)
    np.savetxt(ann / "stairs_1.txt", chair[:5])
    assert (
        preprocess_main(
            ["s3dis", "--input", str(tmp_path / "s3dis_raw"), "--output", str(tmp_path / "s3dis")]
        )
        == 0
    )
    room = load_scene(tmp_path / "s3dis" / "Area_5" / "office_1")
    assert np.bincount(room["segment"], minlength=13)[[1, 8, 12]].tolist() == [400, 30, 5]
    n_floor = room["normal"][room["segment"] == 1]
    assert np.median(n_floor[:, 2]) > 0.999  # PCA normals of the plane, oriented up towards the room centre


def test_mesh_normals_of_a_tetrahedron_corner() -> None:
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    n = mesh_vertex_normals(verts, np.array([[0, 1, 2]]))
    assert np.allclose(n, [0, 0, 1])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["coord"].__setitem__((3, 1), np.nan), "NaN/inf coordinates"),
        (
            lambda s: s.update(
                coord=np.zeros((0, 3), np.float32),
                color=np.zeros((0, 3)),
                normal=np.zeros((0, 3)),
                segment=np.zeros(0, np.int64),
            ),
            "empty",
        ),
        (lambda s: s.update(color=s["color"][:-2]), "mismatched"),
        (lambda s: s.update(segment=np.r_[s["segment"][:-1], 7]), r"outside \[0, 5\)"),
        (lambda s: s.update(segment=np.r_[s["segment"][:-1], -3]), r"outside \[0, 5\)"),
        (lambda s: s.update(coord=s["coord"][:, :2]), r"\[N, 3\]"),
    ],
)
def test_bad_scenes_raise_clear_errors(mutate, message: str) -> None:
    s = _scene()
    mutate(s)
    with pytest.raises(FFNetError, match=message) as info:
        validate_scene(s, num_classes=5, ignore_index=-1)
    assert "s0" in str(info.value)  # the scene is named


def test_ignore_label_is_accepted() -> None:
    s = _scene()
    s["segment"][:3] = -1
    validate_scene(s, num_classes=5, ignore_index=-1)


def test_bad_scene_on_disk_gives_one_line_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A NaN scene in a dataset stops the CLI with exit code 2 and one line naming the scene."""
    from ffnet_pointcloud.train import main as train_main

    s = _scene()
    s["coord"][0, 0] = np.nan
    write_scene({**s, "name": "broken_scene"}, tmp_path / "data" / "train")
    write_scene(_scene(seed=1), tmp_path / "data" / "val")
    cli = run_cli(train_main)
    with pytest.raises(SystemExit) as exc:
        cli(
            [
                f"run.output_dir={tmp_path / 'run'}",
                "data.dataset=folder",
                f"data.root={tmp_path / 'data'}",
                "data.num_classes=5",
                "data.class_names=[a,b,c,d,e]",
                "train.epochs=1",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1  # (a progress bar may precede it)
    assert "broken_scene" in errors[0] and "NaN" in errors[0]


def test_missing_dataset_and_unknown_key_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ffnet_pointcloud.train import main as train_main

    cli = run_cli(train_main)
    with pytest.raises(SystemExit):
        cli(
            [
                f"run.output_dir={tmp_path / 'run'}",
                "data.dataset=scannet",
                f"data.root={tmp_path / 'nope'}",
                "data.num_classes=20",
            ]
        )
    assert "data.root not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["train.learning_rate=0.1"])
    assert "learning_rate" in capsys.readouterr().err


def test_unsupported_precisions_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ffnet_pointcloud.train import main as train_main

    cli = run_cli(train_main)
    for precision, message in (("bf16", "no bfloat16"), ("fp16", "needs a CUDA")):
        with pytest.raises(SystemExit):
            cli([f"run.output_dir={tmp_path}", f"run.precision={precision}", "run.device=cpu"])
        assert message in capsys.readouterr().err
