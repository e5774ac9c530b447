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

__all__ = ["ModelConfig", "ValSetConfig", "DataConfig", "SRTrainConfig", "EvalConfig", "SRConfig", "resolve_data_dir",
           "validation_sets", "best_metric", "RECIPES_DIR", "METRICS", "OutputExt"]

LRSource = Literal["auto", "folder", "generate"]
MetricChannel = Literal["y", "rgb"]
OutputExt = Literal["png", "jpg", "tif"]
#: what every validation set and evaluation set is scored with
METRICS = ("psnr", "ssim")

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
class ValSetConfig:
    """One validation set of ``data.val_sets`` (BasicSR's ``datasets.val_1``, ``val_2``, ...): ``path`` a name under
    ``<data_root>/sr`` or a folder (default: ``name``), ``name`` its label in the log and tensorboard
    (``val/<name>/psnr``; default: the folder's name); ``lr_source`` / ``max_images`` default to
    ``data.val_lr_source`` / ``data.val_max_images``. A plain string entry is the same as ``{path: <string>}``."""

    path: str | None = None
    name: str | None = None
    lr_source: LRSource | None = None
    max_images: int | None = bounded(None, ge=1)

    def __post_init__(self) -> None:
        if not self.path and not self.name:
            raise ValueError("a validation set needs a path (a set name under <data>/sr or a folder) or a name")


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
    # validation sets, each scored with PSNR and SSIM (val/<set>/psnr, val/<set>/ssim): names under <data_root>/sr,
    # folders, or {path, name, lr_source, max_images} mappings (ValSetConfig); [] = no validation. Was data.val_set
    val_sets: list[str | ValSetConfig] = field(default_factory=lambda: ["Urban100"])
    val_lr_source: LRSource = "auto"  # for every validation set that does not set its own lr_source
    val_max_images: int | None = bounded(None, ge=1)  # likewise (the first N images of each set)


@dataclass
class SRTrainConfig(TrainConfig):
    """Core's training loop plus what only SR training has: the loss weights and ``torch.compile``."""

    l1_weight: float = bounded(1.0, ge=0)
    fft_weight: float = bounded(0.02, ge=0)  # L1 of the rfft2 spectra (official: 0.02; the paper text: 0.05)
    compile: bool = False  # torch.compile the model's forward (in place, so checkpoints keep their keys)
    # validation scores on the Y channel (BasicSR's test_y_channel: true; the paper protocol) or on R, G, B
    val_metric_channel: MetricChannel = "y"
    best_metric: str | None = None  # what picks best.pth: "<set>/psnr" or "<set>/ssim"; null = the first set's psnr


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
    save_images: str | None = None  # folder for the SR images; null = none
    metric_channel: MetricChannel = "y"  # y: MATLAB Y, the paper protocol (BasicSR test_y_channel); rgb: R, G, B
    recursive: bool = False  # search each set's HR folder recursively; LR files are paired by relative path
    suffix: str | None = None  # saved image name <name><suffix>.<ext>; null = "x<scale>" (babyx2.png)
    ext: OutputExt = "png"  # saved image format
    jpeg_quality: int = bounded(95, ge=1, le=100)  # for ext jpg


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


def validation_sets(data: DataConfig) -> list[ValSetConfig]:
    """The entries of ``data.val_sets`` as full records (path, unique name, lr_source, max_images filled in), so
    the task, the benchmark guard and the run checks read one list instead of each interpreting the shorthands."""
    sets: list[ValSetConfig] = []
    for i, entry in enumerate(data.val_sets):
        e = ValSetConfig(path=entry) if isinstance(entry, str) else entry
        path = e.path or e.name
        assert path is not None  # ValSetConfig.__post_init__
        name = e.name or Path(path).name
        taken = [s.name for s in sets]
        if name in taken:
            raise FFNetError(f"data.val_sets[{i}]: a validation set named {name!r} is already data.val_sets"
                             f"[{taken.index(name)}]; give one of them another name ({{path: {path}, name: ...}})")
        sets.append(ValSetConfig(path=path, name=name, lr_source=e.lr_source or data.val_lr_source,
                                 max_images=e.max_images if e.max_images is not None else data.val_max_images))
    return sets


def best_metric(cfg: SRConfig) -> str | None:
    """The validation metric that picks ``best.pth``: ``train.best_metric``, else the first validation set's PSNR;
    None without validation sets. A metric that no validation produces is refused here, before any training."""
    sets = validation_sets(cfg.data)
    chosen = cfg.train.best_metric
    if not sets:
        if chosen is not None:
            raise FFNetError(f"train.best_metric: {chosen!r} needs validation sets, but data.val_sets is empty")
        return None
    if chosen is None:
        return f"{sets[0].name}/psnr"
    choices = [f"{s.name}/{m}" for s in sets for m in METRICS]
    if chosen not in choices:
        raise FFNetError(f"train.best_metric: {chosen!r} is not a validation metric; expected one of "
                         f"{', '.join(choices)}")
    return chosen
