"""PLY I/O through plyfile: round trips in every encoding, files from other tools, and one clear error per bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from ffnet_pointcloud.data.datasets import load_scene
from ffnet_pointcloud.data.ply import read_ply, write_ply
from metamixer.train.errors import FFNetError


def _cloud(n: int = 30) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    coord = (rng.random((n, 3)) * 10 - 5).astype(np.float32)
    props = {
        "red": rng.integers(0, 256, n).astype(np.uint8),
        "label": rng.integers(-1, 20, n).astype(np.int32),
        "score": rng.random(n),  # float64 is a PLY type (double): kept
    }
    return coord, props


def test_write_read_binary_little_endian_is_exact(tmp_path: Path) -> None:
    coord, props = _cloud()
    path = write_ply(tmp_path / "sub" / "a.ply", coord, **props)
    assert open(path, "rb").read(40).startswith(b"ply\nformat binary_little_endian 1.0\n")
    v = read_ply(path)["vertex"]
    assert list(v) == ["x", "y", "z", "red", "label", "score"]
    assert np.array_equal(np.stack([v["x"], v["y"], v["z"]], 1), coord)
    for k, want in props.items():
        assert v[k].dtype == want.dtype and np.array_equal(v[k], want), k


def test_write_casts_types_ply_cannot_store(tmp_path: Path) -> None:
    coord, _ = _cloud(5)
    path = write_ply(
        tmp_path / "a.ply", coord.astype(np.float64), idx=np.arange(5, dtype=np.int64), flag=np.ones(5, bool)
    )
    v = read_ply(path)["vertex"]
    assert v["x"].dtype == np.float32 and v["idx"].dtype == np.int32 and v["flag"].dtype == np.int32
    assert v["idx"].tolist() == [0, 1, 2, 3, 4] and v["flag"].tolist() == [1] * 5


@pytest.mark.parametrize("text, order", [(True, "="), (False, ">")], ids=["ascii", "big_endian"])
def test_ascii_and_big_endian_read_back_in_native_order(tmp_path: Path, text: bool, order: str) -> None:
    coord, props = _cloud()
    write_ply(tmp_path / "le.ply", coord, **props)
    src = PlyData.read(str(tmp_path / "le.ply"))
    PlyData(src.elements, text=text, byte_order=order).write(str(tmp_path / "other.ply"))
    header = open(tmp_path / "other.ply", "rb").read(40)
    assert (b"format ascii" if text else b"format binary_big_endian") in header
    v = read_ply(tmp_path / "other.ply")["vertex"]
    assert np.array_equal(np.stack([v["x"], v["y"], v["z"]], 1), coord)  # %.18g ascii keeps float32 exact
    for k, want in props.items():
        assert v[k].dtype.isnative and v[k].dtype == want.dtype and np.array_equal(v[k], want), k


def _mesh(path: Path, faces: list[list[int]], text: bool = False) -> None:
    """A mesh as other tools write it: normals, uchar colours + alpha, a face list, written by plyfile itself."""
    dt = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f4"), ("ny", "f4"), ("nz", "f4")]
    dt += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    vert = np.array(
        [(0, 0, 0, 0, 0, 1, 10, 20, 30, 255), (1, 0, 0, 0, 0, 1, 40, 50, 60, 255),
         (1, 1, 0, 0, 0, 1, 70, 80, 90, 255), (0, 1, 0, 0, 0, 1, 200, 210, 220, 255)],
        dtype=dt,
    )  # fmt: skip
    face = np.empty(len(faces), dtype=[("vertex_indices", "O")])
    for i, f in enumerate(faces):
        face["vertex_indices"][i] = np.array(f, dtype=np.int32)
    elements = [
        PlyElement.describe(vert, "vertex"),
        PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"}),
    ]
    PlyData(elements, text=text, comments=["written by another tool"]).write(str(path))


@pytest.mark.parametrize("text", [False, True], ids=["binary", "ascii"])
def test_reads_plyfile_mesh_with_normals_colours_and_faces(tmp_path: Path, text: bool) -> None:
    _mesh(tmp_path / "m.ply", [[0, 1, 2], [0, 2, 3]], text=text)
    ply = read_ply(tmp_path / "m.ply")
    v = ply["vertex"]
    assert (
        v["red"].dtype == np.uint8
        and v["blue"].tolist() == [30, 60, 90, 220]
        and v["alpha"].tolist() == [255] * 4
    )
    assert ply["face"]["vertex_indices"].tolist() == [[0, 1, 2], [0, 2, 3]]  # triangles: one [F, 3] array
    scene = load_scene(tmp_path / "m.ply")  # the app's generic .ply scene path picks normals and colours up
    assert np.array_equal(scene["normal"], np.tile([0, 0, 1], (4, 1)))
    assert scene["color"][3].tolist() == [200, 210, 220] and scene["coord"].dtype == np.float32


def test_mixed_polygons_keep_one_array_per_face(tmp_path: Path) -> None:
    _mesh(tmp_path / "m.ply", [[0, 1, 2], [0, 1, 2, 3]])
    faces = read_ply(tmp_path / "m.ply")["face"]["vertex_indices"]
    assert faces.dtype == object and [f.tolist() for f in faces] == [[0, 1, 2], [0, 1, 2, 3]]


def _one_line_error(path: Path) -> str:
    with pytest.raises(FFNetError) as info:
        read_ply(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


def test_truncated_and_non_ply_files_give_one_clear_message(tmp_path: Path) -> None:
    coord, props = _cloud()
    data = write_ply(tmp_path / "a.ply", coord, **props).read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[:-7])
    assert "truncated or malformed PLY data" in _one_line_error(tmp_path / "cut.ply")
    assert "element 'vertex'" in _one_line_error(tmp_path / "cut.ply")
    (tmp_path / "head.ply").write_bytes(data[:40])  # the header itself stops before end_header
    assert "not a valid PLY header" in _one_line_error(tmp_path / "head.ply")
    (tmp_path / "notes.ply").write_text("x,y,z\n1,2,3\n")
    msg = _one_line_error(tmp_path / "notes.ply")
    assert "expected 'ply'" in msg and "end_header" in msg
    (tmp_path / "junk.ply").write_bytes(bytes(range(128, 256)))
    assert "not a PLY file" in _one_line_error(tmp_path / "junk.ply")
    with pytest.raises(FFNetError, match="PLY file not found"):
        read_ply(tmp_path / "missing.ply")


def test_write_rejects_bad_shapes_by_name(tmp_path: Path) -> None:
    coord, _ = _cloud(4)
    with pytest.raises(FFNetError, match=r"coord must be \[N, 3\]"):
        write_ply(tmp_path / "a.ply", coord[:, :2])
    with pytest.raises(FFNetError, match="property 'label' has shape"):
        write_ply(tmp_path / "a.ply", coord, label=np.zeros(3))
    with pytest.raises(FFNetError, match="clashes"):
        write_ply(tmp_path / "a.ply", coord, x=np.zeros(4))
    assert not (tmp_path / "a.ply").exists()


def test_scannet_preprocess_names_a_non_triangle_mesh(tmp_path: Path) -> None:
    from ffnet_pointcloud.preprocess import preprocess_scannet_scene

    scene = tmp_path / "scene0000_00"
    scene.mkdir()
    _mesh(scene / "scene0000_00_vh_clean_2.ply", [[0, 1, 2, 3]])
    with pytest.raises(FFNetError, match="scene0000_00_vh_clean_2.ply: expected a triangle mesh"):
        preprocess_scannet_scene(scene, tmp_path / "out")
