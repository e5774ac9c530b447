"""FFNetSR training as a core :class:`~metamixer.train.loop.Task`: what is SR-specific and nothing else.

The task supplies the model, the random-patch batches, the L1 + FFT loss and the validation: PSNR and SSIM
(Y channel by default, ``train.val_metric_channel``; crop = scale) on every set of ``data.val_sets``, reported as
``<set>/psnr`` and ``<set>/ssim`` (tensorboard ``val/<set>/psnr``), ``best.pth`` picked by ``train.best_metric``
(default: the first set's PSNR), with a bicubic | SR | HR crop of the first set's first image in tensorboard; core's :class:`~metamixer.train.loop.Trainer` does the optimizer, the
cosine schedule, AMP, clipping, accumulation, EMA, DDP, limits, checkpoints, ``best.pth`` and exact resume.

An *epoch* is ``data.enlarge_ratio`` passes' worth of patches over the training images, rounded up to whole
batches (:func:`~ffnet_sr.data.dataset.epoch_steps`; BasicSR's epoch). Epochs are consecutive pieces of one
run-wide sample stream (:class:`~ffnet_sr.data.dataset.EpochBatchSampler`): micro-batch ``t`` of the run uses
samples ``(t·processes + rank)·B ..``, and sample ``k`` is a pure function of ``(seed, k)``. So the batches of an
epoch are a pure function of (seed, epoch), a resumed run asks for exactly the batches it missed, and in a step
run (``train.steps``) the epoch length changes nothing but where progress bars and loader passes restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from metamixer.train.distributed import all_gather_object
from metamixer.train.logger import RunLogger
from metamixer.train.loop import RunContext, Task
from metamixer.train.seed import make_generator, seed_worker

from .config import SRConfig, best_metric, resolve_data_dir, validation_sets
from .data.benchmark_guard import check_training_dirs
from .data.dataset import (
    BenchmarkPair,
    EpochBatchSampler,
    SRTrainDataset,
    epoch_steps,
    hr_folder,
    load_benchmark,
)
from .inference import bicubic_upscaler, cpu_fast_layout, model_upscaler
from .losses import SRLoss
from .models import create_model
from .scoring import evaluate_pairs

__all__ = ["SRTask", "build_dataset", "build_model", "side_by_side"]


def build_model(cfg: SRConfig) -> nn.Module:
    """The configured FFNetSR (published depth unless ``model.depth``), optionally initialised from weights."""
    m = cfg.model
    return create_model(m.name, m.scale, pretrained=m.pretrained, **({"depth": m.depth} if m.depth else {}))


def side_by_side(pair: BenchmarkPair, sr: np.ndarray, scale: int, size: int = 192) -> np.ndarray:
    """``bicubic | SR | HR`` centre crops as one HWC uint8 image for tensorboard."""
    bic = bicubic_upscaler(scale)(pair.lr)
    h, w = pair.hr.shape[:2]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    crops = []
    for img in (bic, sr, pair.hr):
        c = img[top : top + size, left : left + size]
        crops.append(np.repeat(c[:, :, None], 3, 2) if c.ndim == 2 else c)
    return np.concatenate(crops, axis=1)


def build_dataset(cfg: SRConfig) -> SRTrainDataset:
    """The training patches of ``cfg.data``; every image's header is checked here (size, pixel guard), and a
    training folder that is an evaluation set is refused (:mod:`~ffnet_sr.data.benchmark_guard`), so
    :func:`~ffnet_sr.train.train` calls it before the run folder is created: bad data leaves no folder behind."""
    d = cfg.data
    dirs = [hr_folder(resolve_data_dir(p)) for p in d.train_dirs]
    eval_folders = [*(s.path for s in validation_sets(d)), *cfg.eval.sets]
    findings = check_training_dirs(dirs, d.allow_benchmark_training, eval_folders)
    dataset = SRTrainDataset(dirs, cfg.model.scale, d.patch_size, d.lr_source, d.augment, d.cache_images,
                             cfg.run.seed)
    dataset.notes.extend(findings)
    return dataset


class SRTask(Task):
    """Random LR/HR patches -> ``train.l1_weight``·L1 + ``train.fft_weight``·FFT-L1; validation PSNR and SSIM on
    each of ``data.val_sets`` (``best.pth`` = the best ``train.best_metric``; no validation and no best.pth when
    the list is empty)."""

    monitor_mode = "max"

    def __init__(self, cfg: SRConfig, ctx: RunContext, dataset: SRTrainDataset | None = None) -> None:
        model = build_model(cfg)
        if cfg.train.compile:
            model.compile()  # in place: the state_dict keys (and so checkpoints) stay those of the plain model
        super().__init__(model)
        self.cfg, self.ctx = cfg, ctx
        self.scale = cfg.model.scale
        self.criterion = SRLoss(cfg.train.l1_weight, cfg.train.fft_weight)
        d = cfg.data
        self.dataset = build_dataset(cfg) if dataset is None else dataset
        info = ctx.info
        self._steps = epoch_steps(len(self.dataset), cfg.train.batch_size, info.world_size, d.enlarge_ratio)
        self.sampler = EpochBatchSampler(cfg.train.batch_size, self._steps, info.rank, info.world_size)
        # one loader for the whole run (persistent workers keep their decoded-image caches between epochs); the
        # patches do not depend on the workers' seeds, the generator only keeps loading off the global RNG
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=d.num_workers,
                                 worker_init_fn=seed_worker, generator=make_generator(cfg.run.seed),
                                 pin_memory=ctx.device.type == "cuda", persistent_workers=d.num_workers > 0)
        self.val_sets = validation_sets(d)
        self.monitor = best_metric(cfg)
        self.y_channel = cfg.train.val_metric_channel == "y"
        self.val_pairs: dict[str, list[BenchmarkPair]] = {}
        self._preview: np.ndarray | None = None
        if self.val_sets and info.is_main:
            channel = "Y" if self.y_channel else "RGB"
            ctx.logger.info(f"validation: PSNR and SSIM on {channel}, crop {self.scale}, every "
                            f"{cfg.train.val_every} steps; best.pth by {self.monitor}")
            for s in self.val_sets:
                pairs = load_benchmark(s.path, self.scale, s.lr_source, s.max_images)
                self.val_pairs[s.name] = pairs
                bic = evaluate_pairs(bicubic_upscaler(self.scale), pairs, self.scale, y_channel=self.y_channel)
                ctx.logger.info(f"validation set {s.name} x{self.scale} ({len(pairs)} images, {s.path}): bicubic "
                                f"psnr {bic['psnr']:.3f} dB, ssim {bic['ssim']:.4f}")

    def steps_per_epoch(self) -> int:
        return self._steps

    def train_batches(self, epoch: int, start: int = 0) -> Iterable[Any]:
        self.sampler.set_position(epoch, start)
        return self.loader

    def training_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        lr, hr = (t.to(self.ctx.device, non_blocking=True) for t in batch)
        lr = cpu_fast_layout(lr)  # oneDNN depthwise convs on CPU (inference.cpu_fast_layout)
        total, parts = self.criterion(model(lr).float(), hr)
        return {"loss": total, **{k: v for k, v in parts.items() if k != "total"}}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``<set>/psnr`` and ``<set>/ssim`` (crop = scale) of every validation set, computed on the main process
        and shared with the others."""
        if self.monitor is None:
            return {}
        metrics: dict[str, float] | None = None
        if self.ctx.is_main:
            upscaler = model_upscaler(model, self.scale, self.ctx.device, precision=self.cfg.run.precision)
            first: list[np.ndarray] = []

            def remember_first(lr: np.ndarray) -> np.ndarray:
                sr = upscaler(lr)
                if not first:
                    first.append(sr)
                return sr

            metrics = {}
            for i, (name, pairs) in enumerate(self.val_pairs.items()):
                res = evaluate_pairs(remember_first if i == 0 else upscaler, pairs, self.scale,
                                     y_channel=self.y_channel)
                metrics[f"{name}/psnr"], metrics[f"{name}/ssim"] = float(res["psnr"]), float(res["ssim"])
            first_pairs = next(iter(self.val_pairs.values()))
            self._preview = side_by_side(first_pairs[0], first[0], self.scale)
        if self.ctx.info.is_distributed:
            metrics = all_gather_object(metrics)[0]
        assert metrics is not None
        return metrics

    def on_validation(self, model: nn.Module, metrics: Mapping[str, float], step: int, logger: RunLogger) -> None:
        if self._preview is not None:
            logger.image("val/bicubic_sr_hr", self._preview, step)
