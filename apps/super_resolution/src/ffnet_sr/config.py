"""Typed training config for FFNetSR (YAML recipe + dotted overrides via :mod:`metamixer.train.config`).

Defaults are the official FFNetSR-light x2 recipe (official_architecture.md §2.4): Adam lr 1e-3, betas
(0.9, 0.99), cosine to 1e-5 over 500k iterations, L1 + 0.02·FFT, batch 16 per GPU x 4 GPUs, LR patches of 96,
validation every 5k iterations with PSNR-Y (crop = scale), no EMA, no AMP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from metamixer.train.errors import FFNetError

__all__ = ["ModelConfig", "DataConfig", "OptimConfig", "LossConfig", "TrainConfig", "SRConfig", "resolve_data_dir"]


@dataclass
class ModelConfig:
    name: Literal["ffnetsr_light", "ffnetsr"] = "ffnetsr_light"
    scale: int = 2
    depth: int | None = None  # override the number of blocks (CPU recipes); null = the published depth
    pretrained: str | None = None  # strict init from an FFNet checkpoint or the authors' BasicSR .pth


@dataclass
class DataConfig:
    # HR folders (several = DF2K); relative paths that do not exist are looked up under the data root
    train_dirs: list[str] = field(default_factory=lambda: ["DIV2K/DIV2K_train_HR"])
    lr_source: Literal["auto", "folder", "generate"] = "auto"
    patch_size: int = 96  # LR patch side (gt_size 192 at x2 in the official configs; the paper says 64)
    batch_size: int = 16  # per process
    num_workers: int = 8
    cache_images: bool = False
    augment: bool = True
    val_set: str | None = "Urban100"  # a name under <data_root>/sr or a folder; null = no validation
    val_lr_source: Literal["auto", "folder", "generate"] = "auto"
    val_max_images: int | None = None


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # list: core tuple[float, float] coercion bug
    weight_decay: float = 0.0
    eta_min: float = 1e-5
    warmup_steps: int = 0
    grad_clip: float | None = None


@dataclass
class LossConfig:
    l1_weight: float = 1.0
    fft_weight: float = 0.02


@dataclass
class TrainConfig:
    output_dir: str = "runs/ffnetsr_light_x2"
    seed: int = 0
    total_steps: int = 500_000
    stop_at: int | None = None  # stop after this step as if interrupted (split a run over job time limits)
    max_minutes: float | None = None  # wall-clock safety stop (saves last.pth); the schedule still spans total_steps
    device: str = "auto"  # auto = cuda if available, else cpu
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    ema_decay: float = 0.0  # 0 = no EMA (official); e.g. 0.999 validates/saves the EMA weights too
    val_every: int = 5000
    save_every: int = 5000
    log_every: int = 100
    compile: bool = False
    deterministic: bool = False
    threads: int | None = None  # torch.set_num_threads on CPU


@dataclass
class SRConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def resolve_data_dir(path: str) -> Path:
    """A folder as given, or relative to the data root (``$FFNET_DATA``) — recipes stay machine-independent."""
    from metamixer.train.datadir import data_root

    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if not p.is_absolute():
        for candidate in (data_root() / p, data_root() / "sr" / p):
            if candidate.is_dir():
                return candidate
    raise FFNetError(f"data folder not found: {path} (also looked under {data_root()}); set FFNET_DATA or fix data.train_dirs")
