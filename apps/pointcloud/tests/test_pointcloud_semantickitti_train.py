"""SemanticKITTI end to end on the shared real scans: a tiny training on sequence 00, fragment evaluation of the
08 scan on every original point, .label predictions for an unlabelled (test) sequence through ffnet-pc-predict
(a bad scan named, the others written), the CPU recipe equal to the quick start's config, the quick start (slow)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from metamixer.nn.sparse import spconv_available
from metamixer.train.datadir import data_root

KITTI = data_root() / "pointcloud" / "semantickitti"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
pytestmark = [
    pytest.mark.skipif(not spconv_available(), reason="spconv not installed (pip install metamixer[sparse])"),
    pytest.mark.skipif(not (KITTI / "semantic-kitti.yaml").is_file(),
                       reason=f"SemanticKITTI sample not found at {KITTI} (set FFNET_DATA)"),
]

from ffnet_pointcloud.config import Config  # noqa: E402
from ffnet_pointcloud.data.semantic_kitti import load_scan, read_label_file, read_labels_yaml  # noqa: E402
from ffnet_pointcloud.evaluate import evaluate, load_run  # noqa: E402
from ffnet_pointcloud.quickstart_kitti import kitti_quickstart_config  # noqa: E402
from ffnet_pointcloud.train import train  # noqa: E402
from metamixer.train.config import config_to_dict, load_config  # noqa: E402

VAL_SCAN = KITTI / "sequences" / "08" / "velodyne" / "000000.bin"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    """3 steps of a narrow ffnet3d_tiny on 5k-voxel crops of the 3 training scans (the pipeline, not accuracy)."""
    out = tmp_path_factory.mktemp("kitti")
    cfg = kitti_quickstart_config(out, KITTI, epochs=1, threads=1, grid_size=0.05, point_max=5000, loop=1)
    cfg.model.options.update(enc_channels=[8, 8, 16, 16], dec_channels=[8, 8, 16])
    cfg.train.progress = False
    summary = train(cfg, quiet=True)
    assert summary["steps"] == 3 and summary["stopped"] == "completed"
    return cfg, Path(summary["last_checkpoint"])


def test_tiny_training_and_fragment_evaluation_on_the_real_scans(trained: tuple[Config, Path]) -> None:
    cfg, checkpoint = trained
    cfg2, model = load_run(str(checkpoint), None, ["eval.tta=false"])
    assert cfg2.data.dataset == "semantickitti" and cfg2.data.feat_keys == ["coord", "strength"]
    seen: list[tuple[Path, int]] = []
    metrics = evaluate(cfg2, model, log=lambda line: None,
                       on_scene=lambda path, scan, pred: seen.append((path, len(pred))))
    scan = load_scan(VAL_SCAN)
    assert seen == [(VAL_SCAN, 123389)]  # a prediction for every original point of the 08 scan
    assert metrics["num_points"] == int((scan["segment"] >= 0).sum())  # all labelled points scored
    assert metrics["tta_views"] == 1 and len(metrics["scenes"]) == 1
    assert 0.0 <= metrics["mIoU"] <= 1.0 and 0.0 <= metrics["allAcc"] <= 1.0
    assert len(metrics["per_class"]) == 19 and metrics["per_class"]["road"]["points"] == 20975


def test_predict_writes_label_files_for_an_unlabelled_sequence(trained: tuple[Config, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """A fake test sequence 11 (the first 4,000 points of the 08 scan, no labels) and a truncated scan in 12:
    the good scan gets its .label (raw ids of learning_map_inv, one per point), the bad one an error line, exit 1."""
    from ffnet_pointcloud.predict import cli

    _, checkpoint = trained
    root = tmp_path / "kitti"
    (root / "sequences" / "11" / "velodyne").mkdir(parents=True)
    (root / "sequences" / "12" / "velodyne").mkdir(parents=True)
    shutil.copy(KITTI / "semantic-kitti.yaml", root / "semantic-kitti.yaml")
    points = np.fromfile(VAL_SCAN, dtype="<f4").reshape(-1, 4)[:4000]
    points.tofile(root / "sequences" / "11" / "velodyne" / "000000.bin")
    bad = root / "sequences" / "12" / "velodyne" / "000000.bin"
    bad.write_bytes(points.tobytes()[:100])
    out = tmp_path / "preds"
    with pytest.raises(SystemExit) as exc:
        cli(["--checkpoint", str(checkpoint), "--output", str(out), "--split", "test", f"data.root={root}",
             "eval.tta=false"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and str(bad) in err and "not a multiple of 16" in err and "Traceback" not in err
    label = out / "sequences" / "11" / "predictions" / "000000.label"
    raw = read_label_file(label, 4000)
    assert set(np.unique(raw).tolist()) <= set(read_labels_yaml(root).inverse.tolist())
    assert not (out / "sequences" / "12" / "predictions" / "000000.label").exists()
    assert cli(["--checkpoint", str(checkpoint), "--output", str(out), "--split", "11", f"data.root={root}",
                "eval.tta=false"]) == 0


def test_cpu_recipe_is_the_quickstart_config(tmp_path: Path) -> None:
    ours = config_to_dict(kitti_quickstart_config(tmp_path, "pointcloud/semantickitti"))
    recipe = config_to_dict(load_config(Config, RECIPES / "semantickitti_cpu.yaml"))
    ours["run"].pop("output_dir")
    recipe["run"].pop("output_dir")
    assert ours == recipe


@pytest.mark.slow
def test_kitti_quickstart_end_to_end(tmp_path: Path) -> None:
    from PIL import Image

    from ffnet_pointcloud.quickstart import main

    assert main(["--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    present = results["present_in_scan"]
    assert len(present["classes"]) == 13 and results["data"]["dataset"] == "semantickitti"
    assert present["mIoU_present"] > results["baselines"]["majority"]["mIoU_present"]
    assert results["metrics"]["allAcc"] > results["baselines"]["majority"]["allAcc"]
    with Image.open(results["bev_png"]) as image:
        assert image.size[0] > 3 * image.size[1] / 2
    assert read_label_file(results["prediction_labels"][0], 123389).dtype == np.uint32
