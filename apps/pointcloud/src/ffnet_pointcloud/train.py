"""Training: ``ffnet-pc-train CONFIG [key.sub=value ...] [--resume PATH]`` (torchrun for DDP).

The loop is the engine's (:class:`metamixer.train.loop.Trainer`: AMP scaling, clipping, accumulation, EMA,
limits, validation and checkpoint cadence, ``best.pth`` by validation mIoU, exact resume, signals); this module
is the segmentation :class:`SegmentationTask` it runs: CE + Lovász loss, the official two-rate AdamW with
OneCycle (:mod:`ffnet_pointcloud.optim`), SyncBN under CUDA DDP, and validation on voxelized scenes. After the
last step the best checkpoint is re-scored with the full test protocol (``eval.precise``,
:mod:`ffnet_pointcloud.precise`) and that is the run's reported mIoU (``run.output_dir/results.json``).

Batch ``b`` of epoch ``e`` is a pure function of (run.seed, e, b): the scene order is DistributedSampler's
permutation for (seed, e), augmentation is seeded by (seed, e, scene index) and the Mix3D draw by (seed, e, b),
so a run resumed anywhere, even mid-epoch and with loader workers, sees the batches the uninterrupted run saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from metamixer.nn.flops import count_params
from metamixer.train.allocator import keep_freed_memory
from metamixer.train.amp import autocast
from metamixer.train.cli import build_train_parser, config_from_args
from metamixer.train.device import resolve_device
from metamixer.train.distributed import cleanup_distributed
from metamixer.train.errors import run_cli
from metamixer.train.logger import RunLogger
from metamixer.train.loop import RunContext, Task, Trainer, prepare_run
from metamixer.train.schedules import Schedule
from metamixer.train.seed import make_generator, seed_worker

from .config import Config, PointcloudOptimConfig
from .data.collate import collate_scenes
from .losses import SegmentationLoss
from .metrics import ConfusionMatrix, format_table
from .optim import build_optimizer, one_cycle_momentum, one_cycle_schedule, set_momentum
from .precise import rescore_best
from .runtime import AugmentedDataset, build_dataset, build_model, check_config, check_precision, class_names
from .structure import Point

__all__ = ["SegmentationTask", "train", "main", "cli", "RECIPES"]

#: the shipped recipes (editable install: apps/pointcloud/recipes); None when not shipped with this install
RECIPES: Path | None = Path(__file__).resolve().parents[2] / "recipes"
if not RECIPES.is_dir():
    RECIPES = None


def to_device(point: Point, device: torch.device) -> Point:
    return Point({k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in point.items()})


def _unbatched(item: Any) -> Any:
    """The loader's collate for items that are whole batches already (a module function: picklable)."""
    return item


class EpochBatches(torch.utils.data.Dataset):
    """The training batches of one epoch from batch ``first`` on; item ``i`` is batch ``first + i``, collated."""

    def __init__(self, scenes: AugmentedDataset, batches: list[list[int]], epoch: int, first: int, seed: int,
                 feat_keys: Sequence[str], mix_prob: float) -> None:
        self.scenes, self.batches, self.epoch, self.first = scenes, batches, epoch, first
        self.seed, self.feat_keys, self.mix_prob = seed, list(feat_keys), mix_prob

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Point:
        mix = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, self.first + i])
                                                 .generate_state(1)[0]))
        data = [self.scenes.sample(index, self.epoch) for index in self.batches[i]]
        return collate_scenes(data, self.feat_keys, self.mix_prob, generator=mix)


class SegmentationTask(Task):
    """Semantic segmentation of voxelized scenes for the engine's Trainer; ``best.pth`` by validation mIoU."""

    monitor, monitor_mode = "miou", "max"

    def __init__(self, cfg: Config, ctx: RunContext) -> None:
        model = build_model(cfg)
        if cfg.train.sync_bn and ctx.info.is_distributed and ctx.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same keys; built before the optimizer
        super().__init__(model)
        self.cfg, self.ctx = cfg, ctx
        self.names = class_names(cfg)
        seed = cfg.run.seed
        self.train_set = build_dataset(cfg, "train", cfg.data.train_transforms, seed=seed, log=ctx.logger.info)
        self.val_set = (build_dataset(cfg, "val", cfg.data.val_transforms, seed=seed, log=ctx.logger.info)
                        if cfg.train.val_every is not None else None)
        self.criterion = SegmentationLoss(cfg.data.ignore_index, cfg.train.ce_weight, cfg.train.lovasz_weight)
        self.last_metrics: dict[str, Any] | None = None
        self._total_steps = 1

    # ------------------------------------------------------------------------------------------- batches
    def _sampler(self, dataset: Any, shuffle: bool) -> DistributedSampler:
        info = self.ctx.info
        return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle,
                                  seed=self.cfg.run.seed)

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """Scene indices of every batch of ``epoch`` on this process (the last partial batch dropped, unless it
        is the only one)."""
        sampler = self._sampler(self.train_set, shuffle=True)
        sampler.set_epoch(epoch)
        order = list(sampler)
        size = self.cfg.train.batch_size
        count = len(order) // size if len(order) >= size else min(1, len(order))
        return [order[i * size:(i + 1) * size] for i in range(count)]

    def steps_per_epoch(self) -> int:
        return len(self.epoch_plan(0))

    def train_batches(self, epoch: int, start: int = 0) -> Iterable[Point]:
        d = self.cfg.data
        batches = EpochBatches(self.train_set, self.epoch_plan(epoch)[start:], epoch, start, self.cfg.run.seed,
                               d.feat_keys, d.mix_prob)
        # a bad scene file raised in a worker reaches the CLI as its own one line (core's run_cli unwraps it)
        return DataLoader(batches, batch_size=None, num_workers=d.num_workers, collate_fn=_unbatched,
                          worker_init_fn=seed_worker, generator=make_generator(self.cfg.run.seed + epoch))

    # -------------------------------------------------------------------------------------- optimization
    def training_step(self, model: nn.Module, batch: Point) -> Mapping[str, torch.Tensor]:
        point = to_device(batch, self.ctx.device)
        return {"loss": self.criterion(model(point), point["segment"])}

    def build_optimizer(self, model: nn.Module, cfg: PointcloudOptimConfig) -> torch.optim.Optimizer:
        return build_optimizer(model, cfg)

    def lr_schedule(self, cfg: PointcloudOptimConfig, total_steps: int, steps_per_epoch: int) -> Schedule:
        self._total_steps = max(1, total_steps)
        if cfg.schedule == "onecycle":
            return one_cycle_schedule(cfg, total_steps)
        return super().lr_schedule(cfg, total_steps, steps_per_epoch)

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """OneCycleLR's momentum cycle (``optim.cycle_momentum``), opposite to the rate."""
        cfg = self.cfg.optim
        if cfg.schedule == "onecycle" and cfg.cycle_momentum is not None:
            base, top = cfg.cycle_momentum
            set_momentum(optimizer, one_cycle_momentum(step, self._total_steps, cfg.pct_start, base, top))

    # -------------------------------------------------------------------------------------------- validation
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """mIoU on the validation scenes at voxel level (fast; ffnet-pc-eval gives the all-points protocol)."""
        d, device = self.cfg.data, self.ctx.device
        collate = partial(collate_scenes, feat_keys=d.feat_keys)
        loader = DataLoader(self.val_set, batch_size=1, sampler=self._sampler(self.val_set, shuffle=False),
                            num_workers=d.num_workers, collate_fn=collate)
        cm = ConfusionMatrix(d.num_classes, d.ignore_index)
        for point in loader:
            point = to_device(point, device)
            with autocast(device, self.cfg.run.precision):
                logits = model(point)
            cm.update(logits.argmax(1), point["segment"])
        matrix = torch.from_numpy(cm.matrix).to(device)
        if self.ctx.info.is_distributed:
            torch.distributed.all_reduce(matrix)
        cm.matrix = matrix.cpu().numpy()
        self.last_metrics = cm.compute(self.names)
        nan = float("nan")
        return {k.lower(): nan if self.last_metrics[k] is None else self.last_metrics[k]
                for k in ("mIoU", "mAcc", "allAcc")}

    def on_validation(self, model: nn.Module, metrics: Mapping[str, float], step: int, logger: RunLogger) -> None:
        if self.last_metrics is not None:
            logger.info(f"validation (voxels) at step {step}:\n{format_table(self.last_metrics)}")


def train(cfg: Config, resume: str | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run training on the engine; returns a summary (params, steps, best/last validation metrics, timings)."""
    check_precision(cfg.run.precision, resolve_device(cfg.run.device))
    check_config(cfg, validate=cfg.train.val_every is not None)  # before prepare_run makes the run folder
    ctx = prepare_run(cfg.run, cfg, quiet=quiet)
    try:
        task = SegmentationTask(cfg, ctx)
        n_params = count_params(task.model)
        ctx.logger.info(f"model {cfg.model.name}: {n_params:,} parameters ({n_params / 1e6:.2f} M); "
                        f"{len(task.train_set)} train scenes, {task.steps_per_epoch()} batches/epoch")
        result = Trainer(task, ctx, cfg.optim, cfg.train, cfg.run, config=cfg).fit(resume)
        ctx.logger.info(f"done: {result.step} steps in {result.wall_s:.1f} s ({result.stopped}); "
                        f"best val mIoU {result.best}")
        precise, results = None, None
        if cfg.eval.precise and result.best_checkpoint is not None:
            cleanup_distributed()  # rank 0 alone from here: the other ranks must not wait on it in a collective
            if ctx.info.rank == 0:
                results = Path(ctx.output_dir) / "results.json"
                selection = {"val_voxel_mIoU": result.best, "best_step": result.best_step, "monitor": "miou",
                             "checkpoint": result.best_checkpoint, "steps": result.step, "stopped": result.stopped,
                             "protocol": "data.val_transforms: one voxelized sample per scene, no TTA"}
                precise = rescore_best(cfg, result.best_checkpoint, ctx.device, results, selection,
                                       log=ctx.logger.info)
    finally:
        ctx.logger.close()
        cleanup_distributed()
    return {
        "model": cfg.model.name,
        "params": n_params,
        "steps": result.step,
        "stopped": result.stopped,
        "train_seconds": round(result.wall_s, 2),
        "best_val_mIoU": result.best,
        "last_val": task.last_metrics,
        "precise": precise,  # the full test protocol on best.pth (None: eval.precise off or no validation)
        "final_mIoU": precise["mIoU"] if precise is not None else None,
        "results": str(results) if results is not None else None,
        "output_dir": str(ctx.output_dir),
        "last_checkpoint": result.last_checkpoint,
        "best_checkpoint": result.best_checkpoint,
        "rank": ctx.info.rank,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_train_parser("ffnet-pc-train", "Train FFNet 3D semantic segmentation (sparse voxels).")
    args = parser.parse_args(argv)
    cfg = config_from_args(Config, args, RECIPES)
    if resolve_device(cfg.run.device).type == "cpu":
        keep_freed_memory()  # CPU training: keep freed activation memory in the process (opt-in of the CLI)
    summary = train(cfg, args.resume)
    if summary["rank"] != 0:
        return 0
    best, final = summary["best_val_mIoU"], summary["final_mIoU"]
    precise = "" if summary["precise"] is None else (
        f"  precise mIoU (all points, TTA; reported) {'-' if final is None else f'{100 * final:.2f}%'}")
    print(f"params {summary['params']:,}  steps {summary['steps']}  best val mIoU (voxels) "
          f"{'-' if best is None else f'{100 * best:.2f}%'}{precise}  -> {summary['output_dir']}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
