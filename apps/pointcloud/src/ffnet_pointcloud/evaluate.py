"""Evaluation: ``ffnet-pc-eval --checkpoint run/best.pth [--output results.json] [--config X] [--ply DIR]
[key=value ...]``.

Every validation scene is segmented with fragment inference and the config's TTA views (``tester.py``), the
votes are mapped back to **all original points**, and per-class IoU / accuracy, mIoU, mAcc and allAcc are
computed over those points. Writes ``results.json`` (the shape every app writes: metrics, data, checkpoint,
protocol, versions, wall time; plus per-scene numbers and the confusion matrix), prints a table, and with
``--ply DIR`` (or eval.save_ply) a coloured PLY per scene (predicted class colours, plus ``label``/``pred``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metamixer.train.checkpoint import extract_state_dict, load_checkpoint, load_state_dict_checked
from metamixer.train.cli import build_eval_parser
from metamixer.train.config import apply_overrides, config_from_dict, config_to_dict, load_config
from metamixer.train.device import resolve_device
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_results

from .config import Config
from .data.datasets import SceneDataset
from .data.ply import write_ply
from .metrics import ConfusionMatrix, format_table
from .runtime import build_dataset, build_model, check_precision, class_names
from .tester import SceneTester

__all__ = ["evaluate", "build_tester", "check_scenes", "load_run", "write_eval_results", "main", "cli", "palette"]


def palette(num_classes: int) -> np.ndarray:
    """Distinct uint8 colours per class (golden-ratio hues), stable across runs."""
    import colorsys

    cols = [colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95) for i in range(num_classes)]
    return (np.array(cols) * 255).astype(np.uint8)


def build_tester(cfg: Config, device: torch.device) -> SceneTester:
    """The fragment/TTA tester of ``cfg`` (all of ``data.tta_views``, or only the identity with eval.tta=false)."""
    views = cfg.data.tta_views if cfg.eval.tta else None
    return SceneTester(cfg.data.num_classes, cfg.data.test_grid_size, cfg.data.test_pre_transforms, views,
                       cfg.data.test_post_transforms, cfg.data.feat_keys, cfg.eval.fragments_per_batch, device,
                       cfg.run.precision)


def evaluate(
    cfg: Config, model: torch.nn.Module, ply_dir: str | Path | None = None, log: Any = print,
    on_scene: Callable[[Path, dict[str, Any], np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on the validation split of ``cfg``; returns the metrics dict (plus per-scene timing).
    ``on_scene(path, scene, pred)`` sees every scene's per-point prediction (e.g. to write prediction files)."""
    device = next(model.parameters()).device
    names = class_names(cfg)
    scenes = build_dataset(cfg, "val", log=log)
    assert isinstance(scenes, SceneDataset)
    views = cfg.data.tta_views if cfg.eval.tta else None
    tester = build_tester(cfg, device)
    cm = ConfusionMatrix(cfg.data.num_classes, cfg.data.ignore_index)
    colors = palette(cfg.data.num_classes)
    model.eval()
    count = len(scenes) if cfg.eval.max_scenes is None else min(len(scenes), cfg.eval.max_scenes)
    check_scenes(scenes, count)
    per_scene = []
    t0 = time.perf_counter()
    for i in range(count):
        scene = scenes.raw(i)
        ts = time.perf_counter()
        probs, votes = tester(model, scene)
        if votes.min() < 1:
            raise RuntimeError(f"scene {scene['name']}: {int((votes < 1).sum())} points got no prediction")
        pred = probs.argmax(1)
        if on_scene is not None:
            on_scene(scenes.paths[i], scene, pred)
        cm.update(pred, scene["segment"])
        scene_cm = ConfusionMatrix(cfg.data.num_classes, cfg.data.ignore_index)
        scene_cm.update(pred, scene["segment"])
        m = scene_cm.compute(names)
        per_scene.append(
            {
                "name": scene["name"],
                "points": int(len(pred)),
                "mIoU": m["mIoU"],
                "allAcc": m["allAcc"],
                "seconds": round(time.perf_counter() - ts, 3),
            }
        )
        log(
            f"[{i + 1}/{count}] {scene['name']}: {len(pred)} points, mIoU {100 * (m['mIoU'] or 0):.2f}, "
            f"allAcc {100 * (m['allAcc'] or 0):.2f}"
        )
        if ply_dir is not None:
            label = scene["segment"]
            write_ply(
                Path(ply_dir) / f"{scene['name']}.ply",
                scene["coord"],
                red=colors[pred, 0],
                green=colors[pred, 1],
                blue=colors[pred, 2],
                pred=pred.astype(np.int32),
                label=label.astype(np.int32),
            )
    metrics = cm.compute(names)
    metrics.update(
        {
            "scenes": per_scene,
            "tta_views": len(views) if views else 1,
            "seconds": round(time.perf_counter() - t0, 2),
            "confusion_matrix": cm.matrix.tolist(),
        }
    )
    return metrics


def check_scenes(scenes: SceneDataset, count: int) -> None:
    """Load and validate the first ``count`` scenes before any inference; every bad one is named in ONE
    FFNetError (exit 2, nothing written).

    Why refuse instead of skipping: metrics over the scenes that happened to load are not the benchmark's
    numbers, and a results.json with them would be mistaken for the real score. Why up front: inference costs
    minutes per scene, a second read of the arrays only seconds.
    """
    failures = []
    for i in range(count):
        try:
            scene = scenes.raw(i)
            if "segment" not in scene:
                raise FFNetError(f"{scenes.paths[i % len(scenes.paths)]}: no labels ({scenes.segment_key}); "
                                 "evaluation needs a labelled split (ffnet-pc-predict --split NAME writes "
                                 "predictions for unlabelled scenes)")
        except FFNetError as exc:
            failures.append(str(exc))
    if failures:
        shown = "; ".join(failures[:10]) + (f"; and {len(failures) - 10} more" if len(failures) > 10 else "")
        raise FFNetError(f"{len(failures)} of {count} evaluation scenes cannot be used, nothing was evaluated: "
                         f"{shown}")


def load_for_inference(checkpoint: str, config: str | None, overrides: Sequence[str],
                       doing: str) -> tuple[Config, torch.nn.Module]:
    """:func:`load_run`, then the run's device, precision (a GPU recipe's fp16 becomes fp32 on CPU, with a note
    saying what is ``doing`` it) and threads, the model moved there: the start of eval and predict."""
    cfg, model = load_run(checkpoint, config, overrides)
    device = resolve_device(cfg.run.device)
    if cfg.run.precision == "fp16" and device.type != "cuda":
        print(f"note: fp16 (the recipe's GPU AMP setting) is unavailable on CPU; {doing} in fp32")
        cfg.run.precision = "fp32"
    check_precision(cfg.run.precision, device)
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    return cfg, model.to(device)


def load_run(checkpoint: str, config: str | None, overrides: Sequence[str]) -> tuple[Config, torch.nn.Module]:
    """Config from ``--config`` (or the one stored in the checkpoint) + overrides, and the model with its weights
    (the EMA weights when the run scored those: ``train.eval_weights=ema``)."""
    ckpt = load_checkpoint(checkpoint)
    if config is not None:
        cfg = load_config(Config, config, overrides)
    else:
        stored = ckpt.get("config")
        if stored is None:
            raise FFNetError(f"{checkpoint}: no config stored in the checkpoint; pass --config")
        base = config_to_dict(config_from_dict(Config, stored, source=f"{checkpoint} [config]"))
        cfg = config_from_dict(
            Config,
            apply_overrides(base, list(overrides), cls=Config, source="command line"),
            source="command line",
        )
    stored = ckpt.get("config")
    data = stored.get("data") if isinstance(stored, dict) else None
    trained = data.get("num_classes") if isinstance(data, dict) else None
    if isinstance(trained, int) and trained != cfg.data.num_classes:
        raise FFNetError(f"data.num_classes={cfg.data.num_classes} but {checkpoint} was trained with {trained} "
                         f"classes; evaluate with data.num_classes={trained} (labels must use the same ids)")
    model = build_model(cfg)
    prefer_ema = cfg.train.eval_weights == "ema" and ckpt.get("ema") is not None
    load_state_dict_checked(model, extract_state_dict(ckpt, prefer_ema=prefer_ema), checkpoint)
    return cfg, model


def write_eval_results(path: str | Path, cfg: Config, metrics: dict[str, Any], checkpoint: str | Path | None,
                       wall_s: float | None = None, **extra: Any) -> Path:
    """``results.json`` of an evaluation (:func:`metamixer.train.results.write_results`'s shape)."""
    scores = {k: metrics[k] for k in ("mIoU", "mAcc", "allAcc", "num_points", "per_class")}
    data = {"dataset": cfg.data.dataset, "root": cfg.data.root, "splits": cfg.data.val_splits,
            "scenes": len(metrics["scenes"]), "num_classes": cfg.data.num_classes}
    protocol = {"points": "all original points (fragment inference, softmax votes)", "tta_views": metrics["tta_views"],
                "test_grid_size": cfg.data.test_grid_size, "fragments_per_batch": cfg.eval.fragments_per_batch,
                "precision": cfg.run.precision, "ignore_index": cfg.data.ignore_index}
    return write_results(path, metrics=scores, data=data, checkpoint=checkpoint, protocol=protocol, wall_s=wall_s,
                         scenes=metrics["scenes"], confusion_matrix=metrics["confusion_matrix"], **extra)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_eval_parser("ffnet-pc-eval", "Evaluate FFNet 3D with fragment TTA on all original points.")
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="recipe to evaluate with instead of the config stored in the checkpoint")
    parser.add_argument("--ply", metavar="DIR", default=None, help="write predicted-class coloured PLYs here")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.output) if args.output else Path(args.checkpoint).with_name("results.json")
    if out.is_dir():
        raise FFNetError(f"--output {out} is a folder; expected the path of the results .json file to write")
    if args.ply is not None and Path(args.ply).exists() and not Path(args.ply).is_dir():
        raise FFNetError(f"--ply {args.ply} is a file; expected a folder for the predicted PLYs")
    cfg, model = load_for_inference(args.checkpoint, args.config, args.overrides, "evaluating")
    ply_dir = args.ply or (str(Path(cfg.run.output_dir) / "predictions") if cfg.eval.save_ply else None)
    metrics = evaluate(cfg, model, ply_dir)
    write_eval_results(out, cfg, metrics, args.checkpoint, wall_s=round(time.perf_counter() - t0, 2))
    print(format_table(metrics))
    print(
        f"{len(metrics['scenes'])} scenes, {metrics['num_points']} points, {metrics['tta_views']} TTA views, "
        f"{metrics['seconds']} s -> {out}"
    )
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
