"""Run configuration (dataclasses -> YAML recipes + dotted CLI overrides via metamixer.train.config).

Defaults are the official ScanNet recipe's pipeline (fact sheet §4.2) with the CPU-sized synthetic dataset and
``ffnet3d_tiny``; the recipes in ``recipes/`` set the paper values per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
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
    #: scannet | scannet200 | s3dis | folder | synthetic (generated into ``root`` when missing)
    dataset: str = "synthetic"
    root: str = "runs/pointcloud_synthetic_data"
    train_splits: list[str] | None = None  # None: the dataset's defaults (S3DIS: Areas 1-4, 6)
    val_splits: list[str] | None = None  # None: the dataset's defaults (S3DIS: Area 5)
    num_classes: int = 6
    ignore_index: int = -1
    class_names: list[str] | None = None  # None: the dataset's names
    feat_keys: list[str] = field(default_factory=lambda: ["color", "normal"])
    loop: int = 1
    mix_prob: float = 0.0  # Mix3D probability for training batches (official recipes: 0.8)
    num_workers: int = 0
    cache: bool = False  # keep raw scenes in memory (small datasets)
    train_transforms: list[dict[str, Any]] = field(default_factory=scannet_train_pipeline)
    val_transforms: list[dict[str, Any]] = field(default_factory=val_pipeline)
    test_pre_transforms: list[dict[str, Any]] = field(
        default_factory=lambda: [{"type": "CenterShift", "apply_z": True}, {"type": "NormalizeColor"}]
    )
    test_grid_size: float = 0.02
    test_post_transforms: list[dict[str, Any]] = field(
        default_factory=lambda: [{"type": "CenterShift", "apply_z": False}]
    )
    tta_views: list[list[dict[str, Any]]] = field(default_factory=scannet_tta_views)
    synthetic_train: int = 16
    synthetic_val: int = 4
    synthetic_density: float = 400.0
    synthetic_seed: int = 0


@dataclass
class ModelConfig:
    name: str = "ffnet3d_tiny"
    #: FFNet3DConfig field overrides, e.g. {drop_path: 0.3, act: relu, enc_depths: [2, 2, 2, 6, 2]}
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (schedule still spans `epochs`)
    batch_size: int = 2  # scenes per step per process
    lr: float = 0.006
    block_lr_scale: float = 0.1  # parameters whose name contains "block" train at lr * this (official 0.0006)
    weight_decay: float = 0.05
    pct_start: float = 0.05
    div_factor: float = 10.0
    final_div_factor: float = 1000.0
    ce_weight: float = 1.0
    lovasz_weight: float = 1.0
    precision: str = "fp32"  # fp32 | fp16 (AMP, CUDA only; the official recipe uses it); spconv has no bf16
    grad_clip: float | None = None
    sync_bn: bool = False  # SyncBatchNorm across ranks (CUDA DDP only; the official recipes use it)
    seed: int = 0
    deterministic: bool = False
    eval_every: int = 1  # epochs between validations (0: never)
    log_every: int = 10  # steps between scalar logs
    threads: int = 0  # torch intra-op threads (0: torch default)
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class EvalConfig:
    tta: bool = True  # all views in data.tta_views; False: only the identity view
    fragments_per_batch: int = 4
    save_ply: bool = False
    max_scenes: int | None = None


@dataclass
class Config:
    output_dir: str = "runs/pointcloud"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
