"""Train an FFNet classifier: ``ffnet-cls-train --config recipes/ffnet_1.yaml [key=value ...] [--resume PATH]``.

Single process or ``torchrun --nproc_per_node=N -m ffnet_classification.train ...`` (DDP via metamixer).
The run folder (``output_dir``) receives ``config.yaml`` (resolved), ``last.pth`` / ``best.pth`` (one
checkpoint format, exact resume at epoch boundaries), ``log.txt``, tensorboard events and ``summary.json``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from metamixer.train.allocator import keep_freed_memory
from metamixer.train.amp import make_grad_scaler
from metamixer.train.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from metamixer.train.cli import build_parser, config_from_args
from metamixer.train.config import save_config
from metamixer.train.distributed import (
    DistInfo,
    all_gather_object,
    barrier,
    cleanup_distributed,
    init_distributed,
    wrap_ddp,
)
from metamixer.train.ema import ModelEMA
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.logger import RunLogger
from metamixer.train.results import write_json
from metamixer.train.seed import make_generator, seed_everything, seed_worker

from .config import TrainConfig
from .data import Mixup, build_dataset, build_transforms
from .engine import evaluate, train_one_epoch
from .losses import HardDistillationLoss, build_base_loss
from .models import PRETRAINED_CFGS, PretrainedCfg, create_model, get_spec
from .optim import build_optimizer, build_scheduler, resolve_lr


def resolve_device(name: str) -> str | None:
    if name == "auto":
        return None
    return name


def build_datasets(cfg: TrainConfig, pretrained_cfg: dict[str, Any]) -> tuple[Dataset, Dataset | None, list[str]]:
    d = cfg.data
    if not d.train:
        raise FFNetError("data.train is empty: give a class-folder root or a .csv/.txt list (data.train=PATH)")
    size = d.input_size or pretrained_cfg["input_size"][-1]
    crop_pct = d.crop_pct or pretrained_cfg["crop_pct"]
    common = dict(input_size=size, crop_pct=crop_pct, interpolation=d.interpolation, mean=d.mean, std=d.std)
    train_tf = build_transforms(True, scale=d.scale, hflip=d.hflip, rand_n=d.rand_n, rand_m=d.rand_m,
                                rand_mstd=d.rand_mstd, reprob=d.reprob, **common)
    train_set = build_dataset(d.train, train_tf, d.on_bad_image, allow_empty=d.allow_empty_classes, root=d.root)
    val_set = None
    if d.val:
        val_set = build_dataset(d.val, build_transforms(False, **common), d.on_bad_image,
                                classes=train_set.classes, allow_empty=True, root=d.root)
    return train_set, val_set, list(train_set.classes)


def train_loader(ds: Dataset, cfg: TrainConfig, info: DistInfo, epoch: int) -> DataLoader:
    """A fresh loader per epoch whose shuffle and worker seeds depend only on (seed, epoch): exact resume."""
    if len(ds) < cfg.batch_size * info.world_size:
        raise FFNetError(f"training set has {len(ds)} images, fewer than one global batch "
                         f"({cfg.batch_size} x {info.world_size}); lower batch_size")
    gen = make_generator(cfg.seed * 100_003 + epoch)
    if info.is_distributed:
        sampler = DistributedSampler(ds, info.world_size, info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
        kw: dict[str, Any] = {"sampler": sampler}
    else:
        kw = {"shuffle": True}
    return DataLoader(ds, batch_size=cfg.batch_size, drop_last=True, num_workers=cfg.data.workers,
                      worker_init_fn=seed_worker, generator=gen, pin_memory=info.device.type == "cuda",
                      persistent_workers=False, **kw)


def eval_loader(ds: Dataset, batch_size: int, workers: int, info: DistInfo) -> DataLoader:
    """Each rank takes a disjoint strided shard (no padding duplicates), so summed metrics are exact."""
    if info.is_distributed:
        ds = Subset(ds, list(range(info.rank, len(ds), info.world_size)))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=info.device.type == "cuda")


def build_teacher(cfg: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    dc = cfg.distill
    if not dc.teacher_checkpoint:
        raise FFNetError("distill.type=hard needs distill.teacher_checkpoint=PATH (a trained teacher)")
    if dc.teacher_model.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise FFNetError("distill.teacher_model=timm:... needs timm (pip install ffnet-classification[timm])") from None
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


def run(cfg: TrainConfig, resume: str | None = None) -> dict[str, Any]:
    """Train according to ``cfg``; returns the summary (also written to ``output_dir/summary.json``)."""
    info = init_distributed(resolve_device(cfg.device))
    try:
        return _run(cfg, info, resume)
    finally:
        cleanup_distributed()


def _run(cfg: TrainConfig, info: DistInfo, resume: str | None) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = info.device
    if device.type == "cpu":
        keep_freed_memory()
    out_dir = Path(cfg.output_dir)
    logger = RunLogger(out_dir, enabled=info.is_main)
    if info.is_main:
        save_config(cfg, out_dir / "config.yaml")
    seed_everything(cfg.seed + info.rank, cfg.deterministic)

    get_spec(cfg.model.name)  # unknown names fail before the data is scanned
    train_set, val_set, classes = build_datasets(cfg, PRETRAINED_CFGS.get(cfg.model.name, PretrainedCfg()).to_dict())
    num_classes = cfg.model.num_classes or len(classes)
    if num_classes != len(classes):
        raise FFNetError(f"model.num_classes={cfg.model.num_classes} but {cfg.data.train} has {len(classes)} classes")
    model = create_model(cfg.model.name, num_classes=num_classes, pretrained=cfg.model.pretrained,
                         drop_path_rate=cfg.model.drop_path_rate, drop_rate=cfg.model.drop_rate,
                         ignore_head=cfg.model.ignore_head, prefer_ema=cfg.model.pretrained_ema, fused=False,
                         **cfg.model.spec)
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.sync_bn and info.is_distributed and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = ModelEMA(model, decay=cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.ema else None
    global_batch = cfg.batch_size * info.world_size
    lr = resolve_lr(cfg.optim, global_batch)
    optimizer = build_optimizer(model, cfg.optim, lr)
    steps_per_epoch = len(train_set) // global_batch
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    scheduler = build_scheduler(optimizer, cfg.optim, lr, cfg.epochs, max(1, steps_per_epoch))
    scaler = make_grad_scaler(cfg.precision, device)

    start_epoch, best, history = 0, -1.0, []
    if resume:
        ckpt = restore_checkpoint(resume, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                  ema=ema)
        start_epoch = int(ckpt["epoch"])
        best = float(ckpt["extra"].get("best_top1", -1.0))
        history = list(ckpt["extra"].get("history", []))
        if list(ckpt["extra"].get("classes", classes)) != classes:
            raise FFNetError(f"{resume}: was trained on other classes than {cfg.data.train}")
        logger.info(f"resumed from {resume} at epoch {start_epoch}")

    ddp_model = wrap_ddp(model, info)
    train_model: nn.Module = torch.compile(ddp_model) if cfg.compile else ddp_model
    mixup = Mixup(num_classes, cfg.data.mixup, cfg.data.cutmix, cfg.data.mixup_prob,
                  cfg.data.mixup_switch_prob, cfg.data.label_smoothing)
    mixup_fn = mixup if mixup.active else None
    loss_fn: nn.Module = build_base_loss(mixup_fn is not None, cfg.data.label_smoothing)
    distill = cfg.distill.type == "hard"
    if distill:
        loss_fn = HardDistillationLoss(loss_fn, build_teacher(cfg, num_classes, device), cfg.distill.alpha)
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    val_dl = eval_loader(val_set, eval_bs, cfg.data.workers, info) if val_set is not None else None
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(f"{cfg.model.name}: {n_params:,} params, {num_classes} classes, {len(train_set)} train images, "
                f"global batch {global_batch}, lr {lr:.3g}, {steps_per_epoch} steps/epoch, device {device}, "
                f"world {info.world_size}")

    t0 = time.time()
    end_epoch = cfg.epochs if not cfg.stop_after_epochs else min(cfg.epochs, start_epoch + cfg.stop_after_epochs)
    for epoch in range(start_epoch, end_epoch):
        loader = train_loader(train_set, cfg, info, epoch)
        base_step = epoch * steps_per_epoch

        def on_step(i: int, loss: float, cur_lr: float, base_step: int = base_step) -> None:
            if i % cfg.log_interval == 0:
                logger.scalars({"loss": loss, "lr": cur_lr}, base_step + i, prefix="train/")

        stats = train_one_epoch(
            train_model, loader, optimizer, scheduler, loss_fn, device, mixup=mixup_fn, distill=distill,
            scaler=scaler, precision=cfg.precision, clip_grad=cfg.optim.clip_grad, ema=ema,
            channels_last=cfg.model.channels_last, max_steps=steps_per_epoch, on_step=on_step,
            progress=lambda it, e=epoch, n=steps_per_epoch: logger.progress(it, total=n, desc=f"epoch {e}"),
        )
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": stats["loss"], "lr": optimizer.param_groups[0]["lr"]}
        is_best = False
        if val_dl is not None and ((epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs):
            m = evaluate(model, val_dl, device, cfg.precision, cfg.model.channels_last)
            record.update({f"val_{k}": v for k, v in m.items() if k != "samples"})
            score = m["top1"]
            if ema is not None:
                me = evaluate(ema.module, val_dl, device, cfg.precision, cfg.model.channels_last)
                record.update({f"ema_val_{k}": v for k, v in me.items() if k != "samples"})
                if cfg.best_metric_source == "ema":
                    score = me["top1"]
            if score > best:
                best, is_best = score, True
            logger.scalars({k: v for k, v in record.items() if k.startswith(("val", "ema_val"))}, epoch + 1,
                           prefix="eval/")
        history.append(record)
        logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if info.is_main:
            extra = {"classes": classes, "best_top1": best, "history": history, "model_name": cfg.model.name,
                     "num_classes": num_classes}
            save_checkpoint(out_dir / "last.pth", model=model, optimizer=optimizer, scheduler=scheduler,
                            scaler=scaler, ema=ema, epoch=epoch + 1, step=(epoch + 1) * steps_per_epoch,
                            config=cfg, extra=extra)
            if is_best or val_dl is None:
                save_checkpoint(out_dir / "best.pth", model=model, ema=ema, epoch=epoch + 1,
                                step=(epoch + 1) * steps_per_epoch, config=cfg, extra=extra)
        barrier()
    summary = {
        "world_size": info.world_size,
        "ranks_in_sync": ranks_in_sync(model),
        "model": cfg.model.name,
        "params": n_params,
        "num_classes": num_classes,
        "epochs": cfg.epochs,
        "best_top1": best,
        "last": history[-1] if history else {},
        "train_time_s": time.time() - t0,
        "output_dir": str(out_dir),
    }
    if info.is_main:
        write_json(out_dir / "summary.json", summary)
    logger.close()
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("ffnet-cls-train", "Train an FFNet image classifier (official ImageNet recipe by default).")
    parser.add_argument("--resume", metavar="PATH", default=None, help="continue from a last.pth")
    args = parser.parse_args(argv)
    cfg = config_from_args(TrainConfig, args)
    if args.resume:
        load_checkpoint(args.resume)  # fail fast with a clear message before building anything
    summary = run(cfg, args.resume)
    print(json.dumps({k: summary[k] for k in ("model", "best_top1", "train_time_s", "output_dir")}))
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
