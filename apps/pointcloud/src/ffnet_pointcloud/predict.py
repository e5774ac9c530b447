"""SemanticKITTI predictions: ``ffnet-pc-predict --checkpoint run/best.pth --output preds [--split test]
[--config RECIPE] [key=value ...]``.

Every scan of the split (default ``test``: sequences 11-21, which have no labels) is segmented with the same
fragment/TTA inference as ``ffnet-pc-eval`` and written as ``preds/sequences/SS/predictions/FFFFFF.label``: raw
SemanticKITTI ids through the YAML's ``learning_map_inv``, one uint32 per original point, the layout the official
semantic-kitti-api (``evaluate_semantics.py --predictions preds``) and the benchmark server read. Each file is
written atomically. A bad scan is named on its own ``error:`` line and the run goes on; the exit code is then 1
(all other scans were written).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from metamixer.train.cli import build_eval_parser
from metamixer.train.errors import FFNetError, for_each_input, run_cli

from .config import Config
from .data.datasets import SemanticKittiDataset, validate_scene
from .data.semantic_kitti import load_scan, prediction_path, read_labels_yaml, write_prediction
from .evaluate import build_tester, load_for_inference
from .runtime import build_dataset

__all__ = ["predict_split", "main", "cli"]


def predict_split(cfg: Config, model: torch.nn.Module, output: str | Path, splits: Sequence[str],
                  log: Callable[[str], None] = print) -> list[Path]:
    """Write a ``.label`` prediction for every scan of ``splits``; returns the files written."""
    if cfg.data.dataset != "semantickitti":
        raise FFNetError(f"ffnet-pc-predict writes SemanticKITTI .label files; data.dataset is "
                         f"{cfg.data.dataset!r} (use ffnet-pc-eval --ply for other datasets)")
    scans = build_dataset(cfg, "val", log=log, splits=list(splits))
    assert isinstance(scans, SemanticKittiDataset)
    meta = read_labels_yaml(scans.root)  # needed to map back to raw ids: fail before any inference
    if meta.num_classes != cfg.data.num_classes:
        raise FFNetError(f"{meta.path}: {meta.num_classes} classes but data.num_classes={cfg.data.num_classes}")
    device = next(model.parameters()).device
    tester = build_tester(cfg, device)
    model.eval()
    total = len(scans.paths)

    def one(path: Path) -> Path:
        t0 = time.perf_counter()
        scan = validate_scene(load_scan(path, meta), cfg.data.num_classes, cfg.data.ignore_index, source=path)
        probs, votes = tester(model, scan)
        if votes.min() < 1:
            raise RuntimeError(f"{path}: {int((votes < 1).sum())} points got no prediction")
        out = write_prediction(prediction_path(output, path), probs.argmax(1), meta)
        log(f"[{scans.paths.index(path) + 1}/{total}] {path.parent.parent.name}/{path.name}: {len(votes)} points, "
            f"{time.perf_counter() - t0:.1f} s -> {out}")
        return out

    return for_each_input(scans.paths, one, what="scan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_eval_parser("ffnet-pc-predict", "Write SemanticKITTI .label predictions (fragment TTA, all points).",
                               output="folder", output_required=True)
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="recipe to predict with instead of the config stored in the checkpoint")
    parser.add_argument("--split", default="test", metavar="SPLITS",
                        help="comma-separated: train, val, test (the label YAML's sequences) or sequence numbers "
                             "(08,11); default test")
    args = parser.parse_args(argv)
    splits = [s for s in args.split.split(",") if s.strip()]
    if not splits:
        raise FFNetError("--split: expected train, val, test or sequence numbers, got nothing")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise FFNetError(f"--output {out} is a file; expected a folder for sequences/SS/predictions/*.label")
    cfg, model = load_for_inference(args.checkpoint, args.config, args.overrides, "predicting")
    t0 = time.perf_counter()
    written = predict_split(cfg, model, out, splits)
    print(f"{len(written)} scans predicted in {time.perf_counter() - t0:.1f} s -> {out / 'sequences'}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
