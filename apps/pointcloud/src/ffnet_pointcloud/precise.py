"""The end of a training run: re-score the best checkpoint with the full test protocol (Pointcept's "precise
evaluation") and report that number.

Why: ``best.pth`` is chosen on the fast validation of the training loop, one voxelized sample per scene (voxel
level, no TTA). The number a paper or benchmark quotes is the test protocol's: every original point, fragments
of all points of each voxel, the TTA views, softmax votes (:mod:`ffnet_pointcloud.tester`). So after the last
step the best checkpoint is evaluated exactly as ``ffnet-pc-eval`` would, and ``run.output_dir/results.json``
holds both numbers under their own names, the precise one as the run's ``metrics`` / ``final_mIoU``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .config import Config
from .evaluate import evaluate, load_run, write_eval_results

__all__ = ["rescore_best"]


def rescore_best(cfg: Config, checkpoint: str | Path, device: torch.device, output: str | Path,
                 selection: dict[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (the run's best) with the full test protocol of ``cfg`` and write ``output``
    (``results.json``): ``metrics`` and ``final_mIoU`` = the precise numbers, ``val_voxel_mIoU`` = the
    training loop's selection score, ``selection`` = how the checkpoint was chosen. Returns the metrics."""
    t0 = time.perf_counter()
    run_cfg, model = load_run(str(checkpoint), None, [])  # its EMA weights when the run scored those
    run_cfg.run.precision = cfg.run.precision
    model = model.to(device)
    views = len(run_cfg.data.tta_views) if run_cfg.eval.tta else 1
    log(f"precise evaluation of {checkpoint}: all original points, fragments, {views} TTA views")
    metrics = evaluate(run_cfg, model, log=log)
    precise = metrics["mIoU"]
    write_eval_results(
        output, run_cfg, metrics, checkpoint, wall_s=round(time.perf_counter() - t0, 2),
        reported="metrics / final_mIoU: the precise evaluation (test protocol: all original points, fragments, "
                 "TTA) of the best checkpoint; val_voxel_mIoU: the training loop's validation that chose it",
        final_mIoU=precise, precise_mIoU=precise, val_voxel_mIoU=selection.get("val_voxel_mIoU"),
        selection=selection,
    )
    voxel = selection.get("val_voxel_mIoU")
    log(f"precise mIoU {100 * (precise or 0):.2f} (reported; voxel-level validation chose it with "
        f"{'-' if voxel is None else f'{100 * voxel:.2f}'}) -> {output}")
    return metrics
