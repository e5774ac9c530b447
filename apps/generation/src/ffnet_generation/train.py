"""Train a class-conditional U-FFNet / U-DiT diffusion model (latent, pixel or digits data).

``ffnet-gen-train --config recipes/u_ffnet_b_imagenet256.yaml [key=value ...] [--resume PATH]``; works under
``torchrun`` (DDP, one process per GPU, or gloo on CPU). AdamW (lr 1e-4, no weight decay), EMA 0.9999, label
dropout 0.1 and the hybrid loss follow DiT / U-DiT. All per-step randomness (data order, timesteps, noise,
label dropout, flips) comes from generators seeded by (seed, step, rank), so a resumed run reproduces the
uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from metamixer.nn.flops import count_params
from metamixer.train.allocator import keep_freed_memory
from metamixer.train.amp import autocast, make_grad_scaler
from metamixer.train.checkpoint import restore_checkpoint, save_checkpoint
from metamixer.train.cli import build_parser, config_from_args
from metamixer.train.config import save_config
from metamixer.train.distributed import all_reduce_mean, cleanup_distributed, init_distributed, wrap_ddp
from metamixer.train.ema import ModelEMA
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.logger import RunLogger
from metamixer.train.seed import seed_everything

from .builders import build_dataset, build_diffusion, build_model, resolve_device
from .config import GenerationConfig
from .data.images import make_grid, save_png, to_uint8

__all__ = ["train", "main", "cli", "BatchStream"]


class BatchStream:
    """Deterministic, resumable batches: epoch e is a permutation seeded by (seed, e), sharded by rank."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if len(dataset) < batch_size * world_size:
            raise FFNetError(f"dataset has {len(dataset)} items, fewer than one global batch "
                             f"({batch_size * world_size}); lower train.batch_size")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_epoch = len(dataset) // (batch_size * world_size)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, k = divmod(step, self.per_epoch)
        perm = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        start = (k * self.world_size + self.rank) * self.batch_size
        items = [self.dataset[int(i)] for i in perm[start:start + self.batch_size]]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)

    def iterate(self, start_step: int, prefetch_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches from ``start_step`` on; ``prefetch_workers`` > 0 loads ahead in a thread pool (order kept)."""
        if prefetch_workers <= 0:
            step = start_step
            while True:
                yield self.batch(step)
                step += 1
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(prefetch_workers) as pool:
            pending = [pool.submit(self.batch, start_step + i) for i in range(prefetch_workers)]
            step = start_step + prefetch_workers
            while True:
                out = pending.pop(0).result()
                pending.append(pool.submit(self.batch, step))
                step += 1
                yield out


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)


def _sample_grid(ema_model, cfg: GenerationConfig, device, vae=None) -> np.ndarray:
    from .sampling import generate

    diffusion = build_diffusion(cfg, cfg.train.sample_steps)
    n = cfg.train.sample_count
    labels = torch.arange(n) % cfg.model.num_classes
    method = "ddim" if str(cfg.train.sample_steps).startswith("ddim") else "ddpm"
    fused = ema_model.fuse()
    images = generate(fused, diffusion, labels, cfg_scale=cfg.train.sample_cfg_scale, method=method,
                      generator=torch.Generator().manual_seed(cfg.seed), clip_denoised=cfg.data.mode != "latent",
                      decode=vae.decode if vae is not None else None)
    return make_grid(to_uint8(images), ncols=int(math.ceil(math.sqrt(n))))


def train(cfg: GenerationConfig, resume: str | None = None) -> dict:
    """Run (or resume) training; returns a summary (final losses, steps, timing)."""
    info = init_distributed(resolve_device(cfg.device) if cfg.device != "auto" else None)
    device = info.device
    if device.type == "cpu":
        keep_freed_memory()
    tc = cfg.train
    if tc.batch_size % info.world_size:
        raise FFNetError(f"train.batch_size={tc.batch_size} must be divisible by the number of processes "
                         f"({info.world_size})")
    seed_everything(cfg.seed + info.rank)
    out = Path(cfg.output_dir)
    logger = RunLogger(out)
    if info.is_main:
        save_config(cfg, out / "config.yaml")

    dataset = build_dataset(cfg)
    diffusion = build_diffusion(cfg)
    model = build_model(cfg.model, learn_sigma=diffusion.learn_sigma).to(device)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    ema = ModelEMA(model, decay=tc.ema_decay, warmup=tc.ema_warmup)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scaler = make_grad_scaler(tc.precision, device)
    start_step = 0
    if resume:
        ckpt = restore_checkpoint(resume, model=model, optimizer=optimizer, scaler=scaler, ema=ema)
        start_step = int(ckpt["step"])
        logger.info(f"resumed from {resume} at step {start_step}")
    net = wrap_ddp(model, info)
    logger.info(f"model {cfg.model.name}: {count_params(model) / 1e6:.2f}M params (train form), "
                f"data {cfg.data.mode} ({len(dataset)} items), {info.world_size} process(es) on {device}")

    vae = None
    if cfg.data.mode == "latent" and cfg.vae_path and info.is_main:
        from .data.latents import load_vae

        vae = load_vae(cfg.vae_path, device)

    stream = BatchStream(dataset, tc.batch_size // info.world_size, cfg.seed, info.rank, info.world_size)
    batches = stream.iterate(start_step, prefetch_workers=cfg.data.num_workers if cfg.data.mode != "digits" else 0)
    history: list[dict] = []
    window: dict[str, list[float]] = {"loss": [], "mse": [], "vb": []}
    t0 = time.perf_counter()
    # load the first batch before the progress bar exists, so a data error prints as one clean line
    first = next(batches) if start_step < tc.steps else None
    steps_iter = logger.progress(range(start_step, tc.steps), total=tc.steps - start_step, desc="train")
    model.train()
    for step in steps_iter:
        x, y = first if step == start_step else next(batches)
        g = step_generator(cfg.seed, step, info.rank)
        b = x.shape[0]
        t = torch.randint(0, diffusion.num_timesteps, (b,), generator=g)
        noise = torch.randn(x.shape, generator=g)
        drop = torch.rand(b, generator=g) < cfg.model.class_dropout
        if cfg.data.mode == "pixel" and cfg.data.hflip:
            flip = torch.rand(b, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x, y, t, noise, drop = (v.to(device, non_blocking=True) for v in (x, y, t, noise, drop))
        x, noise = x.contiguous(memory_format=memory_format), noise.contiguous(memory_format=memory_format)
        with autocast(device, tc.precision):
            terms = diffusion.training_losses(net, x, t, model_kwargs={"y": y, "drop_mask": drop}, noise=noise)
        loss = terms["loss"].mean()
        if not torch.isfinite(loss):
            raise FFNetError(f"loss became {loss.item()} at step {step}; lower train.lr or use precision=fp32")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if tc.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        ema.update(model)
        for k in window:
            if k in terms:
                window[k].append(float(terms[k].mean().detach()))
        done = step + 1
        if done % tc.log_every == 0 or done == tc.steps:
            stats = {k: float(all_reduce_mean(torch.tensor(np.mean(v)))) for k, v in window.items() if v}
            elapsed = time.perf_counter() - t0
            stats["steps_per_s"] = (done - start_step) / elapsed
            logger.scalars(stats, done, prefix="train/")
            logger.info(f"step {done}/{tc.steps} " + " ".join(f"{k}={v:.4f}" for k, v in stats.items()))
            history.append({"step": done, **stats})
            window = {k: [] for k in window}
        if info.is_main and tc.sample_every and done % tc.sample_every == 0 and (cfg.data.mode != "latent" or vae):
            grid = _sample_grid(ema.module, cfg, device, vae)
            logger.image("samples/ema", grid, done)
            save_png(grid, out / "samples" / f"step_{done:07d}.png")
        if info.is_main and (done % tc.ckpt_every == 0 or done == tc.steps):
            save_checkpoint(out / "last.pth", model=model, optimizer=optimizer, scaler=scaler, ema=ema, step=done,
                            config=cfg)
            if tc.keep_checkpoints and done % tc.ckpt_every == 0:
                save_checkpoint(out / f"step_{done:07d}.pth", model=model, optimizer=optimizer, scaler=scaler,
                                ema=ema, step=done, config=cfg)
    logger.info(f"done: {tc.steps} steps, checkpoint {out / 'last.pth'}")
    logger.close()
    cleanup_distributed()
    return {"history": history, "steps": tc.steps, "seconds": time.perf_counter() - t0,
            "checkpoint": str(out / "last.pth")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("ffnet-gen-train", "Train a U-FFNet / U-DiT class-conditional diffusion model")
    parser.add_argument("--resume", metavar="PATH", default=None, help="checkpoint (last.pth) to resume from")
    args = parser.parse_args(argv)
    cfg = config_from_args(GenerationConfig, args)
    train(cfg, resume=args.resume)
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
