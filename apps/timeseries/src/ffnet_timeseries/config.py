"""Run configuration: the shared sections (run / optim / train from ``metamixer.train.sections``) plus this app's
data / model / eval, read from YAML recipes with dotted command-line overrides (``metamixer.train.config``).

Runs archived before this shape existed (``docs/timeseries_runs/*.json``, older checkpoints) carry their config
in the old shape (``output_dir`` at the top, lr / seed / device / ... under ``train``, ``0`` / ``""`` for off);
:func:`upgrade_config` is the one translation of such a dict into today's keys, values unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from metamixer.train.config import bounded
from metamixer.train.errors import FFNetError
from metamixer.train.sections import OptimConfig, RunConfig, TrainConfig

__all__ = ["DataConfig", "ModelConfig", "TSRunConfig", "TSOptimConfig", "TSTrainConfig", "EvalConfig", "TSConfig",
           "upgrade_config", "is_old_shape"]


@dataclass
class DataConfig:
    dataset: str = "ETTh1"  # a benchmark name (ETTh1, ETTh2, ETTm1, ETTm2, Weather, Exchange, ECL, Traffic) or "custom"
    path: str | None = None  # CSV file; null = the benchmark's file under the data root; relative: cwd, then data root
    layout: Literal["ett_hour", "ett_minute", "custom"] | None = None  # null = the benchmark's (custom for user CSVs)
    features: Literal["M", "S", "MS"] = "M"  # M: all->all, S: target->target, MS: all->target
    target: str = "OT"
    date_column: str = "date"
    seq_len: int = bounded(96, ge=1)
    pred_len: int = bounded(96, ge=1)
    scale: bool = True
    # CSV reading (docs/timeseries.md, "Input CSVs: checks and options"); the defaults read every shipped benchmark unchanged
    delimiter: Literal[",", ";", "\t", "|", "comma", "semicolon", "tab", "pipe"] | None = None  # null = from the header
    sort_timestamps: bool = False  # sort rows by date_column when loading (else out-of-order rows are an error)
    allow_irregular: bool = False  # accept steps other than the dominant one (gaps); never duplicates

    def __post_init__(self) -> None:
        if self.path == "":
            raise ValueError("data.path: use null (not '') for the benchmark's own file")


@dataclass
class ModelConfig:
    ffn_ratio: int = bounded(2, ge=1)  # channel-mixer (CIFFN) expansion
    dims: list[int] = bounded([64], ge=1)  # d_model per stage
    num_blocks: list[int] = bounded([1], ge=1)  # blocks per stage
    large_kernel: int = bounded(51, ge=1)
    small_kernel: int | None = bounded(5, ge=1)  # null = no re-param branch
    patch_size: int = bounded(4, ge=1)
    patch_stride: int = bounded(2, ge=1)
    downsample_ratio: int = bounded(2, ge=1)
    token_expansion: int = bounded(2, ge=1)  # token-mixer (CVIFFN) expansion, hard-coded 2 by the authors
    dropout: float = bounded(0.1, ge=0, lt=1)  # channel-mixer hidden dropout (the scripts' --dropout)
    token_dropouts: list[float] = bounded([0.3, 0.15], ge=0, lt=1)  # authors' hard-coded [hidden, out]
    channel_out_dropout: float = bounded(0.15, ge=0, lt=1)
    head_dropout: float = bounded(0.0, ge=0, lt=1)
    mixing: Literal["cross_variable", "channel_independent"] = "cross_variable"
    revin: bool = True
    affine: bool = False
    subtract_last: bool = False


# The shared sections with this app's defaults (a partial section in a recipe keeps them: ``optim: {lr: 1e-3}``
# is still Adam with the authors' schedule); the keys are core's.
@dataclass
class TSRunConfig(RunConfig):
    output_dir: str = "runs/timeseries"
    seed: int = 2021  # the authors' scripts' seed


@dataclass
class TSOptimConfig(OptimConfig):
    """``optim.schedule`` also takes the authors' per-epoch rules (``ffnet_timeseries.schedule``):
    official_type3 | type3 | type1; constant | cosine are core's per-step schedules."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = bounded(1e-4, gt=0)
    schedule: str = "official_type3"
    first_epoch_lr_div: float = bounded(25.0, gt=0)  # official_type3: the epoch-1 lr is lr / this (app-specific)


@dataclass
class TSTrainConfig(TrainConfig):
    """A step run sets ``train.epochs=null train.steps=N``."""

    epochs: int | None = bounded(100, ge=1)  # the authors' cap; early stopping usually ends a run long before
    batch_size: int = bounded(512, ge=1)
    patience: int | None = bounded(20, ge=1)  # validations without improvement (epochs, in an epoch run)


@dataclass
class EvalConfig:
    batch_size: int | None = bounded(None, ge=1)  # null = train.batch_size (the authors' test loader uses it)
    test_every_epoch: bool = False  # also report test metrics at each validation (costs time; never selects)


@dataclass
class TSConfig:
    run: TSRunConfig = field(default_factory=TSRunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: TSOptimConfig = field(default_factory=TSOptimConfig)
    train: TSTrainConfig = field(default_factory=TSTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------------- the old config shape
#: old ``train.<key>`` -> (new section, new key); a value in _OFF_WHEN_ZERO of 0 / 0.0 becomes null
_MOVED = {
    "seed": ("run", "seed"), "threads": ("run", "threads"), "device": ("run", "device"),
    "precision": ("run", "precision"), "time_budget_s": ("run", "max_time"),
    "lr": ("optim", "lr"), "lr_schedule": ("optim", "schedule"), "first_epoch_lr_div": ("optim", "first_epoch_lr_div"),
    "weight_decay": ("optim", "weight_decay"),
    "eval_batch_size": ("eval", "batch_size"), "test_every_epoch": ("eval", "test_every_epoch"),
}
_OFF_WHEN_ZERO = {"threads", "time_budget_s", "eval_batch_size"}
_DROPPED = {"save_checkpoints"}  # the engine always writes last.pth / best.pth


def is_old_shape(cfg: Mapping[str, Any]) -> bool:
    """Whether ``cfg`` is a config dict of the old shape (no ``run`` section; ``output_dir`` or moved train keys)."""
    train = cfg.get("train") or {}
    return "run" not in cfg and ("output_dir" in cfg or any(k in train for k in (*_MOVED, *_DROPPED,
                                                                                   "max_steps_per_epoch")))


def upgrade_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict of the old shape in today's keys (values unchanged; ``0`` / ``""`` offs become null); a dict
    already in today's shape is returned as a copy. Partial dicts stay partial (defaults are not filled in).

    ``train.max_steps_per_epoch`` > 0 (old smoke runs) has no exact equivalent and is refused."""
    new = copy.deepcopy(dict(cfg))
    if not is_old_shape(new):
        return new
    if "output_dir" in new:
        new.setdefault("run", {})["output_dir"] = new.pop("output_dir")
    train = dict(new.pop("train", None) or {})
    for old, (section, key) in _MOVED.items():
        if old in train:
            value = train.pop(old)
            new.setdefault(section, {})[key] = None if (old in _OFF_WHEN_ZERO and value == 0) else value
    for old in _DROPPED:
        train.pop(old, None)
    if train.pop("max_steps_per_epoch", 0):
        raise FFNetError("an old-shape config with train.max_steps_per_epoch > 0 has no equivalent today "
                         "(use train.steps with train.val_every)")
    if train:
        new["train"] = train
    data, model = new.get("data") or {}, new.get("model") or {}
    for key in ("path", "layout"):
        if data.get(key) == "":
            data[key] = None
    if model.get("small_kernel") == 0:
        model["small_kernel"] = None
    return new
