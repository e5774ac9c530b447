"""Predictions for unlabelled scenes (issue 26): ffnet-pc-predict on a ScanNet test split and on a folder of one's
own scans writes <scene>_pred.npy (the model's fragment/TTA argmax on every point) and the benchmark's
submit/<scene>.txt in ORIGINAL label ids; a second run skips what is done, an interrupted run resumes; evaluation
of an unlabelled split points to predict. ScanNet200: the official class table and segment200 preprocessing from
a tiny fake raw scene (aggregation + over-segmentation JSON + the label TSV)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from metamixer.nn.sparse import spconv_available

pytestmark = pytest.mark.skipif(not spconv_available(), reason="spconv not installed (pip install metamixer[sparse])")

from ffnet_pointcloud.config import Config, DataConfig  # noqa: E402
from ffnet_pointcloud.data.datasets import SceneDataset, dataset_info, load_scene  # noqa: E402
from ffnet_pointcloud.data.ply import write_ply  # noqa: E402
from ffnet_pointcloud.data.scannet_classes import (  # noqa: E402
    SCANNET20_IDS,
    SCANNET200_CLASSES,
    SCANNET200_IDS,
    SCANNET200_TABLE,
)
from ffnet_pointcloud.data.synthetic import make_scene, write_scene  # noqa: E402
from ffnet_pointcloud.evaluate import build_tester, load_run  # noqa: E402
from ffnet_pointcloud.predict import outputs_complete, predict_scenes, scene_outputs  # noqa: E402
from ffnet_pointcloud.preprocess import read_label_table, scannet_scene_arrays  # noqa: E402
from ffnet_pointcloud.runtime import build_model  # noqa: E402
from metamixer.train.checkpoint import save_checkpoint  # noqa: E402
from metamixer.train.sections import RunConfig  # noqa: E402

SCENES = ("scene0707_00", "scene0708_00", "scene0709_00")


def _cli(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(script)
    if not exe.exists():
        pytest.skip(f"{script} not installed next to the interpreter")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env)


def _unlabelled(folder: Path, seed: int, name: str, density: float = 10) -> Path:
    """A preprocessed scene without any label array (what a ScanNet test scene looks like)."""
    scene = write_scene(make_scene(seed, density=density, name=name), folder)
    (scene / "segment.npy").unlink()
    return scene


def _checkpoint(root: Path, dataset: str = "scannet", num_classes: int = 20) -> Path:
    """An (untrained) ffnet3d_tiny checkpoint whose config predicts ``root/data`` with 2 TTA views."""
    cfg = Config(run=RunConfig(device="cpu", threads=1),
                 data=DataConfig(dataset=dataset, root=str(root / "data"), num_classes=num_classes,
                                 test_grid_size=0.25, tta_views=[[], [{"type": "RandomFlip", "p": 1}]],
                                 val_transforms=[]))
    return save_checkpoint(root / "best.pth", model=build_model(cfg), config=cfg)


@pytest.fixture(scope="module")
def scannet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pc_predict")
    for i, name in enumerate(SCENES):
        _unlabelled(root / "data" / "test", 40 + i, name)
    _checkpoint(root)
    return root


def _expected_pred(checkpoint: Path, scene_dir: Path) -> np.ndarray:
    """The model's fragment/TTA argmax on the scene, computed here in-process."""
    cfg, model = load_run(str(checkpoint), None, [])
    model.eval()
    probs, votes = build_tester(cfg, next(model.parameters()).device)(model, load_scene(scene_dir, "x"))
    assert votes.min() >= 2
    return probs.argmax(1)


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*")) if p.is_file()}


def test_predict_unlabelled_split_writes_pred_and_scannet_submission(scannet: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds"
    result = _cli("ffnet-pc-predict", "--checkpoint", str(scannet / "best.pth"), "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 scenes predicted, 0 already done (skipped)" in result.stdout
    for name in SCENES:
        scene_dir = scannet / "data" / "test" / name
        pred = np.load(out / f"{name}_pred.npy")
        n = len(np.load(scene_dir / "coord.npy"))
        assert pred.shape == (n,) and pred.dtype == np.int64 and 0 <= pred.min() and pred.max() < 20
        assert np.array_equal(pred, _expected_pred(scannet / "best.pth", scene_dir))
        lines = (out / "submit" / f"{name}.txt").read_text().splitlines()
        assert [int(v) for v in lines] == [SCANNET20_IDS[c] for c in pred]  # original NYU40 ids, one per point
        assert set(int(v) for v in lines) <= set(SCANNET20_IDS) and not {0, 13, 40} & set(int(v) for v in lines)
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{n}_pred.npy" for n in SCENES), "submit"])

    # a second run finds every scene done: nothing is predicted or rewritten
    before = _mtimes(out)
    again = _cli("ffnet-pc-predict", "--checkpoint", str(scannet / "best.pth"), "--output", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 scenes predicted, 3 already done (skipped)" in again.stdout
    assert again.stdout.count("already predicted") == 3 and _mtimes(out) == before


def test_an_interrupted_run_resumes_where_it_stopped(scannet: Path, tmp_path: Path) -> None:
    """What a kill leaves: a scene with its .txt but no _pred.npy (killed between the two writes), a short
    _pred.npy (a file restored by hand), an unrenamed temporary of a dead process. The re-run predicts exactly
    those two scenes again, keeps the complete one untouched and removes the temporary."""
    out = tmp_path / "preds"
    args = ("--checkpoint", str(scannet / "best.pth"), "--output", str(out))
    assert _cli("ffnet-pc-predict", *args).returncode == 0
    first = {name: np.load(out / f"{name}_pred.npy") for name in SCENES}
    (out / f"{SCENES[0]}_pred.npy").unlink()
    short = out / f"{SCENES[1]}_pred.npy"
    short.write_bytes(short.read_bytes()[:-40])
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = out / "submit" / f".{SCENES[0]}.txt.{dead.pid}.0a1b2c3d.tmp"
    stale.write_text("1\n2\n")
    kept = (out / f"{SCENES[2]}_pred.npy").stat().st_mtime_ns
    result = _cli("ffnet-pc-predict", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 scenes predicted, 1 already done (skipped)" in result.stdout
    assert "removed 1 unfinished temporary files" in result.stdout and not stale.exists()
    assert (out / f"{SCENES[2]}_pred.npy").stat().st_mtime_ns == kept
    for name in SCENES:
        assert np.array_equal(np.load(out / f"{name}_pred.npy"), first[name])
        assert outputs_complete(scene_outputs("scannet", out, scannet / "data" / "test" / name, name))


def test_a_killed_process_resumes(tmp_path: Path) -> None:
    """SIGKILL in the middle of a real run (as soon as its first scene is written), then the same command: the
    scenes complete at the kill are skipped, the rest are predicted, every scene ends complete."""
    root = tmp_path / "run"
    names = [f"scene08{i:02d}_00" for i in range(6)]
    for i, name in enumerate(names):
        _unlabelled(root / "data" / "test", 60 + i, name, density=40)
    checkpoint = _checkpoint(root)
    out = tmp_path / "preds"
    exe = Path(sys.executable).with_name("ffnet-pc-predict")
    if not exe.exists():
        pytest.skip("ffnet-pc-predict not installed next to the interpreter")
    proc = subprocess.Popen([str(exe), "--checkpoint", str(checkpoint), "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 240
    while proc.poll() is None and not list(out.glob("*_pred.npy")) and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    plan = {n: scene_outputs("scannet", out, root / "data" / "test" / n, n) for n in names}
    complete = [n for n in names if outputs_complete(plan[n])]
    assert complete  # the kill came after the first scene (or the run had finished: still a valid re-run)
    result = _cli("ffnet-pc-predict", "--checkpoint", str(checkpoint), "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(names) - len(complete)} scenes predicted, {len(complete)} already done (skipped)" in result.stdout
    assert all(outputs_complete(plan[n]) for n in names)
    assert not list(out.rglob(".*.tmp"))


def test_predict_own_scans_folder_with_one_bad_file(scannet: Path, tmp_path: Path) -> None:
    """--input: a folder of one's own scans (text matrices x y z r g b nx ny nz, no labels) and a broken file:
    the good ones are predicted, the broken one is named on its own line, exit 1."""
    scans = tmp_path / "my scans"
    scans.mkdir()
    for i in range(2):
        s = make_scene(70 + i, density=10)
        np.savetxt(scans / f"room{i}.txt", np.c_[s["coord"], s["color"], s["normal"]], fmt="%.5f")
    (scans / "broken.txt").write_text("0.1 0.2 0.3 r g b\n")
    out = tmp_path / "preds"
    result = _cli("ffnet-pc-predict", "--checkpoint", str(scannet / "best.pth"), "--output", str(out),
                  "--input", str(scans))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 2 and "broken.txt" in errors[0] and "not a text matrix" in errors[0]
    assert errors[1].startswith("error: 1 of 3 scenes failed")
    assert "2 scenes predicted, 0 already done" in result.stdout
    for i in range(2):
        n = len(np.loadtxt(scans / f"room{i}.txt"))
        assert np.load(out / f"room{i}_pred.npy").shape == (n,)
        assert len((out / "submit" / f"room{i}.txt").read_text().splitlines()) == n
    assert not (out / "broken_pred.npy").exists()


def test_scannet200_submission_uses_the_200_benchmark_ids(tmp_path: Path) -> None:
    _unlabelled(tmp_path / "data" / "test", 80, "scene0800_00")
    cfg, model = load_run(str(_checkpoint(tmp_path, "scannet200", 200)), None, [])
    summary = predict_scenes(cfg, model, tmp_path / "preds", log=lambda _: None)
    assert summary.written == ["scene0800_00"] and summary.skipped == []
    pred = np.load(tmp_path / "preds" / "scene0800_00_pred.npy")
    ids = [int(v) for v in (tmp_path / "preds" / "submit" / "scene0800_00.txt").read_text().split()]
    assert ids == [SCANNET200_IDS[c] for c in pred] and pred.max() < 200


def test_eval_of_an_unlabelled_split_points_to_predict(scannet: Path, tmp_path: Path) -> None:
    result = _cli("ffnet-pc-eval", "--checkpoint", str(scannet / "best.pth"), "--output",
                  str(tmp_path / "r.json"), "data.val_splits=[test]")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "no labels (segment20)" in lines[0] and "ffnet-pc-predict" in lines[0]
    assert not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------------------------------------ ScanNet200
def test_scannet200_class_table_is_the_benchmarks() -> None:
    assert len(SCANNET200_TABLE) == len(set(SCANNET200_IDS)) == len(set(SCANNET200_CLASSES)) == 200
    assert list(SCANNET200_IDS) == sorted(SCANNET200_IDS)
    assert SCANNET200_TABLE[:3] == ((1, "wall"), (2, "chair"), (3, "floor"))
    known = {"table": 4, "door": 5, "couch": 6, "office chair": 10, "pillow": 13, "toilet": 17, "tv": 33,
             "ceiling": 41, "mattress": 1191}
    table = dict((name, i) for i, name in SCANNET200_TABLE)
    assert {name: table[name] for name in known} == known
    assert dataset_info("scannet200")["class_names"] == SCANNET200_CLASSES  # no more class_000 ...
    from ffnet_pointcloud.runtime import class_names
    from metamixer.train.config import load_config

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "scannet200.yaml"
    names = class_names(load_config(Config, recipe))
    assert names[:3] == ["wall", "chair", "floor"] and names[-1] == "mattress" and len(names) == 200


#: raw categories of the fake scene's objects -> (the TSV's id, the ScanNet200 class index expected)
_OBJECTS = [("wall", [0, 1]), ("chair", [2]), ("floor", [3]), ("mattress", [4]), ("lamp shade", [5]),
            ("never listed", [6])]
_TSV_ROWS = [(1, "wall", "wall", 8277, 1), (2, "chair", "chair", 4646, 5), (22, "floor", "floor", 1, 2),
             (1191, "mattress", "mattress", 1, 6), (3, "floor", "floor", 3000, 2), (12, "lamp shade", "lamp", 3, 35)]


def _raw_scannet200_scene(scans: Path, name: str = "scene0000_00") -> tuple[Path, np.ndarray]:
    """A raw ScanNet scene: mesh PLY, NYU40 label PLY, over-segmentation and aggregation JSON; returns the
    folder and the per-vertex ScanNet200 class expected."""
    rng = np.random.default_rng(0)
    n = 80
    folder = scans / name
    coord = rng.random((n, 3)).astype(np.float32)
    color = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    write_ply(folder / f"{name}_vh_clean_2.ply", coord, red=color[:, 0], green=color[:, 1], blue=color[:, 2])
    write_ply(folder / f"{name}_vh_clean_2.labels.ply", coord, label=np.full(n, 1, dtype=np.uint16))
    seg_ids = np.array([10, 11, 12, 13, 14, 15, 16, 99])  # over-segment ids; 99 is in no object
    seg_of_vertex = seg_ids[rng.integers(0, len(seg_ids), n)]
    groups = [{"id": i, "objectId": i, "label": label, "segments": [int(seg_ids[j]) for j in segs]}
              for i, (label, segs) in enumerate(_OBJECTS)]
    (folder / f"{name}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": seg_of_vertex.tolist()}))
    (folder / f"{name}.aggregation.json").write_text(json.dumps({"sceneId": name, "segGroups": groups}))
    # wall (id 1) -> class 0, chair (2) -> 1, floor: the TSV's first row for it says id 22 (class 19), mattress
    # (1191) -> 199, lamp shade (12: no ScanNet200 class), a category the TSV lacks, a segment in no object -> -1
    per_segment = {10: 0, 11: 0, 12: 1, 13: SCANNET200_IDS.index(22), 14: 199, 15: -1, 16: -1, 99: -1}
    return folder, np.array([per_segment[int(s)] for s in seg_of_vertex])


def _write_tsv(path: Path, rows: list[tuple] = _TSV_ROWS) -> Path:
    header = "id\traw_category\tcategory\tcount\tnyu40id\n"
    path.write_text(header + "".join("\t".join(str(v) for v in row) + "\n" for row in rows))
    return path


def test_segment200_from_the_raw_annotations(tmp_path: Path) -> None:
    folder, expected = _raw_scannet200_scene(tmp_path / "scans")
    table = read_label_table(_write_tsv(tmp_path / "scannetv2-labels.combined.tsv"))
    assert table["floor"] == 22  # a category listed twice keeps its first row
    arrays = scannet_scene_arrays(folder, table)
    assert arrays["segment200"].tolist() == expected.tolist()
    assert set(arrays) == {"coord", "color", "normal", "segment20", "segment200"}
    assert "segment200" not in scannet_scene_arrays(folder)  # no table: ScanNet20 only, as before


def test_preprocess_cli_writes_segment200_and_names_bad_inputs(tmp_path: Path) -> None:
    scans = tmp_path / "ScanNet" / "scans"
    _, expected = _raw_scannet200_scene(scans)
    test_folder, _ = _raw_scannet200_scene(scans, "scene0707_00")  # a test scene: no annotation files
    for f in test_folder.glob("*.json"):
        f.unlink()
    (test_folder / "scene0707_00_vh_clean_2.labels.ply").unlink()
    half, _ = _raw_scannet200_scene(scans, "scene0002_00")  # one of the two JSON files missing
    (half / "scene0002_00.aggregation.json").unlink()
    _write_tsv(tmp_path / "ScanNet" / "scannetv2-labels.combined.tsv")  # where the release keeps it: found
    out = tmp_path / "out"
    result = _cli("ffnet-pc-preprocess", "scannet", "--input", str(scans), "--output", str(out), "--split", "val")
    assert result.returncode == 1, result.stderr
    assert "ScanNet200 labels (segment200) from" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 2 and "scene0002_00.aggregation.json: missing" in errors[0]
    scenes = SceneDataset(out, ["val"], "segment200", num_classes=200)
    assert [p.name for p in scenes.paths] == ["scene0000_00", "scene0707_00"]
    assert scenes.raw(0)["segment"].tolist() == expected.tolist()
    assert "segment" not in scenes.raw(1)  # the test scene has no labels of either kind
    # a label table without the id column is refused before any scene is read
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tname\n1\twall\n")
    result = _cli("ffnet-pc-preprocess", "scannet", "--input", str(scans), "--output", str(tmp_path / "o2"),
                  "--labels-tsv", str(bad))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "bad.tsv: no id / raw_category column" in lines[0]
    assert not (tmp_path / "o2").exists()
