"""Typed config of a classification run (YAML recipe + dotted overrides, see ``recipes/``).

Sections: ``run`` / ``optim`` / ``train`` are the engine's (metamixer.train.sections; ``optim`` and ``train`` add
only what classification needs), ``data`` / ``model`` / ``eval`` are ours. The shipped recipes spell out the
official FFNet ImageNet recipe (timm trainer defaults + README flags): AdamW lr 1e-3 per 1024 images, wd 0.05,
cosine with 5 warmup epochs from 1e-6 to min 1e-5, 300 epochs, RandAugment m9-mstd0.5, random erasing 0.25,
mixup 0.8 / cutmix 1.0, label smoothing 0.1, EMA 0.9995, seed 42. ``null`` is the only "off" value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from metamixer.train.config import bounded
from metamixer.train.images import DEFAULT_MAX_PIXELS
from metamixer.train.sections import OptimConfig, RunConfig, TrainConfig

__all__ = ["ModelConfig", "DataConfig", "DistillConfig", "ClsOptimConfig", "ClsTrainConfig", "EvalConfig",
           "ClsConfig", "resolve_lr"]


@dataclass
class ModelConfig:
    name: str = "ffnet_1"
    #: null = take the number of classes from the training set
    num_classes: int | None = bounded(None, ge=1)
    #: null = 0 (timm's default for every model); the recipes set the paper's rates (0.1 / 0.15 / 0.35 / 0.4)
    drop_path_rate: float | None = bounded(None, ge=0, lt=1)
    drop_rate: float = bounded(0.0, ge=0, lt=1)
    #: FFNetSpec overrides for custom sizes, e.g. {widths: [16, 32, 64, 128], depths: [1, 1, 2, 1]}
    spec: dict[str, Any] = field(default_factory=dict)
    #: initial weights (official .pth.tar or ours); ``ignore_head`` to fine-tune to another label set
    pretrained: str | None = None
    pretrained_ema: bool = False
    ignore_head: bool = False
    grad_checkpointing: bool = False
    channels_last: bool = False


@dataclass
class DataConfig:
    #: a class-folder root (train/<class>/*.jpg) or a .csv/.txt list (path,label)
    train: str = ""
    val: str | None = None
    #: base folder for relative paths of list files (default: the list's folder)
    root: str | None = None
    #: null = from the model's pretrained_cfg (256; 384 for *_384)
    input_size: int | None = bounded(None, ge=1)
    #: fraction of the resized image the center crop keeps (eval: resize to input_size / crop_pct, then crop)
    crop_pct: float | None = bounded(None, gt=0, le=1)
    interpolation: Literal["bicubic", "bilinear", "nearest", "lanczos"] = "bicubic"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = bounded((0.229, 0.224, 0.225), gt=0)
    #: RandomResizedCrop area fractions [min, max]
    scale: tuple[float, ...] = bounded((0.08, 1.0), gt=0, le=1)
    hflip: float = bounded(0.5, ge=0, le=1)
    #: RandAugment (timm scale: rand-m9-mstd0.5-inc1): rand_n ops per image (0 = none)
    rand_n: int = bounded(2, ge=0)
    rand_m: float = bounded(9.0, ge=0)
    rand_mstd: float = bounded(0.5, ge=0)
    reprob: float = bounded(0.25, ge=0, le=1)
    #: Beta-distribution alphas (0 = that mix is never drawn, timm's convention)
    mixup: float = bounded(0.8, ge=0)
    cutmix: float = bounded(1.0, ge=0)
    mixup_prob: float = bounded(1.0, ge=0, le=1)
    mixup_switch_prob: float = bounded(0.5, ge=0, le=1)
    label_smoothing: float = bounded(0.1, ge=0, lt=1)
    workers: int = bounded(8, ge=0)
    #: an unreadable image (truncated, not an image, over max_pixels): stop naming it, or leave it out
    on_bad_image: Literal["error", "skip"] = "error"
    allow_empty_classes: bool = False
    #: images declaring more pixels are refused before decoding (decompression bombs); null = no limit
    max_pixels: int | None = bounded(DEFAULT_MAX_PIXELS, ge=1)
    #: apply the EXIF orientation (what a photo viewer shows); timm's pipeline ignores it (false = timm's pixels)
    exif: bool = True

    def __post_init__(self) -> None:
        # ValueError here becomes one ConfigError line (metamixer.train.config), so each names its dotted key
        for key in ("mean", "std"):
            value = getattr(self, key)
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ValueError(f"data.{key} must be 3 finite numbers (R, G, B), got {list(value)}")
        if len(self.scale) != 2 or not self.scale[0] <= self.scale[1]:
            raise ValueError(f"data.scale must be [min, max] area fractions with min <= max, got {list(self.scale)}")


@dataclass
class DistillConfig:
    #: "hard" = DeiT hard-label distillation (official KD runs); null = off
    type: Literal["hard"] | None = None
    #: our model name (ffnet_*) or "timm:<name>" (needs timm); weights from ``teacher_checkpoint``
    teacher_model: str = "ffnet_3"
    teacher_checkpoint: str | None = None
    alpha: float = bounded(0.5, ge=0, le=1)


@dataclass
class ClsOptimConfig(OptimConfig):
    """The engine's optimizer section plus the README's linear lr scaling.

    ``optim.lr: null`` (the default here) means ``base_lr x global batch / lr_base_batch``; :func:`resolve_lr`
    turns it into the absolute lr *before* the Trainer is built (train.run does this), because the global batch
    is only known once the process group exists.
    """

    lr: float | None = bounded(None, gt=0)
    base_lr: float = bounded(1e-3, gt=0)
    lr_base_batch: int = bounded(1024, ge=1)


@dataclass
class ClsTrainConfig(TrainConfig):
    """The engine's loop section plus classification's own training knobs."""

    #: EMA decay min(ema_decay, (1+n)/(10+n)) early on: needed for short runs, where a constant decay would keep
    #: the EMA (incl. BN statistics) close to the random init
    #: torch.compile the training forward
    compile: bool = False
    #: SyncBatchNorm across DDP ranks (CUDA only)
    sync_bn: bool = False
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class EvalConfig:
    #: validation batch size during training; null = train.batch_size
    batch_size: int | None = bounded(None, ge=1)


@dataclass
class ClsConfig:
    """A whole run. ``train`` has no default length (give train.epochs or train.steps in the recipe)."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: ClsOptimConfig = field(default_factory=ClsOptimConfig)
    train: ClsTrainConfig = field(default_factory=ClsTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def resolve_lr(cfg: ClsOptimConfig, global_batch: int) -> float:
    """``optim.lr`` if given, else ``base_lr * global_batch / lr_base_batch`` (1e-3 at 1024 images)."""
    return cfg.lr if cfg.lr is not None else cfg.base_lr * global_batch / cfg.lr_base_batch
