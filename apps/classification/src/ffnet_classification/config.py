"""Typed config of a classification run (YAML recipe + dotted overrides, see ``recipes/``).

Defaults are the official FFNet ImageNet recipe (timm trainer defaults + README flags): AdamW lr 1e-3 per 1024
images, wd 0.05, cosine with 5 warmup epochs from 1e-6 to min 1e-5, 300 epochs, RandAugment m9-mstd0.5,
random erasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1, EMA 0.9995, seed 42.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class ModelConfig:
    name: str = "ffnet_1"
    #: 0 = take the number of classes from the training set
    num_classes: int = 0
    #: None = the variant's default (0.1 / 0.15 / 0.35 / 0.4)
    drop_path_rate: float | None = None
    drop_rate: float = 0.0
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
    #: None = from the model's pretrained_cfg (256; 384 for *_384)
    input_size: int | None = None
    crop_pct: float | None = None
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    scale: tuple[float, ...] = (0.08, 1.0)
    hflip: float = 0.5
    #: RandAugment (timm scale: rand-m9-mstd0.5-inc1); rand_n=0 disables
    rand_n: int = 2
    rand_m: float = 9.0
    rand_mstd: float = 0.5
    reprob: float = 0.25
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.1
    workers: int = 8
    on_bad_image: Literal["error", "skip"] = "error"
    allow_empty_classes: bool = False


@dataclass
class OptimConfig:
    opt: Literal["adamw", "sgd"] = "adamw"
    #: absolute lr; None = base_lr * global_batch / lr_base_batch (the README's linear scaling)
    lr: float | None = None
    base_lr: float = 1e-3
    lr_base_batch: int = 1024
    weight_decay: float = 0.05
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    #: max global grad norm; None = no clipping
    clip_grad: float | None = None
    sched: Literal["cosine", "none"] = "cosine"
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5


@dataclass
class DistillConfig:
    #: "hard" = DeiT hard-label distillation (official KD runs), "none" = off
    type: Literal["none", "hard"] = "none"
    #: our model name (ffnet_*) or "timm:<name>" (needs timm); weights from ``teacher_checkpoint``
    teacher_model: str = "ffnet_3"
    teacher_checkpoint: str | None = None
    alpha: float = 0.5


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    epochs: int = 300
    #: per process (the README: 128 per GPU x 8 GPUs = 1024)
    batch_size: int = 128
    eval_batch_size: int | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    ema: bool = True
    ema_decay: float = 0.9995
    #: decay min(ema_decay, (1+n)/(10+n)) early on: needed for short runs, where a constant decay would
    #: keep the EMA (incl. BN statistics) close to the random init
    ema_warmup: bool = False
    #: which weights pick best.pth: the live model or the EMA copy
    best_metric_source: Literal["model", "ema"] = "model"
    seed: int = 42
    deterministic: bool = False
    device: str = "auto"
    output_dir: str = "runs/cls"
    eval_interval: int = 1
    log_interval: int = 50
    #: cap on optimizer steps per epoch (smoke runs); None = the whole epoch
    max_steps_per_epoch: int | None = None
    #: end this invocation after N more epochs (time-limited cluster jobs: resubmit with --resume last.pth);
    #: the schedule still spans ``epochs``
    stop_after_epochs: int | None = None
    compile: bool = False
    sync_bn: bool = False
    threads: int | None = None
