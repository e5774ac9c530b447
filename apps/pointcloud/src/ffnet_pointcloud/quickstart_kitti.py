"""The SemanticKITTI quick start: 3 real scans of sequence 00 -> train ffnet3d_tiny on CPU -> the sequence-08 scan.

``ffnet-pc-quickstart`` (default ``--data semantickitti``) trains on the shared scans, evaluates the validation
scan with the app's fragment/TTA inference on every original point and reports:

* the per-class IoU table (classes present in the scan marked), mIoU, mAcc, allAcc, and ``mIoU_present`` (the
  mean over the classes the scan has);
* two trivial baselines on the same points (:mod:`ffnet_pointcloud.kitti_report`);
* ``DIR/results.json`` (:func:`metamixer.train.results.write_results`'s shape), ``DIR/bev_SS_FFFFFF.png`` (ground
  truth | prediction | errors from above, official colours) and the prediction as a SemanticKITTI ``.label`` in
  ``DIR/predictions/sequences/08/predictions/`` (what the official semantic-kitti-api evaluates).

Why it is small: three consecutive frames of one street are all the labelled data the project ships, so the
numbers say that the pipeline runs on real lidar end to end, not what FFNet scores on the benchmark; the
full recipe is ``recipes/semantickitti.yaml`` (GPU, the whole dataset).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metamixer.train.allocator import keep_freed_memory
from metamixer.train.datadir import DATA_ENV_VAR, data_root
from metamixer.train.errors import FFNetError
from metamixer.train.sections import RunConfig

from .config import Config, DataConfig, EvalConfig, ModelConfig, PointcloudOptimConfig, PointcloudTrainConfig
from .data.datasets import SemanticKittiDataset
from .data.semantic_kitti import SEMANTIC_KITTI_CLASSES, prediction_path, read_labels_yaml, write_prediction
from .evaluate import evaluate, load_run, write_eval_results
from .kitti_report import baseline_metrics, present_classes, present_metrics, write_bev
from .metrics import format_table
from .runtime import build_dataset
from .train import train

__all__ = ["KITTI_CLIP", "kitti_quickstart_config", "run_kitti_quickstart"]

#: coordinates are clamped into this box (metres). Pointcept's SemanticKITTI recipes (and recipes/semantickitti.yaml)
#: use +-35.2 m; the clamp piles the 4-7 % of points beyond it into the boundary voxels (46 points deep at 10 cm on
#: the 08 scan instead of 20), and test-time fragments number the deepest voxel's points: +-51.2 m keeps the
#: features bounded at less than half the CPU inference cost.
KITTI_CLIP = [-51.2, -51.2, -4.0, 51.2, 51.2, 2.4]


def kitti_quickstart_config(
    output: Path,
    root: str | Path = "pointcloud/semantickitti",
    epochs: int = 16,
    threads: int = 1,
    grid_size: float = 0.1,
    point_max: int = 40000,
    loop: int = 4,
) -> Config:
    """The CPU-sized SemanticKITTI recipe (recipes/semantickitti_cpu.yaml holds the same values): the official
    split (only sequences 00 and 08 are on disk here: 3 training scans, 1 validation scan), ``ffnet3d_tiny``
    on coord + remission at a 10 cm grid, training on random crops of ``point_max`` voxels (a whole scan is
    ~60k voxels at 10 cm; crops halve the step time and vary the context), 2-view TTA (0 and 180 deg)."""
    train_pipeline = [
        {"type": "RandomRotate", "angle": [-1, 1], "axis": "z", "center": [0, 0, 0], "p": 0.5},
        {"type": "PointClip", "point_cloud_range": KITTI_CLIP},
        {"type": "RandomScale", "scale": [0.9, 1.1]},
        {"type": "RandomFlip", "p": 0.5},
        {"type": "RandomJitter", "sigma": 0.005, "clip": 0.02},
        {"type": "GridSample", "grid_size": grid_size, "mode": "train"},
        {"type": "SphereCrop", "point_max": point_max, "mode": "random"},
    ]
    val_pipeline = [
        {"type": "PointClip", "point_cloud_range": KITTI_CLIP},
        {"type": "GridSample", "grid_size": grid_size, "mode": "train"},
    ]
    rotation = {"type": "RandomRotateTargetAngle", "axis": "z", "center": [0, 0, 0], "p": 1}
    tta = [[{**rotation, "angle": [0.0]}], [{**rotation, "angle": [1.0]}]]
    return Config(
        run=RunConfig(output_dir=str(output / "run"), seed=0, device="cpu", precision="fp32", threads=threads),
        data=DataConfig(
            dataset="semantickitti",
            root=str(root),
            train_splits=["train"],
            val_splits=["val"],
            num_classes=len(SEMANTIC_KITTI_CLASSES),
            class_names=list(SEMANTIC_KITTI_CLASSES),
            feat_keys=["coord", "strength"],
            loop=loop,
            train_transforms=train_pipeline,
            val_transforms=val_pipeline,
            test_pre_transforms=[{"type": "PointClip", "point_cloud_range": KITTI_CLIP}],
            test_grid_size=grid_size,
            test_post_transforms=[],
            tta_views=tta,
            cache=True,
        ),
        model=ModelConfig(name="ffnet3d_tiny", options={"bn_momentum": 0.1}),
        optim=PointcloudOptimConfig(lr=0.02, weight_decay=0.005, block_lr_scale=0.1, pct_start=0.1,
                                    final_div_factor=100.0),
        train=PointcloudTrainConfig(epochs=epochs, batch_size=1, val_every=None, log_every=5),
        eval=EvalConfig(tta=True, fragments_per_batch=1),
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def run_kitti_quickstart(output: Path, root: str | Path | None = None, epochs: int = 16, threads: int = 1) -> int:
    """Train, evaluate, compare with the baselines, write results.json + the BEV picture + the .label file."""
    root = Path(root) if root is not None else data_root() / "pointcloud" / "semantickitti"
    if not root.is_dir():
        raise FFNetError(f"SemanticKITTI data not found at {root} (expected semantic-kitti.yaml and sequences/ "
                         f"there); set {DATA_ENV_VAR} to the folder holding pointcloud/semantickitti, pass "
                         "--data-root, or run ffnet-pc-quickstart --data synthetic")
    meta = read_labels_yaml(root)  # a missing/broken YAML stops here, before anything is written
    cfg = kitti_quickstart_config(output, root, epochs=epochs, threads=threads)
    keep_freed_memory()  # a CPU training run (this is a console script, not a library call)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = train(cfg)
    checkpoint = Path(cfg.run.output_dir) / "last.pth"
    _, model = load_run(str(checkpoint), None, [])
    shown: dict[str, Any] = {}

    def keep(path: Path, scan: dict[str, Any], pred: np.ndarray) -> None:
        label = write_prediction(prediction_path(output / "predictions", path), pred, meta)
        shown.setdefault("first", (path, scan, pred, label))

    te = time.perf_counter()
    metrics = evaluate(cfg, model, on_scene=keep)
    eval_s = time.perf_counter() - te
    path, scan, pred, label_file = shown["first"]
    names = list(SEMANTIC_KITTI_CLASSES)
    present = present_classes(scan["segment"], len(names))
    on_scan = present_metrics(metrics, names, present)
    train_set = build_dataset(cfg, "train", log=None)
    assert isinstance(train_set, SemanticKittiDataset)
    baselines = baseline_metrics([train_set.raw(i) for i in range(len(train_set.paths))], scan, len(names), names)
    bev = output / f"bev_{scan['name']}.png"
    write_bev(bev, scan["coord"], scan["segment"], pred, meta,
              title=f"SemanticKITTI {path.parent.parent.name}/{path.stem}: ffnet3d_tiny after {summary['steps']} "
                    f"CPU steps on 3 scans of 00; mIoU over present classes {_pct(on_scan['mIoU_present'])}")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    results = output / "results.json"
    write_eval_results(results, cfg, metrics, checkpoint, wall_s=round(wall, 1), model=summary["model"],
                       params=summary["params"], train_steps=summary["steps"], train_seconds=summary["train_seconds"],
                       eval_seconds=round(eval_s, 1), cpu_seconds=round(cpu, 1), threads=torch.get_num_threads(),
                       train_scans=[str(p) for p in train_set.paths], present_in_scan=on_scan, baselines=baselines,
                       bev_png=str(bev), prediction_labels=[str(label_file)])
    print(format_table({**metrics, "per_class": {n: m for n, m in metrics["per_class"].items()
                                                 if n in on_scan["classes"]}}))
    print(f"classes present in {scan['name']}: {len(present)}; mIoU over them {_pct(on_scan['mIoU_present'])}")
    for name, b in baselines.items():
        print(f"baseline {name}: mIoU {_pct(b['mIoU'])}, over present {_pct(b['mIoU_present'])}, "
              f"allAcc {_pct(b['allAcc'])}")
    print(json.dumps({"mIoU": metrics["mIoU"], "mIoU_present": on_scan["mIoU_present"], "mAcc": metrics["mAcc"],
                      "allAcc": metrics["allAcc"], "train_steps": summary["steps"], "wall_s": round(wall, 1),
                      "cpu_s": round(cpu, 1)}))
    print(f"results -> {results}; bird's-eye view -> {bev}; SemanticKITTI prediction -> {label_file}")
    return 0
