"""The config sections every app shares, so one knob has one name everywhere.

An app's config is a dataclass with the sections ``run``, ``data``, ``model``, ``optim``, ``train`` and ``eval``.
``run``, ``optim`` and ``train`` are these classes (or subclasses that add the app's own fields); ``data``,
``model`` and ``eval`` are the app's. ``null`` is the only "off" value; every number is range-checked when the
config is built (:func:`metamixer.train.config.bounded`), naming the dotted key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from metamixer.train.config import bounded

__all__ = ["Precision", "RunConfig", "OptimConfig", "TrainConfig"]

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass
class RunConfig:
    """Where and how a run executes (nothing here changes what is learned, except ``seed``)."""

    output_dir: str = "runs/ffnet"  # the run folder: config.yaml, log.txt, tensorboard events, last/best.pth
    seed: int = 0
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps
    precision: Precision = "fp32"  # autocast dtype; fp16 adds loss scaling on CUDA
    threads: int | None = bounded(None, ge=1)  # torch.set_num_threads; null = torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms + cudnn.deterministic
    max_time: float | None = bounded(None, gt=0)  # seconds of wall time; then a resumable checkpoint and stop
    max_steps: int | None = bounded(None, ge=1)  # stop after this optimizer step as if interrupted (the schedule
    # still spans the whole run: splits a run over job time limits, and keeps smoke tests short)


@dataclass
class OptimConfig:
    """The optimizer and its learning-rate schedule (per optimizer step; see metamixer.train.schedules)."""

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = bounded(1e-3, gt=0)
    weight_decay: float = bounded(0.0, ge=0)
    betas: list[float] = bounded([0.9, 0.999], ge=0, lt=1)
    eps: float = bounded(1e-8, gt=0)
    momentum: float = bounded(0.9, ge=0, lt=1)  # sgd only
    clip_grad: float | None = bounded(None, gt=0)  # max global gradient norm
    schedule: str = "cosine"  # constant | cosine, or an app's own (named in its docs)
    warmup_steps: int = bounded(0, ge=0)
    warmup_epochs: float = bounded(0.0, ge=0)  # epoch runs: added to warmup_steps as epochs x steps per epoch
    warmup_lr: float = bounded(0.0, ge=0)  # lr at the first warmup step
    min_lr: float = bounded(0.0, ge=0)  # cosine's end value


@dataclass
class TrainConfig:
    """The training loop. Give ``epochs`` (epoch runs: validation and checkpoints count epochs) or ``steps``
    (step runs: they count optimizer steps)."""

    epochs: int | None = bounded(None, ge=1)
    steps: int | None = bounded(None, ge=1)
    batch_size: int = bounded(32, ge=1)  # per process (the global batch is batch_size x processes x accum_steps)
    accum_steps: int = bounded(1, ge=1)  # micro-batches per optimizer step
    ema_decay: float | None = bounded(None, ge=0, le=1)  # null = no EMA
    ema_warmup: bool = False  # decay min(ema_decay, (1 + n) / (10 + n)) over the first updates (short runs)
    eval_weights: Literal["model", "ema"] = "model"  # which weights validation scores and best.pth is chosen by
    val_every: int | None = bounded(1, ge=1)  # epochs (epoch runs) or steps (step runs); null = never
    save_every: int | None = bounded(1, ge=1)  # last.pth cadence, same unit; also written at every validation
    keep_every: int | None = bounded(None, ge=1)  # also keep a copy step_NNNNNNN.pth (epoch runs: epoch_NNNN.pth)
    # of last.pth at this cadence (same unit as save_every); null = only last.pth / best.pth
    log_every: int = bounded(50, ge=1)  # optimizer steps between train/* scalars
    patience: int | None = bounded(None, ge=1)  # early stop after this many validations without improvement
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/Inf loss stops the run, or skips its batch
    progress: bool = True  # tqdm bars

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(f"set exactly one of train.epochs and train.steps (got epochs={self.epochs}, "
                             f"steps={self.steps})")
