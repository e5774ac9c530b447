"""The point-cloud CLIs on bad input, each in a fresh interpreter (issue 23): a raw dataset folder with broken
scenes (ffnet-pc-preprocess goes on, names each, exits 1, leaves no half-written scene), corrupt preprocessed
scene files under train (loader workers) and eval (every bad scene named, nothing evaluated), and option values
out of range, bad transform options (GridSample hash_type, SphereCrop 'all' in training), ffnet-pc-predict's
--input and ffnet-pc-preprocess's --labels-tsv (exit 2, one line naming the option, nothing written)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from corpus import _WritesMarker, assert_one_line_error, run_cli

pytest.importorskip("ffnet_pointcloud")
pytest.importorskip("spconv")

from ffnet_pointcloud.data.ply import write_ply  # noqa: E402
from ffnet_pointcloud.data.synthetic import make_scene, write_scene  # noqa: E402

pytestmark = pytest.mark.timeout(600)

#: a voxel size large enough for a few hundred voxels per synthetic room (fast on CPU)
GRID = "[{type: GridSample, grid_size: 0.25}, {type: NormalizeColor}]"


def _dead_pid() -> int:
    """The id of a process that has exited (what an interrupted run leaves in its temporaries' names)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------------------- raw folders
def _raw_scene(root: Path, name: str, n: int = 40, seed: int = 0, labels: int | None = None,
               nan_row: int | None = None) -> dict[str, np.ndarray]:
    """A ScanNet-layout raw scene (mesh point cloud + NYU40 label PLY) written with the app's own writer."""
    rng = np.random.default_rng(seed)
    coord = rng.random((n, 3)).astype(np.float32) * 2
    if nan_row is not None:
        coord[nan_row, 1] = np.nan
    color = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    nyu = rng.choice([1, 2, 5, 13, 39], n).astype(np.uint16)  # 13 is no benchmark class: -1
    folder = root / name
    write_ply(folder / f"{name}_vh_clean_2.ply", coord, red=color[:, 0], green=color[:, 1], blue=color[:, 2])
    m = n if labels is None else labels
    write_ply(folder / f"{name}_vh_clean_2.labels.ply", coord[:m], label=nyu[:m])
    return {"coord": coord, "nyu": nyu}


#: bad raw scene -> what its error line must say
RAW_BAD = {
    "scene0002_00": "truncated",
    "scene0003_00": "not a valid PLY header",
    "scene0004_00": "empty file",
    "scene0005_00": "30 labels but the mesh",
    "scene0006_00": "NaN/inf coordinates",
}


def _raw_scannet(root: Path) -> dict[str, dict[str, np.ndarray]]:
    good = {name: _raw_scene(root, name, seed=i) for i, name in enumerate(("scene0000_00", "scene0001_00"))}
    mesh = root / "scene0002_00" / "scene0002_00_vh_clean_2.ply"
    _raw_scene(root, "scene0002_00")
    mesh.write_bytes(mesh.read_bytes()[: mesh.stat().st_size // 2])
    for name, content in (("scene0003_00", b"solid cube\nfacet normal 0 0 1\n"), ("scene0004_00", b"")):
        (root / name).mkdir(parents=True)
        (root / name / f"{name}_vh_clean_2.ply").write_bytes(content)  # an STL text file / an empty file
    _raw_scene(root, "scene0005_00", labels=30)
    _raw_scene(root, "scene0006_00", nan_row=7)
    return good


def test_preprocess_goes_past_bad_scenes_names_each_and_writes_the_rest(tmp_path: Path) -> None:
    good = _raw_scannet(tmp_path / "scans")
    split = tmp_path / "out" / "val"
    # what an earlier run left: a complete scene0002_00 (the failed re-run must not destroy it) and the
    # temporary of a run killed mid-write (must be removed, never read as a scene)
    earlier = write_scene(make_scene(1, density=5, name="scene0002_00"), split, segment_key="segment20")
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    stale = split / f".scene0000_00.tmp-{_dead_pid()}"
    stale.mkdir()
    (stale / "coord.npy").write_bytes(b"\x93NUMPY half")

    result = run_cli("ffnet-pc-preprocess", "scannet", "--input", str(tmp_path / "scans"), "--output",
                     str(tmp_path / "out"), "--split", "val")

    where = f"stdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.returncode == 1, where
    assert "Traceback" not in result.stderr, where
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in lines), where
    assert len(lines) == len(RAW_BAD) + 1, where  # one line per bad scene, then the summary
    for name, needle in RAW_BAD.items():
        own = [line for line in lines[:-1] if f"scans/{name}/{name}_vh_clean_2" in line]
        assert len(own) == 1 and needle in own[0], (name, lines)
    assert f"{len(RAW_BAD)} of 7 scenes failed" in lines[-1]
    assert all(f"scans/{name}" in lines[-1] for name in RAW_BAD)
    # the good scenes are complete and right; the bad ones left nothing, the earlier copy is untouched
    for name, raw in good.items():
        assert np.array_equal(np.load(split / name / "coord.npy"), raw["coord"])
        lut = {1: 0, 2: 1, 5: 4, 13: -1, 39: 19}
        assert np.load(split / name / "segment20.npy").tolist() == [lut[int(v)] for v in raw["nyu"]]
    assert sorted(p.name for p in split.iterdir()) == ["scene0000_00", "scene0001_00", "scene0002_00"]
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before
    assert "wrote 2 of 7 scenes" in result.stdout


def test_preprocess_s3dis_rooms_with_unreadable_annotations(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    area = tmp_path / "raw" / "Area_1"
    floor = np.c_[rng.random((60, 2)) * 3, np.zeros(60), np.full((60, 3), 90.0)]
    nan = floor.copy()
    nan[5, 0] = np.nan
    rooms = {"office_1": {"floor_1.txt": floor, "chair_1.txt": floor[:8] + 1},
             "office_2": {"floor_1.txt": floor, "chair_1.txt": "0.1 0.2 0.3 r g b\n"},
             "office_3": {"floor_1.txt": nan}}
    for room, files in rooms.items():
        (area / room / "Annotations").mkdir(parents=True)
        for name, rows in files.items():
            path = area / room / "Annotations" / name
            path.write_text(rows) if isinstance(rows, str) else np.savetxt(path, rows)
    out = tmp_path / "s3dis"
    result = run_cli("ffnet-pc-preprocess", "s3dis", "--input", str(tmp_path / "raw"), "--output", str(out))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(lines) == 3, result.stderr
    assert "office_2/Annotations/chair_1.txt: not a text matrix of numbers" in lines[0]
    assert "office_3/Annotations/floor_1.txt: 1 of 60 points have NaN/inf" in lines[1]
    assert "2 of 3 scenes failed" in lines[2]
    assert sorted(p.name for p in (out / "Area_1").iterdir()) == ["office_1"]
    assert len(np.load(out / "Area_1" / "office_1" / "segment.npy")) == 68


# --------------------------------------------------------------------------------- preprocessed scene files
def _corrupt(scene: Path, kind: str, marker: Path) -> str:
    """Damage one preprocessed scene folder; returns the file its message must name."""
    coord = scene / "coord.npy"
    if kind == "truncated":
        coord.write_bytes(coord.read_bytes()[: coord.stat().st_size // 2])
    elif kind == "text":
        coord.write_text("x y z\n0 0 0\n")
    elif kind == "empty":
        coord.write_bytes(b"")
    elif kind == "pickled":  # unpickling it would write the marker: it must never be loaded
        np.save(coord, np.array([_WritesMarker(marker)], dtype=object), allow_pickle=True)
    elif kind == "nan":
        values = np.load(coord)
        values[3, 2] = np.nan
        np.save(coord, values)
        return str(scene)
    elif kind == "labels":
        labels = scene / "segment.npy"
        np.save(labels, np.load(labels)[:-5])
        return str(scene)
    return str(coord)


#: corruption -> what its message says
SCENE_BAD = {"truncated": "truncated", "text": "not a .npy file", "empty": "empty file", "pickled": "pickled",
             "nan": "NaN/inf coordinates", "labels": "mismatched arrays"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) ffnet3d_tiny checkpoint whose stored config evaluates the folder ``data`` beside it."""
    from ffnet_pointcloud.config import Config, DataConfig
    from ffnet_pointcloud.runtime import build_model
    from metamixer.train.checkpoint import save_checkpoint
    from metamixer.train.sections import RunConfig

    root = tmp_path_factory.mktemp("pc_ckpt")
    cfg = Config(run=RunConfig(device="cpu", threads=1),
                 data=DataConfig(dataset="folder", root=str(root / "data"), num_classes=6, test_grid_size=0.25,
                                 tta_views=[[]], val_transforms=[]))
    return save_checkpoint(root / "last.pth", model=build_model(cfg), config=cfg)


def test_eval_names_every_bad_scene_in_one_line_and_writes_nothing(checkpoint: Path, tmp_path: Path) -> None:
    val = checkpoint.parent / "data" / "val"
    write_scene(make_scene(0, density=10), val)
    expected = {}
    for i, kind in enumerate(SCENE_BAD):
        scene = write_scene(make_scene(10 + i, density=10, name=f"bad_{kind}"), val)
        expected[kind] = _corrupt(scene, kind, tmp_path / "PICKLED_CODE_RAN")
    out, ply = tmp_path / "eval" / "results.json", tmp_path / "ply"
    result = run_cli("ffnet-pc-eval", "--checkpoint", str(checkpoint), "--output", str(out), "--ply", str(ply))
    line = assert_one_line_error(result, f"{len(SCENE_BAD)} of {len(SCENE_BAD) + 1} evaluation scenes",
                                 "nothing was evaluated")
    for kind, path in expected.items():
        assert f"{path}: " in line and SCENE_BAD[kind] in line, (kind, line)
    assert not out.parent.exists() and not ply.exists()
    assert not (tmp_path / "PICKLED_CODE_RAN").exists()


def test_train_names_a_corrupt_scene_read_by_a_loader_worker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for split, seed in (("train", 0), ("val", 1)):
        write_scene(make_scene(seed, density=10), data / split)
    bad = _corrupt(write_scene(make_scene(5, density=10, name="broken"), data / "train"), "truncated", tmp_path)
    run = tmp_path / "run"
    result = run_cli("ffnet-pc-train", "synthetic_cpu", "data.dataset=folder", f"data.root={data}",
                     f"run.output_dir={run}", "data.num_workers=2", "train.batch_size=1", "train.epochs=1",
                     "train.progress=false", f"data.train_transforms={GRID}", f"data.val_transforms={GRID}")
    assert_one_line_error(result, bad, "truncated")
    assert "DataLoader worker" not in result.stderr
    assert not list(run.glob("*.pth"))


# ------------------------------------------------------------------------------------------- option values
def _recipe(tmp_path: Path) -> str:
    recipe = tmp_path / "zero_grid.yaml"
    recipe.write_text("data:\n  train_transforms:\n    - {type: CenterShift}\n    - {type: GridSample, grid_size: 0}\n")
    return str(recipe)


#: (script, arguments, what the line must name); {run}/{data}: paths that must stay absent, {ckpt}, {recipe},
#: {tmp}: the test's folder ({{ }}: a literal brace)
OPTIONS = [
    ("ffnet-pc-train", ["synthetic_cpu", "train.batch_size=0"], "train.batch_size"),
    ("ffnet-pc-train", ["synthetic_cpu", "optim.lr=.nan"], "optim.lr"),
    ("ffnet-pc-train", ["synthetic_cpu", "train.epochs=-1"], "train.epochs"),
    ("ffnet-pc-train", ["{recipe}"], "data.train_transforms[1] (GridSample): grid_size must be a finite number > 0"),
    ("ffnet-pc-train", ["synthetic_cpu", "data.num_classes=5"], "data.num_classes=5 but 6 class names"),
    ("ffnet-pc-eval", ["--checkpoint", "{ckpt}", "--output", "{run}/r.json", "data.num_classes=5"],
     "data.num_classes=5 but"),
    ("ffnet-pc-synth", ["--output", "{data}", "--train", "0"], "--train must be an integer >= 1"),
    ("ffnet-pc-synth", ["--output", "{data}", "--density", "nan"], "--density must be a finite number > 0"),
    ("ffnet-pc-preprocess", ["s3dis", "--input", "{recipe}", "--output", "{data}"], "--input folder not found"),
    ("ffnet-pc-quickstart", ["--output", "{run}", "--epochs", "0"], "--epochs must be an integer >= 1"),
    ("ffnet-pc-train", ["synthetic_cpu", "data.train_transforms=[{{type: GridSample, grid_size: 0.1, hash_type: md5}}]"],
     "data.train_transforms[0] (GridSample): hash_type must be one of ravel, fnv"),
    ("ffnet-pc-train", ["synthetic_cpu", "data.train_transforms=[{{type: GridSample, grid_size: 0.1}}, "
                        "{{type: SphereCrop, point_max: 100, mode: all}}]"],
     "data.train_transforms[1] (SphereCrop): mode 'all' returns a list of crops"),
    ("ffnet-pc-predict", ["--checkpoint", "{ckpt}", "--output", "{run}", "--input", "{recipe}"],
     "zero_grid.yaml: not a folder; expected a folder of scenes"),
    ("ffnet-pc-preprocess", ["scannet", "--input", "{tmp}", "--output", "{data}", "--labels-tsv", "{tmp}/none.tsv"],
     "--labels-tsv"),
]


@pytest.mark.parametrize(("script", "args", "needle"), OPTIONS, ids=[f"{s}:{a[-1]}" for s, a, _ in OPTIONS])
def test_bad_option_values_give_one_line_and_write_nothing(script: str, args: list[str], needle: str,
                                                           checkpoint: Path, tmp_path: Path) -> None:
    run, data = tmp_path / "run", tmp_path / "data"
    values = {"run": run, "data": data, "ckpt": checkpoint, "recipe": _recipe(tmp_path), "tmp": tmp_path}
    argv = [a.format(**values) for a in args]
    if script == "ffnet-pc-train":
        argv += [f"run.output_dir={run}", f"data.root={data}"]
    assert_one_line_error(run_cli(script, *argv), needle)
    assert not run.exists() and not data.exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("ffnet-pc-synth", "--output", str(tmp_path / "d"), "--val", "-1", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr and "--val must be" in result.stderr
