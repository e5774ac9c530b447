"""Train FFNetSR: ``ffnet-sr-train --config recipes/ffnetsr_light_div2k_x2.yaml [key=value ...] [--resume PATH]``.

Iteration-based like BasicSR (the schedule is defined in steps, not epochs). One step = one batch per process;
under ``torchrun`` the gradients are averaged by DDP and every rank draws disjoint samples. The loop is built so
that a run resumed from ``last.pth`` is bit-for-bit the uninterrupted run on CPU: the batch of step ``t`` is a
pure function of (seed, t) (see ``data/dataset.py``), and model/optimizer/scheduler/EMA/RNG states are restored.

Run folder (``train.output_dir``): ``config.yaml`` (resolved), ``last.pth`` (every ``save_every`` steps and at
the end), ``best.pth`` (best validation PSNR-Y), ``log.txt`` and tensorboard events (losses, lr, PSNR, and a
bicubic | SR | HR crop of the first validation image).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from metamixer.nn.flops import count_params
from metamixer.train.allocator import keep_freed_memory
from metamixer.train.amp import autocast, make_grad_scaler
from metamixer.train.checkpoint import restore_checkpoint, save_checkpoint
from metamixer.train.cli import build_parser, config_from_args
from metamixer.train.config import config_to_dict, save_config
from metamixer.train.distributed import (
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
    wrap_ddp,
)
from metamixer.train.ema import ModelEMA
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.logger import RunLogger
from metamixer.train.seed import seed_everything, seed_worker

from .config import SRConfig, resolve_data_dir
from .data.dataset import BenchmarkPair, SRTrainDataset, StepBatchSampler, load_benchmark
from .evaluate import bicubic_upscaler, evaluate_pairs, model_upscaler, resolve_device
from .losses import SRLoss
from .models import create_model

__all__ = ["train", "cosine_lr_lambda", "build_optimizer", "main"]


def cosine_lr_lambda(total_steps: int, base_lr: float, eta_min: float, warmup_steps: int = 0):
    """Multiplier for LambdaLR: linear warmup, then cosine from ``base_lr`` to ``eta_min`` at ``total_steps``
    (BasicSR's CosineAnnealingRestartLR with one period)."""

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        lr = eta_min + (base_lr - eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return lr / base_lr

    return fn


def build_optimizer(model: nn.Module, cfg: SRConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def _side_by_side(pair: BenchmarkPair, sr: np.ndarray, scale: int, size: int = 192) -> np.ndarray:
    """``bicubic | SR | HR`` centre crops as one HWC uint8 image for tensorboard."""
    bic = bicubic_upscaler(scale)(pair.lr)
    h, w = pair.hr.shape[:2]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    crops = []
    for img in (bic, sr, pair.hr):
        c = img[top : top + size, left : left + size]
        crops.append(np.repeat(c[:, :, None], 3, 2) if c.ndim == 2 else c)
    return np.concatenate(crops, axis=1)


def _validate(
    model: nn.Module, pairs: list[BenchmarkPair], cfg: SRConfig, device: torch.device, logger: RunLogger, step: int
) -> float:
    scale = cfg.model.scale
    model.eval()
    upscaler = model_upscaler(model, scale, device, precision=cfg.train.precision)
    with torch.no_grad():
        res = evaluate_pairs(upscaler, pairs, scale, compute_ssim=False)
        logger.image("val/bicubic_sr_hr", _side_by_side(pairs[0], upscaler(pairs[0].lr), scale), step)
    model.train()
    return float(res["psnr"])


def train(cfg: SRConfig, resume: str | Path | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns a summary dict (final step, best PSNR, paths, wall time)."""
    t_start = time.perf_counter()
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(int(tc.threads))
    device = resolve_device(tc.device)
    dist = init_distributed(device)
    device = dist.device
    if device.type == "cpu":
        keep_freed_memory()
    seed_everything(tc.seed, tc.deterministic)
    out_dir = Path(tc.output_dir)
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    logger = RunLogger(out_dir, enabled=dist.is_main)

    model = create_model(cfg.model.name, cfg.model.scale, pretrained=cfg.model.pretrained,
                         **({"depth": cfg.model.depth} if cfg.model.depth else {})).to(device)
    ema = ModelEMA(model, decay=tc.ema_decay) if tc.ema_decay > 0 else None
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_lr_lambda(tc.total_steps, cfg.optim.lr, cfg.optim.eta_min, cfg.optim.warmup_steps)
    )
    scaler = make_grad_scaler(tc.precision, device)
    criterion = SRLoss(cfg.loss.l1_weight, cfg.loss.fft_weight)

    start_step, best_psnr = 0, -math.inf
    if resume is not None:
        ckpt = restore_checkpoint(resume, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                  ema=ema)
        start_step = int(ckpt["step"])
        best_psnr = float(ckpt.get("extra", {}).get("best_psnr", -math.inf))
        logger.info(f"resumed from {resume} at step {start_step}")
    if start_step >= tc.total_steps:
        logger.info(f"nothing to do: step {start_step} >= total_steps {tc.total_steps}")

    train_model: nn.Module = wrap_ddp(model, dist)
    if tc.compile:
        train_model = torch.compile(train_model)  # after DDP, so DDP's bucketing sees the real parameters

    dataset = SRTrainDataset(
        [resolve_data_dir(d) for d in cfg.data.train_dirs], cfg.model.scale, cfg.data.patch_size,
        cfg.data.lr_source, cfg.data.augment, cfg.data.cache_images, tc.seed,
    )
    sampler = StepBatchSampler(cfg.data.batch_size, start_step, tc.total_steps, dist.rank, dist.world_size)
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers, worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )
    val_pairs: list[BenchmarkPair] = []
    if cfg.data.val_set and dist.is_main:
        val_pairs = load_benchmark(cfg.data.val_set, cfg.model.scale, cfg.data.val_lr_source, cfg.data.val_max_images)
        bic = evaluate_pairs(bicubic_upscaler(cfg.model.scale), val_pairs, cfg.model.scale, compute_ssim=False)
        logger.info(f"validation set {cfg.data.val_set} x{cfg.model.scale}: bicubic PSNR-Y {bic['psnr']:.3f} dB")
    logger.info(
        f"{cfg.model.name} x{cfg.model.scale} depth {model.depth}: {count_params(model):,} params; "
        f"{len(dataset)} training images, batch {cfg.data.batch_size} x {dist.world_size} process(es), "
        f"steps {start_step}->{tc.total_steps} on {device} ({tc.precision})"
    )

    step = start_step
    history: list[dict[str, float]] = []
    stopped_early = False
    running: dict[str, torch.Tensor] = {}
    running_count = 0
    train_model.train()
    progress = logger.progress(loader, total=len(sampler), desc="train")
    for lr_img, hr_img in progress:
        lr_img = lr_img.to(device, non_blocking=True)
        hr_img = hr_img.to(device, non_blocking=True)
        with autocast(device, tc.precision):
            sr = train_model(lr_img)
        loss, parts = criterion(sr.float(), hr_img)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        step += 1
        for k, v in parts.items():
            running[k] = running[k] + v if k in running else v.clone()
        running_count += 1
        if step % tc.log_every == 0 or step == tc.total_steps:
            means = {k: float(all_reduce_mean(v / running_count)) for k, v in running.items()}
            running, running_count = {}, 0
            logger.scalars(means, step, prefix="train/")
            logger.scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            logger.info(f"step {step}/{tc.total_steps} loss {means['total']:.5f} lr {optimizer.param_groups[0]['lr']:.2e}")
        out_of_time = False
        if tc.max_minutes is not None:
            # decided jointly so that all ranks stop at the same step (a lone rank would hang the others)
            late = torch.tensor(float((time.perf_counter() - t_start) / 60.0 > tc.max_minutes), device=device)
            out_of_time = bool(all_reduce_mean(late) > 0)
        interrupted = out_of_time or (tc.stop_at is not None and step >= tc.stop_at)
        last_step = step == tc.total_steps or interrupted
        if val_pairs and (step % tc.val_every == 0 or last_step):
            psnr = _validate(ema.module if ema is not None else model, val_pairs, cfg, device, logger, step)
            history.append({"step": step, "psnr_y": psnr})
            logger.scalar("val/psnr_y", psnr, step)
            improved = psnr > best_psnr
            best_psnr = max(best_psnr, psnr)
            logger.info(f"step {step}: {cfg.data.val_set} PSNR-Y {psnr:.3f} dB (best {best_psnr:.3f})")
            if improved and dist.is_main:
                save_checkpoint(out_dir / "best.pth", model=model, ema=ema, step=step, config=cfg,
                                extra={"best_psnr": best_psnr})
        if step % tc.save_every == 0 or last_step:
            if dist.is_main:
                save_checkpoint(out_dir / "last.pth", model=model, optimizer=optimizer, scheduler=scheduler,
                                scaler=scaler, ema=ema, step=step, config=cfg, extra={"best_psnr": best_psnr})
            barrier()
        if interrupted and step < tc.total_steps:
            stopped_early = True
            reason = f"train.max_minutes={tc.max_minutes}" if out_of_time else f"train.stop_at={tc.stop_at}"
            logger.info(f"stopping at step {step} ({reason}); continue with --resume {out_dir / 'last.pth'}")
            break
    logger.close()
    cleanup_distributed()
    return {
        "step": step,
        "best_psnr_y": best_psnr if best_psnr > -math.inf else None,
        "val_history": history,
        "stopped_early": stopped_early,
        "output_dir": str(out_dir),
        "wall_seconds": time.perf_counter() - t_start,
        "config": config_to_dict(cfg),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("ffnet-sr-train", "Train FFNetSR (YAML recipe + dotted overrides).")
    parser.add_argument("--resume", metavar="PATH", default=None, help="continue from a last.pth checkpoint")
    args = parser.parse_args(argv)
    cfg = config_from_args(SRConfig, args)
    if cfg.train.total_steps < 1:
        raise FFNetError("train.total_steps must be >= 1")
    summary = train(cfg, args.resume)
    best = summary["best_psnr_y"]
    print(f"done: step {summary['step']}, best PSNR-Y {best:.3f} dB" if best is not None else f"done: step {summary['step']}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
