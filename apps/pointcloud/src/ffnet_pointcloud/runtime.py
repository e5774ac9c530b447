"""Shared builders for train/evaluate: precision check, datasets, model, class names, seeded augmentation."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metamixer.train.datadir import data_root
from metamixer.train.distributed import barrier, is_main_process
from metamixer.train.errors import FFNetError

from .config import Config
from .data.datasets import SceneDataset, SemanticKittiDataset, dataset_info, list_scenes
from .data.semantic_kitti import list_scans
from .data.synthetic import write_synthetic_dataset
from .data.transforms import build_transforms, check_single_output, set_rng
from .models import create_model, model_config
from .models.ffnet3d import FFNet3DSegmentor

__all__ = [
    "check_precision",
    "check_config",
    "class_names",
    "ensure_data",
    "data_folder",
    "build_dataset",
    "build_model",
    "SeededTransform",
]


def check_precision(precision: str, device: torch.device) -> None:
    """spconv has fp32 and fp16 kernels only, and fp16 only on CUDA: refuse the rest up front."""
    if precision == "bf16":
        raise FFNetError("run.precision=bf16: spconv has no bfloat16 kernels; use fp16 (CUDA) or fp32")
    if precision == "fp16" and device.type != "cuda":
        raise FFNetError(
            "run.precision=fp16 needs a CUDA device (spconv's CPU kernels are fp32); use fp32 on CPU"
        )
    if precision not in ("fp32", "fp16"):
        raise FFNetError(f"run.precision must be fp32 or fp16 for the sparse model, got {precision!r}")


def class_names(cfg: Config) -> list[str]:
    names = cfg.data.class_names or dataset_info(cfg.data.dataset)["class_names"]
    if names is None:
        names = [f"class_{i}" for i in range(cfg.data.num_classes)]
    names = list(names)
    if len(names) != cfg.data.num_classes:
        raise FFNetError(
            f"data.num_classes={cfg.data.num_classes} but {len(names)} class names for dataset "
            f"{cfg.data.dataset!r}; set data.num_classes={len(names)} or data.class_names"
        )
    return names


def check_config(cfg: Config, validate: bool = True) -> None:
    """Everything of a config that can be wrong without reading a scene: dataset kind and class names, model
    name and options, every transform spec, the data root and its split folders (``validate``: the val split
    too). Why up front: training makes its run folder first, so a typo must stop before that, not after."""
    info = dataset_info(cfg.data.dataset)
    class_names(cfg)
    try:
        model_config(cfg.model.name, in_channels=feat_channels(cfg), num_classes=cfg.data.num_classes,
                     **cfg.model.options).validate()
    except (TypeError, ValueError) as exc:  # e.g. enc_depths: 3 where a list belongs
        raise FFNetError(f"model.options: {exc} (model {cfg.model.name!r})") from None
    check_single_output(build_transforms(cfg.data.train_transforms, where="data.train_transforms"),
                        "data.train_transforms")
    if validate:
        check_single_output(build_transforms(cfg.data.val_transforms, where="data.val_transforms"),
                            "data.val_transforms")
    root = data_folder(cfg)
    if cfg.data.dataset == "synthetic" and not (root / "train").is_dir():
        return  # generated on first use (ensure_data)
    if not root.is_dir():
        raise FFNetError(_missing_root(cfg, root))
    find_scenes(cfg, root, cfg.data.train_splits or info["train"])
    if validate:
        find_scenes(cfg, root, cfg.data.val_splits or info["val"])


def find_scenes(cfg: Config, root: Path, splits: Sequence[str]) -> list[Path]:
    """The scene paths of ``splits`` in the layout of ``cfg.data.dataset`` (silently: the dataset logs skips)."""
    if cfg.data.dataset == "semantickitti":
        return list_scans(root, splits)
    return list_scenes(root, splits)


def data_folder(cfg: Config) -> Path:
    """``data.root`` as given, or, when that relative path does not exist here, under the shared data folder
    (``$FFNET_DATA``, :func:`metamixer.train.datadir.data_root`): so a recipe can name
    ``pointcloud/semantickitti`` and run on any machine that has the data."""
    root = Path(cfg.data.root).expanduser()
    if not root.is_absolute() and not root.exists() and cfg.data.dataset != "synthetic":
        shared = data_root() / root
        if shared.exists():
            return shared
    return root


def ensure_data(cfg: Config) -> Path:
    """Return the dataset root; the synthetic dataset is generated there on first use."""
    root = data_folder(cfg)
    if cfg.data.dataset == "synthetic":
        # one writer under torchrun; written aside and moved in, so never half-written. Every rank meets the
        # barrier: a rank that looked after rank 0 had moved the data in would otherwise skip it and deadlock
        if is_main_process() and not (root / "train").is_dir():
            tmp = root.parent / f".{root.name}.tmp{os.getpid()}"
            write_synthetic_dataset(
                tmp,
                cfg.data.synthetic_train,
                cfg.data.synthetic_val,
                cfg.data.synthetic_seed,
                cfg.data.synthetic_density,
            )
            root.mkdir(parents=True, exist_ok=True)
            for child in sorted(tmp.iterdir()):
                os.replace(child, root / child.name)
            tmp.rmdir()
        barrier()
    if not root.is_dir():
        raise FFNetError(_missing_root(cfg, root))
    return root


def _missing_root(cfg: Config, root: Path) -> str:
    shared = "" if root.is_absolute() else f", nor under the shared data folder {data_root()} ($FFNET_DATA)"
    return (f"data.root not found: {root}{shared} (dataset {cfg.data.dataset!r}); see docs/pointcloud.md for the "
            "expected layout and ffnet-pc-preprocess")


class SeededTransform:
    """Runs a pipeline with a generator derived from (seed, epoch, index): augmentation is reproducible across
    workers and across resume, independent of the order in which scenes are loaded."""

    def __init__(self, specs: list[dict[str, Any]], seed: int, where: str = "transforms") -> None:
        self.pipeline = build_transforms(specs, where=where)
        check_single_output(self.pipeline, where)  # a batch needs one sample per scene
        self.seed = seed
        self.epoch = 0

    def __call__(self, data: dict, index: int, epoch: int | None = None) -> Any:
        epoch = self.epoch if epoch is None else epoch
        set_rng(self.pipeline, np.random.default_rng([self.seed, epoch, index]))
        return self.pipeline(data)


class AugmentedDataset(torch.utils.data.Dataset):
    def __init__(self, scenes: SceneDataset, transform: SeededTransform) -> None:
        self.scenes = scenes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> Any:
        return self.transform(self.scenes.raw(index), index)

    def sample(self, index: int, epoch: int) -> Any:
        """Scene ``index`` as augmented in ``epoch`` (what a resumed run needs without mutating the dataset)."""
        return self.transform(self.scenes.raw(index), index, epoch)


def build_dataset(
    cfg: Config, split: str, transform_specs: list[dict[str, Any]] | None = None, seed: int = 0,
    log: Callable[[str], None] | None = print, splits: Sequence[str] | None = None,
) -> AugmentedDataset | SceneDataset:
    """``split``: "train" or "val" (``splits``: other split names instead, e.g. SemanticKITTI's ``test``). With
    ``transform_specs`` the dataset applies a seeded pipeline. ``log``: where a dataset reports skipped parts."""
    info = dataset_info(cfg.data.dataset)
    root = ensure_data(cfg)
    if splits is None:
        splits = cfg.data.train_splits if split == "train" else cfg.data.val_splits
        splits = splits or info[split]
    loop = cfg.data.loop if split == "train" else 1
    if cfg.data.dataset == "semantickitti":
        scenes: SceneDataset = SemanticKittiDataset(root, splits, None, cfg.data.num_classes, cfg.data.ignore_index,
                                                    loop=loop, cache=cfg.data.cache, log=log)
    else:
        scenes = SceneDataset(root, splits, info["segment_key"], None, cfg.data.num_classes, cfg.data.ignore_index,
                              loop=loop, cache=cfg.data.cache)
    if transform_specs is None:
        return scenes
    where = "data.train_transforms" if split == "train" else "data.val_transforms"
    return AugmentedDataset(scenes, SeededTransform(transform_specs, seed, where))


def build_model(cfg: Config) -> FFNet3DSegmentor:
    return create_model(
        cfg.model.name, in_channels=feat_channels(cfg), num_classes=cfg.data.num_classes, **cfg.model.options
    )


def feat_channels(cfg: Config) -> int:
    """Input channels implied by data.feat_keys (color/normal: 3 each, coord: 3, anything else: 1)."""
    widths = {"color": 3, "normal": 3, "coord": 3}
    return sum(widths.get(k, 1) for k in cfg.data.feat_keys)
