"""Training: ``ffnet-pc-train --config recipes/x.yaml [key.sub=value ...] [--resume PATH]`` (torchrun for DDP).

CE + Lovász loss, AdamW with the official two learning rates (parameters named ``*block*`` at 0.1x), OneCycle
per step, AMP, drop-path, validation on voxelized scenes every ``train.eval_every`` epochs, checkpoints
``last.pth`` / ``best.pth`` in ``output_dir``. Resume restores model, optimizer, scheduler, scaler and RNG state
at an epoch boundary; augmentations are seeded by (seed, epoch, scene index), so a resumed run equals an
uninterrupted one on CPU bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from metamixer.nn.flops import count_params
from metamixer.train.allocator import keep_freed_memory
from metamixer.train.amp import autocast, make_grad_scaler
from metamixer.train.checkpoint import restore_checkpoint, save_checkpoint
from metamixer.train.cli import build_parser, config_from_args
from metamixer.train.config import save_config
from metamixer.train.distributed import (
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
    unwrap_model,
    wrap_ddp,
)
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.logger import RunLogger
from metamixer.train.seed import make_generator, seed_everything, seed_worker

from .config import Config
from .data.collate import collate_scenes
from .losses import SegmentationLoss
from .metrics import ConfusionMatrix, format_table
from .runtime import build_dataset, build_model, check_precision, class_names, resolve_device
from .structure import Point

__all__ = ["train", "main", "cli", "param_groups", "build_optimizer"]


def param_groups(model: torch.nn.Module, lr: float, block_lr_scale: float, weight_decay: float) -> list[dict]:
    """Two groups as the official config: names containing "block" at ``lr * block_lr_scale``, the rest at lr."""
    block, other = [], []
    for name, p in unwrap_model(model).named_parameters():
        if p.requires_grad:
            (block if "block" in name else other).append(p)
    groups = [{"params": other, "lr": lr, "weight_decay": weight_decay, "name": "default"}]
    if block:
        groups.append(
            {"params": block, "lr": lr * block_lr_scale, "weight_decay": weight_decay, "name": "block"}
        )
    return groups


def build_optimizer(model: torch.nn.Module, cfg: Config, total_steps: int):
    t = cfg.train
    groups = param_groups(model, t.lr, t.block_lr_scale, t.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in groups],
        total_steps=max(1, total_steps),
        pct_start=t.pct_start,
        anneal_strategy="cos",
        div_factor=t.div_factor,
        final_div_factor=t.final_div_factor,
    )
    return optimizer, scheduler


def to_device(point: Point, device: torch.device) -> Point:
    return Point(
        {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in point.items()}
    )


@torch.no_grad()
def validate(
    model: torch.nn.Module, loader: DataLoader, cfg: Config, device: torch.device, names: Sequence[str]
) -> dict[str, Any]:
    """mIoU on the validation scenes at voxel level (fast; evaluate.py gives the full per-point protocol)."""
    model.eval()
    cm = ConfusionMatrix(cfg.data.num_classes, cfg.data.ignore_index)
    for point in loader:
        point = to_device(point, device)
        with autocast(device, cfg.train.precision):
            logits = model(point)
        cm.update(logits.argmax(1), point["segment"])
    matrix = torch.from_numpy(cm.matrix).to(device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(matrix)
    cm.matrix = matrix.cpu().numpy()
    model.train()
    return cm.compute(names)


def _loader(
    dataset: Any, cfg: Config, shuffle: bool, seed: int, distributed: bool, batch_size: int
) -> DataLoader:
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed) if distributed else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=partial(
            collate_scenes, feat_keys=cfg.data.feat_keys, mix_prob=cfg.data.mix_prob if shuffle else 0.0
        ),
        worker_init_fn=seed_worker,
        generator=make_generator(seed),
        drop_last=shuffle and len(dataset) >= batch_size,
        pin_memory=False,
    )


def train(cfg: Config, resume: str | None = None) -> dict[str, Any]:
    """Run training; returns a summary (params, steps, best/last validation metrics, timings)."""
    t = cfg.train
    device = resolve_device(t.device)
    info = init_distributed(device)
    device = info.device if info.is_distributed else device
    check_precision(t.precision, device)
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    if device.type == "cpu":
        keep_freed_memory()
    seed_everything(t.seed + info.rank, deterministic=t.deterministic)
    names = class_names(cfg)
    out = Path(cfg.output_dir)
    logger = RunLogger(out, enabled=info.is_main)
    if info.is_main:
        save_config(cfg, out / "config.yaml")

    train_set = build_dataset(cfg, "train", cfg.data.train_transforms, seed=t.seed)
    val_set = build_dataset(cfg, "val", cfg.data.val_transforms, seed=t.seed) if t.eval_every > 0 else None
    train_loader = _loader(train_set, cfg, True, t.seed, info.is_distributed, t.batch_size)
    val_loader = _loader(val_set, cfg, False, t.seed, info.is_distributed, 1) if val_set is not None else None
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise FFNetError("training set is smaller than one batch; lower train.batch_size")
    schedule_steps = t.epochs * steps_per_epoch
    # max_steps interrupts a run without changing its schedule (so an interrupted run can be resumed exactly)
    total_steps = schedule_steps if t.max_steps is None else min(schedule_steps, t.max_steps)

    model = build_model(cfg).to(device)
    n_params = count_params(model)
    logger.info(
        f"model {cfg.model.name}: {n_params:,} parameters ({n_params / 1e6:.2f} M); "
        f"{len(train_set)} train scenes, {steps_per_epoch} steps/epoch, {total_steps} steps, device {device}"
    )
    optimizer, scheduler = build_optimizer(model, cfg, schedule_steps)
    scaler = make_grad_scaler(t.precision, device)
    criterion = SegmentationLoss(cfg.data.ignore_index, t.ce_weight, t.lovasz_weight)
    start_epoch, step, best = 0, 0, -1.0
    if resume:
        ckpt = restore_checkpoint(
            resume, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler
        )
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        best = float(ckpt.get("extra", {}).get("best_miou", -1.0))
        logger.info(f"resumed from {resume} at epoch {start_epoch}, step {step}")
    if t.sync_bn and info.is_distributed and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same keys; optimizer holds same params
    ddp_model = wrap_ddp(model, info) if info.is_distributed else model

    last_metrics: dict[str, Any] | None = None
    t0 = time.perf_counter()
    ddp_model.train()
    for epoch in range(start_epoch, t.epochs):
        if step >= total_steps:
            break
        train_set.set_epoch(epoch)
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        running, seen = 0.0, 0
        for point in logger.progress(
            train_loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{t.epochs}"
        ):
            if step >= total_steps:
                break
            point = to_device(point, device)
            with autocast(device, t.precision):
                logits = ddp_model(point)
            loss = criterion(logits, point["segment"])
            if not torch.isfinite(loss):
                raise FFNetError(f"loss became {loss.item()} at step {step} (lower train.lr or use fp32)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if t.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            running += loss.item()
            seen += 1
            if step % t.log_every == 0:
                logger.scalars(
                    {
                        "loss": all_reduce_mean(loss.detach()).item(),
                        "lr": scheduler.get_last_lr()[0],
                        "lr_block": scheduler.get_last_lr()[-1],
                    },
                    step,
                    prefix="train/",
                )
        logger.info(f"epoch {epoch + 1}: mean loss {running / max(seen, 1):.4f}, step {step}")
        if val_loader is not None and (
            (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs or step >= total_steps
        ):
            last_metrics = validate(ddp_model, val_loader, cfg, device, names)
            logger.scalars(
                {
                    "mIoU": last_metrics["mIoU"] or 0.0,
                    "mAcc": last_metrics["mAcc"] or 0.0,
                    "allAcc": last_metrics["allAcc"] or 0.0,
                },
                step,
                prefix="val/",
            )
            logger.info(f"validation (voxels) after epoch {epoch + 1}:\n{format_table(last_metrics)}")
            miou = last_metrics["mIoU"] or 0.0
            if miou > best and info.is_main:
                best = miou
                save_checkpoint(
                    out / "best.pth",
                    model=model,
                    step=step,
                    epoch=epoch + 1,
                    config=cfg,
                    extra={"best_miou": best},
                )
        if info.is_main:
            save_checkpoint(
                out / "last.pth",
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                step=step,
                epoch=epoch + 1,
                config=cfg,
                extra={"best_miou": best},
            )
        barrier()
    elapsed = time.perf_counter() - t0
    summary = {
        "model": cfg.model.name,
        "params": n_params,
        "steps": step,
        "train_seconds": round(elapsed, 2),
        "best_val_mIoU": best if best >= 0 else None,
        "last_val": last_metrics,
        "output_dir": str(out),
        "rank": info.rank,
    }
    logger.info(f"done: {step} steps in {elapsed:.1f} s; best val mIoU {summary['best_val_mIoU']}")
    logger.close()
    cleanup_distributed()
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("ffnet-pc-train", "Train FFNet 3D semantic segmentation (sparse voxels).")
    parser.add_argument("--resume", metavar="PATH", default=None, help="continue from a last.pth checkpoint")
    args = parser.parse_args(argv)
    cfg = config_from_args(Config, args)
    summary = train(cfg, args.resume)
    if summary["rank"] != 0:
        return 0
    best = summary["best_val_mIoU"]
    print(
        f"params {summary['params']:,}  steps {summary['steps']}  best val mIoU "
        f"{'-' if best is None else f'{100 * best:.2f}%'}  -> {summary['output_dir']}"
    )
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
