"""Typed config of FFNetSR (YAML recipe + dotted overrides via :mod:`metamixer.train.config`).

The sections are the ones every FFNet app has: ``run`` / ``optim`` / ``train`` are core's
(:mod:`metamixer.train.sections`; ``train`` adds the SR loss weights and ``compile``), ``data`` / ``model`` /
``eval`` are SR's. Without a recipe the defaults are the official FFNetSR-light x2 recipe
(official_architecture.md §2.4): Adam lr 1e-3, betas (0.9, 0.99), cosine to 1e-5 over 500k steps, L1 + 0.02·FFT,
batch 16 per GPU, LR patches of 96, validation every 5k steps with PSNR-Y, no EMA, fp32. A recipe that has an
``optim:`` section starts that section from core's defaults (AdamW, betas 0.999, min_lr 0), so the shipped
recipes spell their optimizer out in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from metamixer.train.config import bounded
from metamixer.train.errors import FFNetError
from metamixer.train.sections import OptimConfig, RunConfig, TrainConfig

__all__ = ["ModelConfig", "DataConfig", "SRTrainConfig", "EvalConfig", "SRConfig", "resolve_data_dir", "RECIPES_DIR"]

LRSource = Literal["auto", "folder", "generate"]

#: shipped recipes (editable src layout: apps/super_resolution/recipes); None when not installed from a checkout
RECIPES_DIR: Path | None = Path(__file__).resolve().parents[2] / "recipes"
if not RECIPES_DIR.is_dir():
    RECIPES_DIR = None


@dataclass
class ModelConfig:
    name: Literal["ffnetsr_light", "ffnetsr"] = "ffnetsr_light"
    scale: int = bounded(2, ge=1)
    depth: int | None = bounded(None, ge=1)  # override the number of blocks (CPU recipes); null = the published depth
    pretrained: str | None = None  # strict init from an FFNet checkpoint or the authors' BasicSR .pth


@dataclass
class DataConfig:
    # HR folders (several = DF2K): HR-only (LR generated with the MATLAB-exact imresize) or with a sibling LR folder
    # (<set>/HR + <set>/LR_bicubic/X<s>, DIV2K_train_HR + DIV2K_train_LR_bicubic/X<s>); a folder holding only an HR/
    # subfolder (sr/T91) means that subfolder; relative paths that do not exist are looked up under the data root
    train_dirs: list[str] = field(default_factory=lambda: ["DIV2K/DIV2K_train_HR"])
    # a training folder that is an evaluation set (Set5, Set14, B100, Urban100, Manga109) is refused unless true
    allow_benchmark_training: bool = False
    lr_source: LRSource = "auto"
    patch_size: int = bounded(96, ge=1)  # LR patch side (gt_size 192 at x2 in the official configs; the paper says 64)
    enlarge_ratio: int = bounded(1, ge=1)  # passes over the training images per epoch (BasicSR's
    # dataset_enlarge_ratio); changes only where epochs end (progress bars, loader restarts, epoch runs), never
    # the batches of a step run
    num_workers: int = bounded(8, ge=0)
    cache_images: bool = False
    augment: bool = True
    val_set: str | None = "Urban100"  # a name under <data_root>/sr or a folder; null = no validation
    val_lr_source: LRSource = "auto"
    val_max_images: int | None = bounded(None, ge=1)


@dataclass
class SRTrainConfig(TrainConfig):
    """Core's training loop plus what only SR training has: the loss weights and ``torch.compile``."""

    l1_weight: float = bounded(1.0, ge=0)
    fft_weight: float = bounded(0.02, ge=0)  # L1 of the rfft2 spectra (official: 0.02; the paper text: 0.05)
    compile: bool = False  # torch.compile the model's forward (in place, so checkpoints keep their keys)


@dataclass
class EvalConfig:
    """What ``ffnet-sr-eval`` scores and how (its flags set these; ``eval.tile=256`` works as well)."""

    sets: list[str] = field(default_factory=lambda: ["Set5", "Set14", "B100"])  # names under <data>/sr or folders
    crop_border: int | None = bounded(None, ge=0)  # pixels shaved per side; null = the scale (the paper protocol)
    lr_source: LRSource = "auto"
    self_ensemble: bool = False  # x8 flips/rotations averaged (the '+' rows)
    tile: int | None = bounded(None, gt=0)  # LR tile side (exact; bounds memory for big images); null = whole image
    tile_pad: int | None = bounded(None, ge=0)  # context per tile side; null = the receptive radius (exact)
    pad_multiple: int = bounded(1, ge=1)  # reflect-pad LR inputs to a multiple and crop the output back
    save_images: str | None = None  # folder for the SR PNGs; null = none


def _official_optim() -> OptimConfig:
    return OptimConfig(name="adam", lr=1e-3, betas=[0.9, 0.99], min_lr=1e-5)


def _official_train() -> SRTrainConfig:
    return SRTrainConfig(steps=500_000, batch_size=16, val_every=5000, save_every=5000, log_every=100)


@dataclass
class SRConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/ffnetsr_light_x2"))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=_official_optim)
    train: SRTrainConfig = field(default_factory=_official_train)
    eval: EvalConfig = field(default_factory=EvalConfig)


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
