"""Train an FFNet classifier: ``ffnet-cls-train CONFIG [key=value ...] [--resume last.pth]``.

CONFIG is a recipe path or the name of a shipped recipe (``ffnet_1``, ``cpu_digits``, ...). Single process or
``torchrun --nproc_per_node=N -m ffnet_classification.train CONFIG ...`` (DDP). The loop is metamixer's Trainer
(:mod:`ffnet_classification.task` holds the classification part); the run folder (``run.output_dir``) receives
``config.yaml`` (resolved), ``last.pth`` / ``best.pth`` (exact resume, also mid-epoch), ``log.txt``, tensorboard
events and ``summary.json`` (how the run ended, per-validation history).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from metamixer.train.allocator import keep_freed_memory
from metamixer.train.checkpoint import load_checkpoint
from metamixer.train.cli import build_train_parser, config_from_args
from metamixer.train.device import resolve_device
from metamixer.train.distributed import all_gather_object, cleanup_distributed
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.loop import Trainer, prepare_run
from metamixer.train.results import write_json

from .config import ClsConfig, resolve_lr
from .data import build_dataset, build_transforms
from .models import PRETRAINED_CFGS, PretrainedCfg, check_spec_overrides, create_model, get_spec
from .task import ClassificationTask

#: the shipped recipes (editable install: apps/classification/recipes)
RECIPES_DIR: Path | None = Path(__file__).resolve().parents[2] / "recipes"
if not RECIPES_DIR.is_dir():
    RECIPES_DIR = None


def build_datasets(cfg: ClsConfig, pretrained_cfg: dict[str, Any]) -> tuple[Dataset, Dataset | None, list[str]]:
    d = cfg.data
    if not d.train:
        raise FFNetError("data.train is empty: give a class-folder root or a .csv/.txt list (data.train=PATH)")
    size = d.input_size or pretrained_cfg["input_size"][-1]
    crop_pct = d.crop_pct or pretrained_cfg["crop_pct"]
    common = dict(input_size=size, crop_pct=crop_pct, interpolation=d.interpolation, mean=d.mean, std=d.std)
    train_tf = build_transforms(True, scale=d.scale, hflip=d.hflip, rand_n=d.rand_n, rand_m=d.rand_m,
                                rand_mstd=d.rand_mstd, reprob=d.reprob, **common)
    read = {"max_pixels": d.max_pixels, "exif": d.exif}
    train_set = build_dataset(d.train, train_tf, d.on_bad_image, allow_empty=d.allow_empty_classes, root=d.root,
                              **read)
    val_set = None
    if d.val:
        val_set = build_dataset(d.val, build_transforms(False, **common), d.on_bad_image,
                                classes=train_set.classes, allow_empty=True, root=d.root, **read)
    return train_set, val_set, list(train_set.classes)


def build_teacher(cfg: ClsConfig, num_classes: int, device: torch.device) -> nn.Module:
    dc = cfg.train.distill
    if not dc.teacher_checkpoint:
        raise FFNetError("train.distill.type=hard needs train.distill.teacher_checkpoint=PATH (a trained teacher)")
    if dc.teacher_model.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise FFNetError("train.distill.teacher_model=timm:... needs timm "
                             "(pip install ffnet-classification[timm])") from None
        teacher = timm.create_model(dc.teacher_model[5:], num_classes=num_classes,
                                    checkpoint_path=dc.teacher_checkpoint)
    else:
        from .models.registry import load_model

        teacher = load_model(dc.teacher_checkpoint, model_name=dc.teacher_model).model
    out = getattr(teacher, "num_classes", num_classes)
    if out != num_classes:
        raise FFNetError(f"teacher {dc.teacher_checkpoint} predicts {out} classes, the data has {num_classes}")
    return teacher.to(device).eval().requires_grad_(False)


def ranks_in_sync(model: nn.Module) -> bool:
    """True when every DDP rank holds identical weights (a cheap checksum compared across ranks)."""
    with torch.no_grad():
        checksum = float(sum(p.double().sum() * (i + 1) for i, p in enumerate(model.parameters())))
    sums = all_gather_object(checksum)
    return all(s == sums[0] for s in sums)


def run(cfg: ClsConfig, resume: str | None = None, *, quiet: bool = False) -> dict[str, Any]:
    """Train according to ``cfg``; returns the summary (also written to ``run.output_dir/summary.json``).

    ``optim.lr: null`` is resolved here to ``base_lr x global batch / lr_base_batch`` (global batch =
    train.batch_size x processes x train.accum_steps) before the Trainer sees it; config.yaml keeps the null.
    """
    datasets = check_run_inputs(cfg)  # every input checked before the run folder exists
    ctx = prepare_run(cfg.run, cfg, quiet=quiet)
    try:
        return _run(cfg, ctx, resume, datasets)
    finally:
        ctx.logger.close()
        cleanup_distributed()


def check_run_inputs(cfg: ClsConfig) -> tuple[Dataset, Dataset | None, list[str]]:
    """Model name and size, data, class count, batch size and weight files of ``cfg``, checked before anything
    is written: a wrong input must not leave an empty run folder behind. Returns the datasets."""
    get_spec(cfg.model.name)
    check_spec_overrides(cfg.model.spec)
    for key, path in (("model.pretrained", cfg.model.pretrained),
                      ("train.distill.teacher_checkpoint", cfg.train.distill.teacher_checkpoint)):
        if path and not Path(path).is_file():
            raise FFNetError(f"{key}: file not found: {path}")
    if cfg.train.distill.type == "hard" and not cfg.train.distill.teacher_checkpoint:
        raise FFNetError("train.distill.type=hard needs train.distill.teacher_checkpoint=PATH (a trained teacher)")
    train_set, val_set, classes = build_datasets(cfg, PRETRAINED_CFGS.get(cfg.model.name, PretrainedCfg()).to_dict())
    if cfg.model.num_classes is not None and cfg.model.num_classes != len(classes):
        raise FFNetError(f"model.num_classes={cfg.model.num_classes} but {cfg.data.train} has {len(classes)} classes")
    d = cfg.data
    if d.mixup_prob > 0 and (d.mixup > 0 or d.cutmix > 0) and cfg.train.batch_size % 2:
        raise FFNetError(f"train.batch_size={cfg.train.batch_size}: Mixup/CutMix (data.mixup={d.mixup}, "
                         f"data.cutmix={d.cutmix}) mix each batch with its reverse and need an even batch size")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if len(train_set) < cfg.train.batch_size * world:  # type: ignore[arg-type]
        raise FFNetError(f"train.batch_size={cfg.train.batch_size}: the training set {cfg.data.train} has only "  # type: ignore[arg-type]
                         f"{len(train_set)} images, fewer than one global batch ({cfg.train.batch_size} x {world} "
                         "processes); lower train.batch_size")
    return train_set, val_set, classes


def _run(cfg: ClsConfig, ctx: Any, resume: str | None,
         datasets: tuple[Dataset, Dataset | None, list[str]]) -> dict[str, Any]:
    info = ctx.info
    train_set, val_set, classes = datasets
    num_classes = cfg.model.num_classes or len(classes)
    m = cfg.model
    model = create_model(m.name, num_classes=num_classes, pretrained=m.pretrained, drop_path_rate=m.drop_path_rate,
                         drop_rate=m.drop_rate, ignore_head=m.ignore_head, prefer_ema=m.pretrained_ema, fused=False,
                         **m.spec)
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.train.sync_bn and info.is_distributed and info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if m.channels_last:
        model = model.to(memory_format=torch.channels_last)
    teacher = build_teacher(cfg, num_classes, info.device) if cfg.train.distill.type == "hard" else None
    task = ClassificationTask(cfg, model, train_set, val_set, classes, info, teacher, log=ctx.logger.info)
    global_batch = cfg.train.batch_size * info.world_size * cfg.train.accum_steps
    optim = dataclasses.replace(cfg.optim, lr=resolve_lr(cfg.optim, global_batch))
    n_params = sum(p.numel() for p in model.parameters())
    ctx.logger.info(f"{m.name}: {n_params:,} params, {num_classes} classes, {len(train_set)} train images, "  # type: ignore[arg-type]
                    f"global batch {global_batch}, lr {optim.lr:.3g}, {task.steps_per_epoch()} batches/epoch, "
                    f"device {info.device}, world {info.world_size}")
    result = Trainer(task, ctx, optim, cfg.train, cfg.run, config=cfg).fit(resume)
    last = result.history[-1] if result.history else {}
    summary = {
        **result.to_dict(),
        "world_size": info.world_size,
        "ranks_in_sync": ranks_in_sync(task.model),
        "model": m.name,
        "params": n_params,
        "num_classes": num_classes,
        "lr": optim.lr,
        "best_top1": result.best,
        "last": last,
        "output_dir": str(ctx.output_dir),
        # unreadable images left out under data.on_bad_image=skip, with the reason (all ranks)
        "skipped_images": task.skipped_images(),
    }
    if ctx.is_main:
        write_json(ctx.output_dir / "summary.json", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_train_parser("ffnet-cls-train", "Train an FFNet image classifier (recipes: the official "
                                "ImageNet ones, and cpu_digits for the CPU quick start).")
    args = parser.parse_args(argv)
    if args.config is None:
        shipped = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))) if RECIPES_DIR else ""
        raise FFNetError("give a recipe: ffnet-cls-train CONFIG [key=value ...] (a YAML path"
                         + (f", or one of: {shipped})" if shipped else ")"))
    cfg = config_from_args(ClsConfig, args, RECIPES_DIR)
    if args.resume:
        load_checkpoint(args.resume)  # fail fast with a clear message before building anything
    if resolve_device(cfg.run.device).type == "cpu":
        keep_freed_memory()
    summary = run(cfg, args.resume)
    print(json.dumps({k: summary[k] for k in ("model", "stopped", "step", "best_top1", "wall_s", "output_dir")}))
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
