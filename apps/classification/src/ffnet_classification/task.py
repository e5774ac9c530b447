"""Image classification as an engine Task: batches, the recipe's loss (Mixup/CutMix, smoothing, distillation)
and top-1/top-5 validation. Optimizer steps, AMP, clipping, EMA, checkpoints and resume are the Trainer's."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from metamixer.train.distributed import DistInfo, all_gather_object
from metamixer.train.errors import FFNetError
from metamixer.train.loop import Task
from metamixer.train.seed import make_generator, seed_worker

from .config import ClsConfig, ClsOptimConfig
from .data import (
    BadImageError,
    EpochSampler,
    Mixup,
    ReportBadImages,
    SeededSamples,
    collate_reporting,
    describe_bad_images,
)
from .engine import evaluate
from .losses import HardDistillationLoss, build_base_loss
from .optim import build_optimizer


def eval_loader(ds: Dataset, batch_size: int, workers: int, info: DistInfo) -> DataLoader:
    """Batches ``(images, targets, bad)`` (:func:`collate_reporting`: unreadable images left out and named).
    Each rank takes a disjoint strided shard (no padding duplicates), so summed metrics are exact."""
    reporting: Dataset = ReportBadImages(ds, replace=False)  # type: ignore[arg-type]
    if info.is_distributed:
        reporting = Subset(reporting, list(range(info.rank, len(ds), info.world_size)))  # type: ignore[arg-type]
    return DataLoader(reporting, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=info.device.type == "cuda", collate_fn=collate_reporting)


class BadImageLog:
    """The unreadable images a run met, each reported once: ``error`` policy raises one line listing them,
    ``skip`` logs each new one and keeps them for summary.json.

    ``whole_set``: the images come from a pass over the whole set (validation), so the line says how many of
    all are bad; training meets them batch by batch and can only name those of the batch that stopped it.
    """

    def __init__(self, policy: str, source: str, log: Callable[[str], None] | None = None,
                 whole_set: bool = True) -> None:
        self.policy, self.source, self.log, self.whole_set = policy, source, log, whole_set
        self.seen: dict[str, str] = {}

    def add(self, bad: Sequence[tuple[str, str]], total: int) -> None:
        new = [(path, reason) for path, reason in bad if path not in self.seen]
        self.seen.update(new)
        if not new:
            return
        if self.policy == "error":
            what = (describe_bad_images(new, total, self.source) if self.whole_set else
                    f"{self.source}: unreadable training image(s) in the batch being loaded: "
                    + "; ".join(f"{path} ({reason})" for path, reason in new))
            raise BadImageError(f"{what}; fix or remove them, or set data.on_bad_image=skip to leave them out")
        if self.log is not None:
            for path, reason in new:
                self.log(f"skipping unreadable image {path}: {reason}")


def scored_batches(loader: Iterable[tuple[Any, Any, list[tuple[str, str]]]],
                   found: list[tuple[str, str]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(images, targets)`` of a reporting loader; the bad files of each batch are appended to ``found``."""
    for images, targets, bad in loader:
        found.extend(bad)
        if images is not None:
            yield images, targets


class ClassificationTask(Task):
    """``best.pth`` is picked by validation top-1 (of ``train.eval_weights``); without a val set, none."""

    monitor = "top1"
    monitor_mode = "max"

    def __init__(self, cfg: ClsConfig, model: nn.Module, train_set: Dataset, val_set: Dataset | None,
                 classes: list[str], info: DistInfo, teacher: nn.Module | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__(model)
        self.cfg, self.train_set, self.classes, self.info = cfg, train_set, classes, info
        policy = cfg.data.on_bad_image
        self.bad_train = BadImageLog(policy, cfg.data.train, log, whole_set=False)
        self.bad_val = BadImageLog(policy, cfg.data.val or "", log)
        self.num_classes = len(classes)
        batch = cfg.train.batch_size
        if len(train_set) < batch * info.world_size:  # type: ignore[arg-type]
            raise FFNetError(f"training set has {len(train_set)} images, fewer than one global batch "  # type: ignore[arg-type]
                             f"({batch} x {info.world_size}); lower train.batch_size")
        self.sampler = EpochSampler(len(train_set), batch, cfg.run.seed, info.rank, info.world_size)  # type: ignore[arg-type]
        d = cfg.data
        mixup = Mixup(self.num_classes, d.mixup, d.cutmix, d.mixup_prob, d.mixup_switch_prob, d.label_smoothing)
        self.mixup = mixup if mixup.active else None
        loss: nn.Module = build_base_loss(self.mixup is not None, d.label_smoothing)
        self.distill = teacher is not None
        self.loss_fn = HardDistillationLoss(loss, teacher, cfg.train.distill.alpha) if teacher is not None else loss
        self.val_loader, self.val_set = None, val_set
        if val_set is not None:
            self.val_loader = eval_loader(val_set, cfg.eval.batch_size or batch, d.workers, info)
        else:
            self.monitor = None
        self._compiled: tuple[nn.Module, nn.Module] | None = None

    # ------------------------------------------------------------------------------------------- batches
    def steps_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch()

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(epoch, start)
        workers = self.cfg.data.workers
        # skip: a bad image is replaced by the next readable one (same batch sizes, same batches on resume)
        samples = ReportBadImages(self.train_set, replace=self.cfg.data.on_bad_image == "skip")  # type: ignore[arg-type]
        loader = DataLoader(SeededSamples(samples), batch_sampler=self.sampler, num_workers=workers,
                            worker_init_fn=seed_worker, generator=make_generator(self.cfg.run.seed + epoch),
                            pin_memory=self.info.device.type == "cuda", collate_fn=collate_reporting)
        device = self.info.device
        for images, target, bad in loader:
            self.bad_train.add(bad, len(self.train_set))  # type: ignore[arg-type]
            if images is None:
                raise FFNetError(f"{self.cfg.data.train}: none of its images is readable")
            yield images.to(device, non_blocking=True), target.to(device, non_blocking=True)

    # ------------------------------------------------------------------------------------------ the step
    def _forward_model(self, model: nn.Module) -> nn.Module:
        if not self.cfg.train.compile:
            return model
        if self._compiled is None or self._compiled[0] is not model:
            self._compiled = (model, torch.compile(model))
        return self._compiled[1]

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        images, target = batch
        if self.mixup is not None:
            images, target = self.mixup(images, target)
        if self.cfg.model.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self._forward_model(model)(images)
        loss = self.loss_fn(images, logits, target) if self.distill else self.loss_fn(logits, target)
        return {"loss": loss}

    def build_optimizer(self, model: nn.Module, cfg: ClsOptimConfig) -> torch.optim.Optimizer:  # type: ignore[override]
        return build_optimizer(model, cfg)

    # -------------------------------------------------------------------------------------- validation
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        found: list[tuple[str, str]] = []
        total = len(self.val_set)  # type: ignore[arg-type]
        try:
            m: dict[str, float] | None = evaluate(model, scored_batches(self.val_loader, found), self.info.device,
                                                  self.cfg.run.precision, self.cfg.model.channels_last)
        except FFNetError:  # "evaluation set is empty": every image was unreadable
            if not found:
                raise
            m = None
        # the whole val set was read: every bad file of every rank is listed at once
        self.bad_val.add([entry for part in all_gather_object(found) for entry in part], total)
        if m is None:
            raise FFNetError(f"{self.cfg.data.val}: none of its {total} images is readable")
        return {k: m[k] for k in ("top1", "top5", "loss")}

    def skipped_images(self) -> dict[str, list[dict[str, str]]]:
        """``{"train": [...], "val": [...]}`` of the images left out under ``data.on_bad_image=skip``, all ranks."""
        parts = all_gather_object((self.bad_train.seen, self.bad_val.seen))
        merged: dict[str, dict[str, str]] = {"train": {}, "val": {}}
        for train_seen, val_seen in parts:
            merged["train"].update(train_seen)
            merged["val"].update(val_seen)
        return {split: [{"path": p, "reason": r} for p, r in sorted(seen.items())] for split, seen in merged.items()}

    # -------------------------------------------------------------------------- what a checkpoint knows
    def state_dict(self) -> dict[str, Any]:
        """Stored in every checkpoint: ``load_model`` rebuilds the classifier with its class names from it."""
        return {"classes": list(self.classes), "model_name": self.cfg.model.name, "num_classes": self.num_classes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state.get("classes", self.classes)) != list(self.classes):
            raise FFNetError(f"--resume: the checkpoint was trained on other classes than {self.cfg.data.train}")
