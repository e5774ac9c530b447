"""Predictions for scenes without labels: ``ffnet-pc-predict --checkpoint run/best.pth --output preds [--split test |
--input DIR] [--overwrite] [--config RECIPE] [key=value ...]``.

Every scene of the split (default ``test``: the split folder under ``data.root``, SemanticKITTI's test sequences
11-21) or of ``--input DIR`` (a folder of one's own scans in any layout the loaders read) is segmented with the
evaluation's fragment/TTA inference on all original points; labels, where a scene has them, are not used. Per
scene it writes

* ``preds/<scene>_pred.npy``: the class index (0..K-1) of every original point, int64;
* the benchmark's submission file of the dataset type: ScanNet / ScanNet200 ``preds/submit/<scene>.txt`` (one
  ORIGINAL label id per line: the 20 classes' NYU40 ids, the 200 classes' ScanNet200 ids), SemanticKITTI
  ``preds/sequences/SS/predictions/FFFFFF.label`` (raw ids through the YAML's ``learning_map_inv``, the layout
  the semantic-kitti-api and the benchmark server read); S3DIS and folders have no submission format.

Resumable: every file is written atomically (a killed run leaves only hidden ``.NAME.PID.ID.tmp`` files, removed
by the next run), the submission file first and ``_pred.npy`` last, and a scene whose files are all there and
consistent (readable ``.npy``, one submission entry per predicted point) is skipped and counted as such; a
half-done scene is predicted again. ``--overwrite`` predicts every scene again. A bad scene is named on its own
``error:`` line and the run goes on; the exit code is then 1 (all other scenes were written).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from metamixer.train.atomic import atomic_write
from metamixer.train.cli import build_eval_parser
from metamixer.train.errors import FFNetError, for_each_input, run_cli
from metamixer.train.outputs import check_output_folder

from .config import Config
from .data.datasets import SceneDataset, SemanticKittiDataset, dataset_info, validate_scene
from .data.scannet_classes import SCANNET20_IDS, SCANNET200_IDS, classes_to_ids
from .data.semantic_kitti import KittiLabels, prediction_path, read_labels_yaml, write_prediction
from .evaluate import build_tester, load_for_inference
from .preprocess import pid_alive
from .runtime import build_dataset

__all__ = ["SUBMISSION_IDS", "PredictSummary", "scene_outputs", "outputs_complete", "predict_scenes", "main", "cli"]

#: dataset type -> the original label id of each class index, for the benchmark's ``submit/<scene>.txt``
SUBMISSION_IDS: dict[str, tuple[int, ...]] = {"scannet": SCANNET20_IDS, "scannet200": SCANNET200_IDS}


@dataclass
class PredictSummary:
    """What one run did: scenes predicted now, scenes found complete and skipped, the files written."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _scene_name(path: Path, kitti: bool) -> str:
    """The scene's name without loading it (the loaders' rule: folder name, file stem; KITTI ``SS_FFFFFF``)."""
    if kitti:
        return f"{path.parent.parent.name}_{path.stem}"
    return path.name if path.is_dir() else path.stem


def scene_outputs(dataset: str, output: Path, path: Path, name: str) -> list[Path]:
    """The files of one scene, in writing order: the submission file (if the dataset has one), ``_pred.npy``."""
    files = []
    if dataset == "semantickitti":
        files.append(prediction_path(output, path))
    elif dataset in SUBMISSION_IDS:
        files.append(output / "submit" / f"{name}.txt")
    return [*files, output / f"{name}_pred.npy"]


def outputs_complete(files: Sequence[Path]) -> bool:
    """All of a scene's files exist and agree: ``_pred.npy`` a readable 1-D integer array of N points, a
    ``.txt`` with N lines, a ``.label`` of N uint32. Why check beyond existence: a file copied or restored by
    hand may be short, and skipping it would leave a broken submission."""
    pred = files[-1]
    try:
        arr = np.load(pred, mmap_mode="r", allow_pickle=False)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            return False
        n = int(arr.shape[0])
    except (OSError, ValueError, EOFError):
        return False
    for f in files[:-1]:
        if not f.is_file():
            return False
        if f.suffix == ".label" and f.stat().st_size != 4 * n:
            return False
        if f.suffix == ".txt":
            data = f.read_bytes()
            if data.count(b"\n") != n or (n and not data.endswith(b"\n")):
                return False
    return True


def _write_npy(path: Path, array: np.ndarray) -> Path:
    return atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _write_txt(path: Path, ids: np.ndarray) -> Path:
    text = "".join(f"{int(i)}\n" for i in ids)
    return atomic_write(path, lambda handle: handle.write(text.encode("ascii")))


def _remove_stale_temporaries(folders: Sequence[Path]) -> int:
    """Temporaries ``.NAME.PID.ID.tmp`` that a killed run of ours never renamed (its PID no longer alive)."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            parts = tmp.name.split(".")
            if len(parts) >= 5 and parts[-3].isdigit() and not pid_alive(parts[-3]):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def _scenes(cfg: Config, splits: Sequence[str], input_dir: Path | None,
            log: Callable[[str], None]) -> SceneDataset:
    """The dataset to predict: ``--input`` (a folder of scenes) or the named splits of ``data.root``."""
    if input_dir is not None:
        if cfg.data.dataset == "semantickitti":
            raise FFNetError("--input: a SemanticKITTI checkpoint reads scans in the release layout; put them in "
                             "ROOT/sequences/SS/velodyne/*.bin and pass data.root=ROOT --split SS")
        folder = input_dir.resolve()
        return SceneDataset(folder.parent, [folder.name], dataset_info(cfg.data.dataset)["segment_key"])
    scenes = build_dataset(cfg, "val", log=log, splits=list(splits))
    assert isinstance(scenes, SceneDataset)
    return scenes


def predict_scenes(cfg: Config, model: torch.nn.Module, output: str | Path, splits: Sequence[str] = ("test",),
                   input_dir: str | Path | None = None, overwrite: bool = False,
                   log: Callable[[str], None] = print, summary: PredictSummary | None = None) -> PredictSummary:
    """Predict every scene of ``splits`` (or of ``input_dir``) into ``output``; scenes already complete there are
    skipped unless ``overwrite``. Raises ``SomeInputsFailed`` (exit 1) after the loop when scenes failed;
    ``summary`` (filled as the scenes go) then still says what was done."""
    output = Path(output)
    kitti = cfg.data.dataset == "semantickitti"
    scenes = _scenes(cfg, splits, Path(input_dir) if input_dir is not None else None, log)
    meta: KittiLabels | None = None
    if kitti:
        assert isinstance(scenes, SemanticKittiDataset)
        meta = read_labels_yaml(scenes.root)  # needed to map back to raw ids: fail before any inference
        if meta.num_classes != cfg.data.num_classes:
            raise FFNetError(f"{meta.path}: {meta.num_classes} classes but data.num_classes={cfg.data.num_classes}")
    table = SUBMISSION_IDS.get(cfg.data.dataset)
    if table is not None and len(table) != cfg.data.num_classes:
        raise FFNetError(f"data.num_classes={cfg.data.num_classes} but the {cfg.data.dataset} benchmark has "
                         f"{len(table)} classes; its submission ids cannot be written")
    names: dict[str, Path] = {}
    for path in scenes.paths:
        name = _scene_name(path, kitti)
        if name in names:
            raise FFNetError(f"two scenes are both named {name!r} ({names[name]} and {path}); their prediction "
                             "files would overwrite each other: rename one")
        names[name] = path
    plan = {path: scene_outputs(cfg.data.dataset, output, path, name) for name, path in names.items()}
    stale = _remove_stale_temporaries(sorted({f.parent for files in plan.values() for f in files}))
    if stale:
        log(f"removed {stale} unfinished temporary files of an interrupted run in {output}")
    device = next(model.parameters()).device
    tester = build_tester(cfg, device)
    model.eval()
    summary = summary if summary is not None else PredictSummary()
    total = len(scenes.paths)

    def one(path: Path) -> None:
        name, files = _scene_name(path, kitti), plan[path]
        position = f"[{scenes.paths.index(path) + 1}/{total}] {name}"
        if not overwrite and outputs_complete(files):
            summary.skipped.append(name)
            log(f"{position}: already predicted in {output}, skipped")
            return
        t0 = time.perf_counter()
        scene = scenes.load(path)
        scene.pop("segment", None)  # labels, where present, play no part in a prediction
        scene = validate_scene(scene, None, cfg.data.ignore_index, source=path)
        probs, votes = tester(model, scene)
        if votes.min() < 1:
            raise RuntimeError(f"{path}: {int((votes < 1).sum())} points got no prediction")
        pred = probs.argmax(1).astype(np.int64)
        if kitti:
            assert meta is not None
            write_prediction(files[0], pred, meta)
        elif table is not None:
            _write_txt(files[0], classes_to_ids(pred, table))
        _write_npy(files[-1], pred)  # last: its presence marks the scene as done
        summary.written.append(name)
        summary.files += files
        log(f"{position}: {len(pred)} points, {time.perf_counter() - t0:.1f} s -> {files[-1]}")

    for_each_input(scenes.paths, one, what="scene")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_eval_parser("ffnet-pc-predict",
                               "Predict unlabelled scenes (fragment TTA, all points): <scene>_pred.npy and the "
                               "benchmark's submission files.", output="folder", output_required=True)
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="recipe to predict with instead of the config stored in the checkpoint")
    parser.add_argument("--split", default="test", metavar="SPLITS",
                        help="comma-separated split folders under data.root (default test); SemanticKITTI: train, "
                             "val, test (the label YAML's sequences) or sequence numbers (08,11)")
    parser.add_argument("--input", metavar="DIR", default=None,
                        help="a folder of your own scenes (scene folders with coord.npy, or .npy/.npz/.txt/.ply "
                             "files) instead of a split of data.root")
    parser.add_argument("--overwrite", action="store_true",
                        help="predict every scene again (default: skip scenes already complete in --output)")
    args = parser.parse_args(argv)
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    if not splits:
        raise FFNetError("--split: expected split names or sequence numbers, got nothing")
    out = check_output_folder(args.output)
    input_dir = None
    if args.input is not None:
        input_dir = Path(args.input)
        if not input_dir.is_dir():
            raise FFNetError(f"--input {input_dir}: not a folder; expected a folder of scenes (scene folders with "
                             "coord.npy, or .npy/.npz/.txt/.ply files)")
    cfg, model = load_for_inference(args.checkpoint, args.config, args.overrides, "predicting")
    t0 = time.perf_counter()
    summary = PredictSummary()
    try:
        predict_scenes(cfg, model, out, splits, input_dir, args.overwrite, summary=summary)
    finally:
        done = summary.written or summary.skipped
        if done:
            print(f"{len(summary.written)} scenes predicted, {len(summary.skipped)} already done (skipped) in "
                  f"{time.perf_counter() - t0:.1f} s -> {out}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
