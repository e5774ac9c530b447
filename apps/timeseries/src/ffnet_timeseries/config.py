"""Run configuration (dataclasses -> YAML recipes + dotted CLI overrides via ``metamixer.train.config``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "TSConfig"]


@dataclass
class DataConfig:
    dataset: str = "ETTh1"  # a benchmark name (ETTh1, ETTh2, ETTm1, ETTm2, Weather, Exchange, ECL, Traffic) or "custom"
    path: str = ""  # CSV file; "" = the benchmark's file under the data root; relative paths: cwd, then data root
    layout: str = ""  # ett_hour | ett_minute | custom; "" = the benchmark's layout (custom for user CSVs)
    features: str = "M"  # M: all->all, S: target->target, MS: all->target
    target: str = "OT"
    date_column: str = "date"
    seq_len: int = 96
    pred_len: int = 96
    scale: bool = True


@dataclass
class ModelConfig:
    ffn_ratio: int = 2  # channel-mixer (CIFFN) expansion
    dims: list[int] = field(default_factory=lambda: [64])  # d_model per stage
    num_blocks: list[int] = field(default_factory=lambda: [1])  # blocks per stage
    large_kernel: int = 51
    small_kernel: int = 5  # 0 = no re-param branch
    patch_size: int = 4
    patch_stride: int = 2
    downsample_ratio: int = 2
    token_expansion: int = 2  # token-mixer (CVIFFN) expansion, hard-coded 2 by the authors
    dropout: float = 0.1  # channel-mixer hidden dropout (the scripts' --dropout)
    token_dropouts: list[float] = field(default_factory=lambda: [0.3, 0.15])  # authors' hard-coded values
    channel_out_dropout: float = 0.15
    head_dropout: float = 0.0
    mixing: str = "cross_variable"  # or channel_independent
    revin: bool = True
    affine: bool = False
    subtract_last: bool = False


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 512
    eval_batch_size: int = 0  # 0 = batch_size (the authors' test loader uses the train batch size)
    lr: float = 1e-4
    lr_schedule: str = "official_type3"  # official_type3 | type3 | type1 | constant | cosine
    first_epoch_lr_div: float = 25.0  # official_type3: epoch-1 lr = lr / this
    weight_decay: float = 0.0
    patience: int = 20  # early stopping on validation MSE
    seed: int = 2021
    threads: int = 0  # torch.set_num_threads; 0 = leave the default
    device: str = "auto"  # auto | cpu | cuda
    # autocast precision for forward passes (TSLib's --use_amp): fp32 | bf16 | fp16 (fp16: loss scaling on CUDA).
    # Reproduction recipes keep fp32; bf16 on this 2-core CPU: ETTh1 step ~1.3x faster, see docs/timeseries.md.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    max_steps_per_epoch: int = 0  # 0 = full epochs (>0 only for smoke tests)
    time_budget_s: float = 0.0  # >0: stop training (after validating) once this much wall time is spent
    test_every_epoch: bool = False  # also report test metrics each epoch (costs time; never used for selection)
    save_checkpoints: bool = True  # last.pth / best.pth in output_dir (resume needs them)
    progress: bool = True


@dataclass
class TSConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/timeseries"
