"""Train FFNetSR: ``ffnet-sr-train CONFIG [key=value ...] [--resume PATH]`` (CONFIG: a recipe path or the name of
a shipped recipe, e.g. ``ffnetsr_light_div2k_x2``).

Step-based like BasicSR (``train.steps``; the schedule is defined in optimizer steps). One micro-batch per
process per step (times ``train.accum_steps``); under ``torchrun`` the gradients are averaged by DDP and every rank
draws disjoint samples. The loop is core's :class:`~metamixer.train.loop.Trainer` running
:class:`~ffnet_sr.task.SRTask`; a run resumed from ``last.pth`` is bit-for-bit the uninterrupted run on CPU.

Run folder (``run.output_dir``): ``config.yaml`` (resolved), ``last.pth`` (every ``train.save_every`` steps, at
each validation and at the end), ``best.pth`` (best ``train.best_metric``: by default the first validation set's
PSNR), ``log.txt`` and tensorboard events (losses, lr, ``val/<set>/psnr`` and ``val/<set>/ssim`` for every set of
``data.val_sets``, and a bicubic | SR | HR crop of the first validation image).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from metamixer.nn.flops import count_params
from metamixer.train.allocator import keep_freed_memory
from metamixer.train.cli import build_train_parser, resolve_recipe
from metamixer.train.config import load_config
from metamixer.train.device import resolve_device
from metamixer.train.distributed import cleanup_distributed
from metamixer.train.errors import run_cli
from metamixer.train.loop import FitResult, Trainer, prepare_run

from .config import RECIPES_DIR, SRConfig, best_metric, validation_sets
from .data.dataset import resolve_set_dir
from .task import SRTask, build_dataset

__all__ = ["train", "main"]


def train(cfg: SRConfig, resume: str | Path | None = None, quiet: bool = False) -> FitResult:
    """Run (or resume) training; returns how the run ended (steps, best validation metric and its step,
    checkpoints; ``history`` holds every validation's ``<set>/psnr`` and ``<set>/ssim``)."""
    for s in validation_sets(cfg.data):  # a missing validation set or a bad train.best_metric stops here too
        resolve_set_dir(s.path)
    monitor = best_metric(cfg)
    dataset = build_dataset(cfg)  # bad data stops here, before the run folder exists
    ctx = prepare_run(cfg.run, cfg, quiet=quiet)
    try:
        task = SRTask(cfg, ctx, dataset)
        for note in dataset.notes:
            ctx.logger.info(f"warning: training on an evaluation set: {note}")
        ctx.logger.info(
            f"{cfg.model.name} x{cfg.model.scale} depth {task.model.depth}: {count_params(task.model):,} params; "
            f"{len(task.dataset)} training images, batch {cfg.train.batch_size} x {ctx.info.world_size} "
            f"process(es), {task.steps_per_epoch()} batches per epoch"
        )
        result = Trainer(task, ctx, cfg.optim, cfg.train, cfg.run, config=cfg).fit(resume)
        if result.best is not None:
            ctx.logger.info(f"best {monitor} {result.best:.4f} at step {result.best_step}")
        return result
    finally:
        ctx.logger.close()
        cleanup_distributed()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_train_parser("ffnet-sr-train", "Train FFNetSR (YAML recipe + dotted overrides).")
    args = parser.parse_args(argv)
    cfg = load_config(SRConfig, resolve_recipe(args.config, RECIPES_DIR), args.overrides)
    if resolve_device(cfg.run.device).type == "cpu":
        keep_freed_memory()
    result = train(cfg, args.resume)
    if os.environ.get("RANK", "0") != "0":  # torchrun: one summary line, from rank 0
        return 0
    best = (f", best {best_metric(cfg)} {result.best:.4f} (step {result.best_step})" if result.best is not None
            else "")
    print(f"done: step {result.step} of {result.total_steps} ({result.stopped}){best}; {cfg.run.output_dir}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
