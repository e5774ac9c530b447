"""Train a class-conditional U-FFNet / U-DiT diffusion model (latent, pixel or digits data) on core's Trainer.

``ffnet-gen-train CONFIG [key=value ...] [--resume last.pth]`` (CONFIG: a YAML path or a shipped recipe name such
as ``u_ffnet_b_imagenet256``); works under ``torchrun`` (DDP, one process per GPU, or gloo on CPU). AdamW (lr
1e-4, no weight decay), EMA 0.9999, label dropout 0.1 and the hybrid loss follow DiT / U-DiT.

What is diffusion-specific lives in :class:`DiffusionTask`: the batches carry their own timesteps, noise,
label-dropout mask and flips, drawn from a generator seeded by (seed, micro-batch index, rank), so a batch is a
pure function of its position and a resumed run (also from the middle of an epoch) sees exactly what the
uninterrupted one saw. There is no held-out metric during training: each validation reports the mean training
loss since the previous one and draws an EMA sample grid, and no ``best.pth`` is kept (``monitor = None``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from metamixer.nn.flops import count_params
from metamixer.train.allocator import keep_freed_memory
from metamixer.train.cli import build_train_parser, config_from_args
from metamixer.train.device import resolve_device
from metamixer.train.distributed import all_reduce_mean, cleanup_distributed
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.logger import RunLogger
from metamixer.train.loop import FitResult, RunContext, Task, Trainer, prepare_run

from .builders import build_dataset, build_diffusion, build_model
from .config import GenerationConfig
from .data.images import make_grid, save_png, to_uint8
from .models import model_kwargs
from .sampling import EVAL_NAMES, check_sampler_options, check_steps

__all__ = ["DiffusionTask", "check_run", "train", "main", "cli", "RECIPES"]

#: the shipped recipes (editable install: apps/generation/recipes); None when not installed from the repo
RECIPES: Path | None = Path(__file__).resolve().parents[2] / "recipes"
if not RECIPES.is_dir():
    RECIPES = None

Batch = tuple[torch.Tensor, ...]


def batch_generator(seed: int, index: int, rank: int) -> torch.Generator:
    """The generator of micro-batch ``index`` (counted over the whole run) on ``rank``."""
    return torch.Generator().manual_seed((seed * 1_000_003 + index) * 64 + rank)


class DiffusionTask(Task):
    """Denoising training of one model: batches, the hybrid loss, sample grids and kept snapshots."""

    monitor = None  # no validation metric: no best.pth

    def __init__(self, cfg: GenerationConfig, ctx: RunContext, dataset: Dataset | None = None) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.diffusion = build_diffusion(cfg)
        self.dataset = dataset if dataset is not None else build_dataset(cfg)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        model = build_model(cfg.model, learn_sigma=self.diffusion.learn_sigma).to(memory_format=self.memory_format)
        super().__init__(model)
        world, batch = ctx.info.world_size, cfg.train.batch_size
        if len(self.dataset) < batch * world:
            raise FFNetError(f"the dataset has {len(self.dataset)} items, fewer than one global batch "
                             f"({batch} per process x {world} processes); lower train.batch_size")
        self.per_epoch = len(self.dataset) // (batch * world)
        self.window = {"loss": 0.0, "count": 0.0}  # training loss since the last validation
        self.vae = None
        if cfg.data.mode == "latent" and cfg.data.vae_path and ctx.is_main:
            from .data.latents import load_vae

            self.vae = load_vae(cfg.data.vae_path, ctx.device)

    # ------------------------------------------------------------------------------------------- batches
    def steps_per_epoch(self) -> int:
        return self.per_epoch

    def _batch(self, epoch: int, k: int) -> Batch:
        """Micro-batch ``k`` of ``epoch`` on this rank: images, labels, timesteps, noise, label-dropout mask."""
        cfg, info = self.cfg, self.ctx.info
        perm = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(cfg.run.seed * 7919 + epoch))
        start = (k * info.world_size + info.rank) * cfg.train.batch_size
        items = [self.dataset[int(i)] for i in perm[start:start + cfg.train.batch_size]]
        x = torch.stack([item[0] for item in items])
        y = torch.tensor([item[1] for item in items], dtype=torch.long)
        g = batch_generator(cfg.run.seed, epoch * self.per_epoch + k, info.rank)
        b = x.shape[0]
        t = torch.randint(0, self.diffusion.num_timesteps, (b,), generator=g)
        noise = torch.randn(x.shape, generator=g)
        drop = torch.rand(b, generator=g) < cfg.model.class_dropout
        if cfg.data.mode == "pixel" and cfg.data.hflip:
            flip = torch.rand(b, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x, y, t, noise, drop

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches ``start..`` of ``epoch``; latent/pixel data is loaded ahead in ``data.num_workers`` threads."""
        workers = self.cfg.data.num_workers if self.cfg.data.mode != "digits" else 0
        if workers <= 0:
            for k in range(start, self.per_epoch):
                yield self._batch(epoch, k)
            return
        with ThreadPoolExecutor(workers) as pool:
            pending = [pool.submit(self._batch, epoch, k) for k in range(start, min(start + workers, self.per_epoch))]
            k = start + len(pending)
            while pending:
                out = pending.pop(0).result()
                if k < self.per_epoch:
                    pending.append(pool.submit(self._batch, epoch, k))
                    k += 1
                yield out

    # ----------------------------------------------------------------------------------------- the loss
    def training_step(self, model: nn.Module, batch: Batch) -> Mapping[str, torch.Tensor]:
        x, y, t, noise, drop = (v.to(self.ctx.device, non_blocking=True) for v in batch)
        x, noise = x.contiguous(memory_format=self.memory_format), noise.contiguous(memory_format=self.memory_format)
        terms = self.diffusion.training_losses(model, x, t, model_kwargs={"y": y, "drop_mask": drop}, noise=noise)
        out = {k: terms[k].mean() for k in ("loss", "mse", "vb") if k in terms}
        self.window["loss"] += float(out["loss"].detach())
        self.window["count"] += 1
        return out

    # ---------------------------------------------------------------------------------------- validation
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The mean training loss since the previous validation (averaged over processes)."""
        mean = self.window["loss"] / max(self.window["count"], 1.0)
        self.window = {"loss": 0.0, "count": 0.0}
        return {"train_loss": float(all_reduce_mean(torch.tensor(mean, device=self.ctx.device)))}

    def on_validation(self, model: nn.Module, metrics: Mapping[str, float], step: int, logger: RunLogger) -> None:
        """An EMA sample grid (PNG + tensorboard); kept step_N.pth snapshots are the trainer's (``train.keep_every``)."""
        if not self.ctx.is_main:
            return
        cfg = self.cfg
        if cfg.eval.grid_count is not None and (cfg.data.mode != "latent" or self.vae is not None):
            grid = self.sample_grid(model)
            logger.image("samples/ema", grid, step)
            save_png(grid, self.ctx.output_dir / "samples" / f"step_{step:07d}.png")

    @torch.no_grad()
    def sample_grid(self, model: nn.Module) -> np.ndarray:
        from .sampling import generate

        ev = self.cfg.eval
        diffusion = build_diffusion(self.cfg, ev.grid_steps)
        labels = torch.arange(ev.grid_count) % self.cfg.model.num_classes
        images = generate(model.fuse(), diffusion, labels, cfg_scale=ev.grid_cfg_scale,
                          method="ddim" if ev.grid_steps.startswith("ddim") else "ddpm",
                          generator=torch.Generator().manual_seed(self.cfg.run.seed),
                          clip_denoised=self.cfg.data.mode != "latent",
                          decode=self.vae.decode if self.vae is not None else None)
        return make_grid(to_uint8(images), ncols=int(math.ceil(math.sqrt(ev.grid_count))))

    # ----------------------------------------------------------------------------------- resume state
    def state_dict(self) -> dict[str, Any]:
        return {"window": dict(self.window)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.window = dict(state.get("window", self.window))


def check_run(cfg: GenerationConfig, resume: str | None = None) -> Dataset:
    """Everything a config can get wrong, checked before the run folder exists; returns the training dataset.

    Why here and not where each value is used: the grids' sampler is first built at the first validation and a
    bad image is first drawn some batches in, both after the run folder, its ``config.yaml`` and maybe hours of
    training. Here: the diffusion and both samplers (``eval.grid_steps``, ``eval.steps``), the labels, the
    model (built on the meta device: no memory, no weights), the VAE folder, the data (pixel mode: every image
    decoded once, all unreadable files listed) and its size against one global batch.
    """
    diffusion = build_diffusion(cfg)
    ev = cfg.eval
    if ev.grid_count is not None:
        check_steps(ev.grid_steps, cfg.model.diffusion.num_steps, "eval.grid_steps")
    check_sampler_options(num=ev.num_samples, labels=ev.labels, steps=ev.steps, cfg_scale=ev.cfg_scale,
                          eta=ev.eta, guided_channels=ev.guided_channels, batch_size=ev.batch_size, names=EVAL_NAMES)
    check_steps(ev.steps, cfg.model.diffusion.num_steps, "eval.steps")
    try:
        model_kwargs(cfg.model.name)
    except FFNetError as exc:
        raise FFNetError(f"model.name: {exc}") from None
    with torch.device("meta"):
        build_model(cfg.model, learn_sigma=diffusion.learn_sigma)
    if cfg.data.mode == "latent" and cfg.data.vae_path:
        from .data.latents import check_vae_folder

        check_vae_folder(cfg.data.vae_path, "data.vae_path")
    if resume is not None and not Path(resume).is_file():
        raise FFNetError(f"--resume {resume}: " + ("is a folder, expected its last.pth" if Path(resume).is_dir()
                                                   else "checkpoint not found"))
    dataset = build_dataset(cfg, verify=True)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if len(dataset) < cfg.train.batch_size * world:
        raise FFNetError(f"the dataset has {len(dataset)} items, fewer than one global batch "
                         f"({cfg.train.batch_size} per process x {world} processes); lower train.batch_size")
    return dataset


def train(cfg: GenerationConfig, resume: str | None = None, *, quiet: bool = False) -> FitResult:
    """Run (or resume from ``last.pth``) training; returns core's FitResult (``history``: one entry per
    validation with the window's ``train_loss``). The config is checked (:func:`check_run`) before the run
    folder is created."""
    dataset = check_run(cfg, resume)
    ctx = prepare_run(cfg.run, cfg, quiet=quiet)
    try:
        task = DiffusionTask(cfg, ctx, dataset)
        ctx.logger.info(f"model {cfg.model.name}: {count_params(task.model) / 1e6:.2f}M params (train form), "
                        f"data {cfg.data.mode} ({len(task.dataset)} items), {ctx.info.world_size} process(es) "
                        f"on {ctx.device}, batch {cfg.train.batch_size} per process")
        result = Trainer(task, ctx, cfg.optim, cfg.train, cfg.run, config=cfg).fit(resume)
        ctx.logger.info(f"done: step {result.step}/{result.total_steps} ({result.stopped}), "
                        f"checkpoint {result.last_checkpoint}")
        return result
    finally:
        ctx.logger.close()
        cleanup_distributed()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_train_parser("ffnet-gen-train", "Train a U-FFNet / U-DiT class-conditional diffusion model")
    args = parser.parse_args(argv)
    cfg = config_from_args(GenerationConfig, args, RECIPES)
    if resolve_device(cfg.run.device).type == "cpu":
        keep_freed_memory()
    train(cfg, resume=args.resume)
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
