"""Run configuration (dataclasses -> YAML recipes + dotted CLI overrides via metamixer.train.config).

The sections are the engine's (``run``, ``optim``, ``train``: metamixer.train.sections) plus this app's ``data``,
``model`` and ``eval``, so a knob has the same key as in every other app (``run.seed``, ``optim.lr``,
``train.epochs``, ...). Defaults are the official ScanNet recipe's pipeline and optimizer (fact sheet §4.2) with
the CPU-sized synthetic dataset and ``ffnet3d_tiny``; the recipes in ``recipes/`` set the paper values per
dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from metamixer.train.config import bounded
from metamixer.train.sections import OptimConfig, RunConfig, TrainConfig

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "PointcloudOptimConfig",
    "PointcloudTrainConfig",
    "EvalConfig",
    "scannet_train_pipeline",
    "scannet_tta_views",
    "s3dis_tta_views",
]


def scannet_train_pipeline(
    grid_size: float = 0.02, point_max: int = 102400, elastic: bool = True
) -> list[dict[str, Any]]:
    """The official ScanNet/ScanNet200 training augmentations (S3DIS: no elastic distortion)."""
    pipeline: list[dict[str, Any]] = [
        {"type": "CenterShift", "apply_z": True},
        {"type": "RandomDropout", "dropout_ratio": 0.2, "dropout_application_ratio": 0.2},
        {"type": "RandomRotate", "angle": [-1, 1], "axis": "z", "center": [0, 0, 0], "p": 0.5},
        {"type": "RandomRotate", "angle": [-1 / 64, 1 / 64], "axis": "x", "p": 0.5},
        {"type": "RandomRotate", "angle": [-1 / 64, 1 / 64], "axis": "y", "p": 0.5},
        {"type": "RandomScale", "scale": [0.9, 1.1]},
        {"type": "RandomFlip", "p": 0.5},
        {"type": "RandomJitter", "sigma": 0.005, "clip": 0.02},
    ]
    if elastic:
        pipeline.append({"type": "ElasticDistortion", "distortion_params": [[0.2, 0.4], [0.8, 1.6]]})
    pipeline += [
        {"type": "ChromaticAutoContrast", "p": 0.2, "blend_factor": None},
        {"type": "ChromaticTranslation", "p": 0.95, "ratio": 0.05},
        {"type": "ChromaticJitter", "p": 0.95, "std": 0.05},
        {"type": "GridSample", "grid_size": grid_size, "mode": "train"},
        {"type": "SphereCrop", "point_max": point_max, "mode": "random"},
        {"type": "CenterShift", "apply_z": False},
        {"type": "NormalizeColor"},
    ]
    return pipeline


def val_pipeline(grid_size: float = 0.02) -> list[dict[str, Any]]:
    return [
        {"type": "CenterShift", "apply_z": True},
        {"type": "GridSample", "grid_size": grid_size, "mode": "train"},
        {"type": "CenterShift", "apply_z": False},
        {"type": "NormalizeColor"},
    ]


def scannet_tta_views() -> list[list[dict[str, Any]]]:
    """13 views: rotations 0/90/180/270 deg x scales 1/0.95/1.05, plus one flip."""
    views: list[list[dict[str, Any]]] = []
    for scale in (1.0, 0.95, 1.05):
        for angle in (0.0, 0.5, 1.0, 1.5):
            views.append(
                [
                    {
                        "type": "RandomRotateTargetAngle",
                        "angle": [angle],
                        "axis": "z",
                        "center": [0, 0, 0],
                        "p": 1,
                    },
                    {"type": "RandomScale", "scale": [scale, scale]},
                ]
            )
    views.append([{"type": "RandomFlip", "p": 1}])
    return views


def s3dis_tta_views() -> list[list[dict[str, Any]]]:
    """10 views: scales 0.9/0.95/1/1.05/1.1, each with and without flip."""
    views: list[list[dict[str, Any]]] = []
    for scale in (0.9, 0.95, 1.0, 1.05, 1.1):
        views.append([{"type": "RandomScale", "scale": [scale, scale]}])
        views.append([{"type": "RandomScale", "scale": [scale, scale]}, {"type": "RandomFlip", "p": 1}])
    return views


@dataclass
class DataConfig:
    #: scannet | scannet200 | s3dis | semantickitti | folder | synthetic (generated into ``root`` when missing)
    dataset: str = "synthetic"
    root: str = "runs/pointcloud_synthetic_data"
    train_splits: list[str] | None = None  # None: the dataset's defaults (S3DIS: Areas 1-4, 6)
    val_splits: list[str] | None = None  # None: the dataset's defaults (S3DIS: Area 5)
    num_classes: int = bounded(6, ge=1)
    ignore_index: int = -1
    class_names: list[str] | None = None  # None: the dataset's names
    feat_keys: list[str] = field(default_factory=lambda: ["color", "normal"])
    loop: int = bounded(1, ge=1)  # passes over the training scenes per epoch
    mix_prob: float = bounded(0.0, ge=0, le=1)  # Mix3D probability for training batches (official recipes: 0.8)
    num_workers: int = bounded(0, ge=0)
    cache: bool = False  # keep raw scenes in memory (small datasets)
    train_transforms: list[dict[str, Any]] = field(default_factory=scannet_train_pipeline)
    val_transforms: list[dict[str, Any]] = field(default_factory=val_pipeline)
    test_pre_transforms: list[dict[str, Any]] = field(
        default_factory=lambda: [{"type": "CenterShift", "apply_z": True}, {"type": "NormalizeColor"}]
    )
    test_grid_size: float = bounded(0.02, gt=0)
    test_post_transforms: list[dict[str, Any]] = field(
        default_factory=lambda: [{"type": "CenterShift", "apply_z": False}]
    )
    tta_views: list[list[dict[str, Any]]] = field(default_factory=scannet_tta_views)
    synthetic_train: int = bounded(16, ge=1)
    synthetic_val: int = bounded(4, ge=1)
    synthetic_density: float = bounded(400.0, gt=0)  # points per square metre of surface
    synthetic_seed: int = 0


@dataclass
class ModelConfig:
    name: str = "ffnet3d_tiny"
    #: FFNet3DConfig field overrides, e.g. {drop_path: 0.3, act: relu, enc_depths: [2, 2, 2, 6, 2]}
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PointcloudOptimConfig(OptimConfig):
    """The engine's optimizer section with the official defaults and the official schedule, ``onecycle``:
    torch's OneCycleLR (cosine up from ``lr / div_factor`` to ``lr`` over ``pct_start`` of the run, then cosine
    down to ``lr / div_factor / final_div_factor``) as a pure function of the step. ``cosine`` / ``constant``
    (with ``optim.warmup_*``) are the engine's. Parameters named ``*block*`` train at ``lr * block_lr_scale``
    (official 0.0006) under every schedule; weight decay applies to all parameters as in the official code."""

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = bounded(0.006, gt=0)
    weight_decay: float = bounded(0.05, ge=0)
    schedule: str = "onecycle"  # onecycle | cosine | constant
    block_lr_scale: float = bounded(0.1, gt=0)
    pct_start: float = bounded(0.05, gt=0, lt=1)  # onecycle: fraction of the steps spent rising
    div_factor: float = bounded(10.0, gt=0)  # onecycle: start lr = lr / div_factor
    final_div_factor: float = bounded(1000.0, gt=0)  # onecycle: end lr = start lr / final_div_factor
    #: onecycle: [base, max] of Adam's beta1 (SGD: momentum), cycled opposite to the lr as torch's OneCycleLR
    #: (cycle_momentum=True, its default, kept by the official recipe); null = keep optim.betas / optim.momentum
    cycle_momentum: list[float] | None = bounded([0.85, 0.95], ge=0, lt=1)

    def __post_init__(self) -> None:
        if self.cycle_momentum is not None and len(self.cycle_momentum) != 2:
            raise ValueError(f"optim.cycle_momentum needs [base, max], got {self.cycle_momentum}")


@dataclass
class PointcloudTrainConfig(TrainConfig):
    """The engine's training-loop section with this app's defaults and its loss and SyncBN switches."""

    epochs: int | None = bounded(10, ge=1)  # a step run sets train.epochs=null train.steps=N
    batch_size: int = bounded(2, ge=1)  # scenes per optimizer step per process
    log_every: int = bounded(10, ge=1)
    ce_weight: float = bounded(1.0, ge=0)  # loss = ce_weight * CE + lovasz_weight * Lovasz-softmax
    lovasz_weight: float = bounded(1.0, ge=0)
    sync_bn: bool = False  # SyncBatchNorm across ranks (CUDA DDP only; the official recipes use it)


@dataclass
class EvalConfig:
    tta: bool = True  # all views in data.tta_views; False: only the identity view
    fragments_per_batch: int = bounded(4, ge=1)
    save_ply: bool = False  # coloured predictions into <run.output_dir>/predictions (or --ply DIR)
    max_scenes: int | None = bounded(None, ge=1)  # null: every validation scene
    #: after training, re-score best.pth with this full test protocol (all points, fragments + TTA: Pointcept's
    #: "precise evaluation"); its mIoU is the run's reported one (run.output_dir/results.json)
    precise: bool = True


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: PointcloudOptimConfig = field(default_factory=PointcloudOptimConfig)
    train: PointcloudTrainConfig = field(default_factory=PointcloudTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
