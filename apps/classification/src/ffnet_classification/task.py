"""Image classification as an engine Task: batches, the recipe's loss (Mixup/CutMix, smoothing, distillation)
and top-1/top-5 validation. Optimizer steps, AMP, clipping, EMA, checkpoints and resume are the Trainer's."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from metamixer.train.distributed import DistInfo
from metamixer.train.errors import FFNetError
from metamixer.train.loop import Task
from metamixer.train.seed import make_generator, seed_worker

from .config import ClsConfig, ClsOptimConfig
from .data import EpochSampler, Mixup, SeededSamples
from .engine import evaluate
from .losses import HardDistillationLoss, build_base_loss
from .optim import build_optimizer


def eval_loader(ds: Dataset, batch_size: int, workers: int, info: DistInfo) -> DataLoader:
    """Each rank takes a disjoint strided shard (no padding duplicates), so summed metrics are exact."""
    if info.is_distributed:
        ds = Subset(ds, list(range(info.rank, len(ds), info.world_size)))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=info.device.type == "cuda")


class ClassificationTask(Task):
    """``best.pth`` is picked by validation top-1 (of ``train.eval_weights``); without a val set, none."""

    monitor = "top1"
    monitor_mode = "max"

    def __init__(self, cfg: ClsConfig, model: nn.Module, train_set: Dataset, val_set: Dataset | None,
                 classes: list[str], info: DistInfo, teacher: nn.Module | None = None) -> None:
        super().__init__(model)
        self.cfg, self.train_set, self.classes, self.info = cfg, train_set, classes, info
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
        self.val_loader = None
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
        loader = DataLoader(SeededSamples(self.train_set), batch_sampler=self.sampler, num_workers=workers,
                            worker_init_fn=seed_worker, generator=make_generator(self.cfg.run.seed + epoch),
                            pin_memory=self.info.device.type == "cuda")
        device = self.info.device
        for images, target in loader:
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
        m = evaluate(model, self.val_loader, self.info.device, self.cfg.run.precision, self.cfg.model.channels_last)
        return {k: m[k] for k in ("top1", "top5", "loss")}

    # -------------------------------------------------------------------------- what a checkpoint knows
    def state_dict(self) -> dict[str, Any]:
        """Stored in every checkpoint: ``load_model`` rebuilds the classifier with its class names from it."""
        return {"classes": list(self.classes), "model_name": self.cfg.model.name, "num_classes": self.num_classes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state.get("classes", self.classes)) != list(self.classes):
            raise FFNetError(f"--resume: the checkpoint was trained on other classes than {self.cfg.data.train}")
