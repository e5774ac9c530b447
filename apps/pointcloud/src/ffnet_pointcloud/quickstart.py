"""Quick start: train ffnet3d_tiny for a few minutes on CPU -> fragment-TTA evaluation on all original points.

``python -m ffnet_pointcloud.quickstart --output DIR`` (or ``ffnet-pc-quickstart``):

* ``--data semantickitti`` (default): the shared SemanticKITTI sample (3 labelled scans of sequence 00 for
  training, 1 of sequence 08 for validation, under ``$FFNET_DATA/pointcloud/semantickitti``); see
  :mod:`ffnet_pointcloud.quickstart_kitti` for what it prints and writes.
* ``--data synthetic``: generated labelled indoor rooms (no data needed), the per-class IoU table next to the
  chance level and coloured prediction PLYs.

Both write ``DIR/results.json`` (the shape every app writes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from metamixer.train.allocator import keep_freed_memory
from metamixer.train.cli import OverrideParser
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.sections import RunConfig

from .config import Config, DataConfig, EvalConfig, ModelConfig, PointcloudOptimConfig, PointcloudTrainConfig
from .data.synthetic import SYNTH_CLASSES
from .evaluate import evaluate, load_run, write_eval_results
from .metrics import format_table
from .train import train

__all__ = ["quickstart_config", "main", "cli"]


def quickstart_config(
    output: Path,
    epochs: int = 12,
    threads: int = 1,
    train_scenes: int = 12,
    val_scenes: int = 3,
    grid_size: float = 0.05,
) -> Config:
    """The CPU-sized synthetic recipe (recipes/synthetic_cpu.yaml holds the same values)."""
    train_pipeline = [
        {"type": "CenterShift", "apply_z": True},
        {"type": "RandomRotate", "angle": [-1, 1], "axis": "z", "center": [0, 0, 0], "p": 0.5},
        {"type": "RandomScale", "scale": [0.9, 1.1]},
        {"type": "RandomFlip", "p": 0.5},
        {"type": "RandomJitter", "sigma": 0.005, "clip": 0.02},
        {"type": "ChromaticTranslation", "p": 0.95, "ratio": 0.05},
        {"type": "ChromaticJitter", "p": 0.95, "std": 0.05},
        {"type": "GridSample", "grid_size": grid_size, "mode": "train"},
        {"type": "CenterShift", "apply_z": False},
        {"type": "NormalizeColor"},
    ]
    val_pipeline = [
        {"type": "CenterShift", "apply_z": True},
        {"type": "GridSample", "grid_size": grid_size, "mode": "train"},
        {"type": "CenterShift", "apply_z": False},
        {"type": "NormalizeColor"},
    ]
    tta = [[], [{"type": "RandomFlip", "p": 1}]]
    return Config(
        run=RunConfig(output_dir=str(output / "run"), seed=0, device="cpu", precision="fp32", threads=threads),
        data=DataConfig(
            dataset="synthetic",
            root=str(output / "synthetic_scenes"),
            num_classes=len(SYNTH_CLASSES),
            train_transforms=train_pipeline,
            val_transforms=val_pipeline,
            test_grid_size=grid_size,
            tta_views=tta,
            synthetic_train=train_scenes,
            synthetic_val=val_scenes,
            synthetic_density=120.0,
            cache=True,
        ),
        model=ModelConfig(name="ffnet3d_tiny", options={"bn_momentum": 0.1}),
        optim=PointcloudOptimConfig(lr=0.01, block_lr_scale=0.1, pct_start=0.1),
        train=PointcloudTrainConfig(epochs=epochs, batch_size=2, val_every=None, log_every=5),
        eval=EvalConfig(tta=True, fragments_per_batch=4),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = OverrideParser(prog="ffnet-pc-quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="on failure show the full traceback")
    parser.add_argument(
        "--output", default="runs/pointcloud_quickstart", help="folder for data, run and results.json"
    )
    parser.add_argument("--data", choices=("semantickitti", "synthetic"), default="semantickitti",
                        help="semantickitti: the shared real scans (default); synthetic: generated rooms")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="SemanticKITTI root (semantic-kitti.yaml + sequences/); default "
                             "$FFNET_DATA/pointcloud/semantickitti")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs, >= 1 (default: semantickitti 16 x 12 crops, synthetic 12)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, >= 1 (spconv CPU ops always use 1)")
    args = parser.parse_args(argv)
    for option, value in (("--epochs", args.epochs), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise FFNetError(f"{option} must be an integer >= 1, got {value}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise FFNetError(f"--output {out} is a file; expected a folder for data, run and results.json")
    if args.data == "semantickitti":
        from .quickstart_kitti import run_kitti_quickstart

        return run_kitti_quickstart(out, args.data_root, epochs=args.epochs or 16, threads=args.threads)
    if args.data_root is not None:
        raise FFNetError("--data-root applies to --data semantickitti (synthetic rooms are generated in --output)")
    cfg = quickstart_config(out, epochs=args.epochs or 12, threads=args.threads)
    keep_freed_memory()  # a CPU training run (this is a console script, not a library call)
    t0 = time.perf_counter()
    summary = train(cfg)
    checkpoint = Path(cfg.run.output_dir) / "last.pth"
    _, model = load_run(str(checkpoint), None, [])
    metrics = evaluate(cfg, model, ply_dir=out / "predictions")
    chance = 1.0 / len(SYNTH_CLASSES)
    print(format_table(metrics))
    results = out / "results.json"
    write_eval_results(
        results,
        cfg,
        metrics,
        checkpoint,
        wall_s=round(time.perf_counter() - t0, 1),
        model=summary["model"],
        params=summary["params"],
        train_steps=summary["steps"],
        train_seconds=summary["train_seconds"],
        chance_mIoU_uniform_guess_upper_bound=chance,
        threads=torch.get_num_threads(),
    )
    shown = {k: metrics[k] for k in ("mIoU", "mAcc", "allAcc")}
    print(json.dumps({**shown, "train_steps": summary["steps"], "total_seconds": round(time.perf_counter() - t0, 1)}))
    print(
        f"synthetic rooms: mIoU {100 * (metrics['mIoU'] or 0):.1f}% over {metrics['num_points']} points of "
        f"{len(metrics['scenes'])} held-out scenes (chance ~{100 * chance:.0f}% for {len(SYNTH_CLASSES)} classes); "
        f"results -> {results}, coloured predictions -> {out / 'predictions'}"
    )
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
