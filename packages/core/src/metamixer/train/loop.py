"""The one training loop under every FFNet app.

An app supplies a :class:`Task` (its model, its batches, ``batch -> {"loss": ...}``, ``evaluate -> {metric:
value}``); the :class:`Trainer` does everything a run needs around it, the same way in every app: optimizer and
learning-rate schedule, autocast and loss scaling, gradient accumulation and clipping, EMA, DDP, step and time
limits, validation and checkpoint cadence, best-checkpoint selection and early stopping, exact resume (also from
the middle of an epoch), SIGINT/SIGTERM, NaN/Inf losses, and failed checkpoint writes.

The loop's unit is the optimizer step. An *epoch run* (``train.epochs``) validates and saves at epoch ends; a
*step run* (``train.steps``) every ``val_every`` / ``save_every`` steps. Batches of one epoch must be a pure function
of (seed, epoch) so that a resumed run, which asks the task for epoch ``e`` from micro-batch ``k`` on, sees
exactly the batches the uninterrupted run saw; all RNG states travel in the checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from metamixer.train.amp import autocast, make_grad_scaler
from metamixer.train.checkpoint import restore_checkpoint, save_checkpoint
from metamixer.train.config import save_config
from metamixer.train.device import resolve_device
from metamixer.train.distributed import DistInfo, init_distributed, wrap_ddp
from metamixer.train.ema import ModelEMA
from metamixer.train.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    FFNetError,
    RunInterrupted,
    on_user_error,
)
from metamixer.train.logger import RunLogger
from metamixer.train.schedules import Schedule, build_schedule
from metamixer.train.sections import OptimConfig, RunConfig, TrainConfig
from metamixer.train.seed import seed_everything

__all__ = ["Task", "Trainer", "FitResult", "RunContext", "prepare_run", "build_optimizer"]


# ------------------------------------------------------------------------------------------------ run setup
@dataclass
class RunContext:
    """One process's place in a run: its rank and device, the run folder and the logger."""

    info: DistInfo
    output_dir: Path
    logger: RunLogger

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def is_main(self) -> bool:
        return self.info.is_main


def _remove_stale_temporaries(folder: Path) -> None:
    """Temp files of writes that a killed process never finished (``.last.pth.<pid>.<id>.tmp``)."""
    for tmp in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def _remove_unfinished_run_folder(folder: Path) -> None:
    """A command that created its run folder and stopped on a user error (bad data, a wrong key) before any
    checkpoint leaves no folder behind: it would only hold a config of a run that never ran."""
    if folder.is_dir() and not any(folder.rglob("*.pth")):
        shutil.rmtree(folder, ignore_errors=True)


def prepare_run(run: RunConfig, config: Any, *, quiet: bool = False) -> RunContext:
    """Threads, device and process group, seeds, the run folder (stale temporaries removed, the resolved
    ``config.yaml`` written) and the logger: the same start for every app's training."""
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    info = init_distributed(resolve_device(run.device))
    seed_everything(run.seed + info.rank, deterministic=run.deterministic)
    out = Path(run.output_dir)
    if info.is_main:
        created = next((p for p in [*reversed(out.absolute().parents), out.absolute()] if not p.exists()), None)
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
        save_config(config, out / "config.yaml")
        if created is not None:  # the outermost folder this run creates
            on_user_error(lambda: _remove_unfinished_run_folder(created))
    return RunContext(info, out, RunLogger(out, enabled=info.is_main, echo=not quiet))


def build_optimizer(model: nn.Module, cfg: OptimConfig, params: Iterable[Any] | None = None) -> torch.optim.Optimizer:
    """``optim.name`` over ``params`` (default: all trainable parameters; with weight decay, timm's rule: no
    decay for biases and norm weights, i.e. parameters of one dimension)."""
    if params is None:
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if cfg.weight_decay > 0:
            params = [{"params": [p for _, p in trainable if p.ndim > 1], "weight_decay": cfg.weight_decay},
                      {"params": [p for _, p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
        else:
            params = [p for _, p in trainable]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    if len(cfg.betas) != 2:
        raise FFNetError(f"optim.betas needs two values, got {cfg.betas}")
    kind = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return kind(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


# ------------------------------------------------------------------------------------------------- the task
class Task:
    """What an app hands the trainer; subclass it. ``model`` is the network to train (not yet on the device).

    ``monitor`` names the validation metric that picks ``best.pth`` (None: no best checkpoint) and
    ``monitor_mode`` whether lower or higher is better.
    """

    monitor: str | None = None
    monitor_mode: Literal["min", "max"] = "min"

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def steps_per_epoch(self) -> int:
        """Micro-batches in one epoch on this process."""
        raise NotImplementedError

    def train_batches(self, epoch: int, start: int = 0) -> Iterable[Any]:
        """The micro-batches of 0-based ``epoch`` from index ``start`` on (resume); a pure function of the seed
        and ``epoch``. Override :meth:`epoch_batches` instead where skipping by iteration is cheap enough."""
        return islice(self.epoch_batches(epoch), start, None)

    def epoch_batches(self, epoch: int) -> Iterable[Any]:
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        """Forward one micro-batch (already under autocast); returns ``{"loss": scalar, ...}`` (other entries
        are logged as ``train/<name>``)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics of ``model`` (in eval mode), identical on every process."""
        return {}

    def build_optimizer(self, model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
        return build_optimizer(model, cfg)

    def lr_schedule(self, cfg: OptimConfig, total_steps: int, steps_per_epoch: int) -> Schedule:
        """``lr(step)``; the default is ``optim.schedule`` with ``optim.warmup_*``."""
        warmup = cfg.warmup_steps + round(cfg.warmup_epochs * steps_per_epoch)
        try:
            return build_schedule(cfg.schedule, cfg.lr, total_steps, min_lr=cfg.min_lr, warmup_steps=warmup,
                                  warmup_lr=cfg.warmup_lr)
        except ValueError as exc:
            raise FFNetError(f"optim.schedule: {exc}") from None

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Hook before the 0-based optimizer ``step`` (after its lr is set): per-step optimizer settings other than
        the learning rate (OneCycle's momentum). It must be a pure function of ``step``, so a resume repeats it."""

    def on_validation(self, model: nn.Module, metrics: Mapping[str, float], step: int, logger: RunLogger) -> None:
        """Hook after each validation (images or plots to tensorboard)."""

    def state_dict(self) -> dict[str, Any]:
        """Task state a resumed run needs (plain containers and tensors)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


# ------------------------------------------------------------------------------------------------ the result
@dataclass
class FitResult:
    """How a run ended: ``stopped`` is completed | early_stop | max_time | max_steps."""

    step: int
    epoch: int
    total_steps: int
    stopped: str
    best: float | None = None
    best_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    skipped_batches: int = 0
    last_checkpoint: str | None = None
    best_checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _State:
    """Everything of the loop a resume restores (stored under ``extra["loop"]``)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs completed
    batch: int = 0  # micro-batches of the current epoch done
    best: float | None = None
    best_step: int | None = None
    bad_validations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    elapsed_s: float = 0.0
    skipped: int = 0


class _Signals:
    """SIGINT/SIGTERM set a flag the loop reads after each optimizer step; a second one stops at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Runs a :class:`Task` under the ``run`` / ``optim`` / ``train`` sections; ``config`` (the app's whole
    config) is stored in every checkpoint."""

    def __init__(self, task: Task, context: RunContext, optim: OptimConfig, train: TrainConfig, run: RunConfig,
                 config: Any = None) -> None:
        self.task, self.ctx, self.optim_cfg, self.cfg, self.run_cfg, self.config = task, context, optim, train, run, config
        self.log = context.logger

    # -------------------------------------------------------------------------------------------- helpers
    def _save(self, name: str, state: _State, *, full: bool = True) -> Path | None:
        if not self.ctx.is_main:
            return None
        path = self.ctx.output_dir / name
        extra = {"loop": asdict(state), "task": self.task.state_dict()}
        try:
            save_checkpoint(path, model=self.model, optimizer=self.optimizer if full else None,
                            scaler=self.scaler if (full and self.scaler.is_enabled()) else None, ema=self.ema,
                            step=state.step, epoch=state.epoch, config=self.config, extra=extra)
        except OSError as exc:
            kept = f"the previous {name} is intact" if path.exists() else f"no {name} was written"
            raise FFNetError(f"could not write checkpoint {path}: {exc.strerror or exc}; {kept}") from None
        return path

    def _restore(self, resume: str | Path, state: _State) -> _State:
        ckpt = restore_checkpoint(resume, model=self.model, optimizer=self.optimizer,
                                  scaler=self.scaler if self.scaler.is_enabled() else None, ema=self.ema)
        loop = ckpt.get("extra", {}).get("loop")
        if loop is None:
            raise FFNetError(f"--resume {resume}: not a training checkpoint of this engine (no loop state)")
        self.task.load_state_dict(ckpt["extra"].get("task", {}))
        state = _State(**loop)
        self.log.info(f"resumed from {resume} at step {state.step} (epoch {state.epoch}, batch {state.batch})")
        return state

    def _scored_model(self) -> nn.Module:
        return self.ema.module if (self.ema is not None and self.cfg.eval_weights == "ema") else self.model

    def _validate(self, state: _State) -> bool:
        """Score, log, keep best.pth; returns whether early stopping is due."""
        model = self._scored_model()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = dict(self.task.evaluate(model))
        model.train(was_training)
        record = {"step": state.step, "epoch": state.epoch, **{k: float(v) for k, v in metrics.items()}}
        state.history.append(record)
        self.log.scalars(metrics, state.step, prefix="val/")
        self.task.on_validation(model, metrics, state.step, self.log)
        monitor = self.task.monitor
        improved = False
        if monitor is not None:
            if monitor not in metrics:
                raise FFNetError(f"the task monitors {monitor!r} but evaluate() gave {sorted(metrics)}")
            value = float(metrics[monitor])
            sign = 1.0 if self.task.monitor_mode == "max" else -1.0
            improved = math.isfinite(value) and (state.best is None or sign * (value - state.best) > 0)
            if improved:
                state.best, state.best_step, state.bad_validations = value, state.step, 0
                self._save("best.pth", state, full=False)
            else:
                state.bad_validations += 1
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        epoch = state.epoch + 1 if state.batch > 0 else state.epoch  # mid-epoch: the epoch in progress
        self.log.info(f"validation at step {state.step} (epoch {epoch}): {shown}{' *' if improved else ''}")
        return self.cfg.patience is not None and state.bad_validations >= self.cfg.patience

    def _windows(self, state: _State, spe: int) -> Iterator[list[Any]]:
        """Optimizer-step windows of micro-batches of the current epoch, from the resume point on."""
        accum = self.cfg.accum_steps
        batches = iter(self.task.train_batches(state.epoch, state.batch))
        position = state.batch
        while position < spe:
            size = min(accum, spe - position)
            window = list(islice(batches, size))
            if not window:
                return
            position += len(window)
            yield window

    def _step(self, window: list[Any], state: _State) -> dict[str, float]:
        """One optimizer step over a window of micro-batches; returns the window's mean logged values."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.schedule(state.step) / self.optim_cfg.lr
        self.task.before_step(self.optimizer, state.step)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        used = 0
        for i, batch in enumerate(window):
            last = i == len(window) - 1
            sync = contextlib.nullcontext() if (last or not hasattr(self.wrapped, "no_sync")) else self.wrapped.no_sync()
            with sync:
                with autocast(self.ctx.device, self.run_cfg.precision):
                    out = self.task.training_step(self.wrapped, batch)
                loss = out["loss"].float()
                value = float(loss.detach())
                if not math.isfinite(value):
                    if self.cfg.on_nonfinite == "stop":
                        last_ckpt = self.ctx.output_dir / "last.pth"
                        kept = f"the last good checkpoint is {last_ckpt}" if last_ckpt.exists() else "no checkpoint yet"
                        raise FFNetError(f"loss is {value} at step {state.step + 1} (epoch {state.epoch + 1}, batch "
                                         f"{state.batch + i + 1}); {kept}; lower optim.lr, use run.precision=fp32, or "
                                         "set train.on_nonfinite=skip to skip such batches")
                    state.skipped += 1
                    self.log.info(f"skipped a batch with loss {value} at step {state.step + 1}")
                    continue
                self.scaler.scale(loss / len(window)).backward()
            used += 1
            for key, val in out.items():
                sums[key] = sums.get(key, 0.0) + float(val.detach())
        if used:
            if self.optim_cfg.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                sums["grad_norm"] = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.clip_grad)) * used
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.model)
        state.step += 1
        state.batch += len(window)
        return {k: v / max(used, 1) for k, v in sums.items()} | {"lr": self.optimizer.param_groups[0]["lr"]}

    def _stop_signal(self, signals: _Signals) -> int | None:
        received = signals.received or 0
        if self.ctx.info.is_distributed:  # every rank stops at the same step
            flag = torch.tensor([received], device=self.ctx.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            received = int(flag.item())
        return received or None

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self, resume: str | Path | None = None) -> FitResult:
        started = time.time()
        cfg, task = self.cfg, self.task
        self.model = task.model.to(self.ctx.device)
        self.optimizer = task.build_optimizer(self.model, self.optim_cfg)
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.scaler = make_grad_scaler(self.run_cfg.precision, self.ctx.device)
        self.ema = (ModelEMA(self.model, decay=cfg.ema_decay, warmup=cfg.ema_warmup)
                    if cfg.ema_decay is not None else None)
        spe = task.steps_per_epoch()
        if spe < 1:
            raise FFNetError("the training data gives no batch per epoch (fewer samples than train.batch_size?)")
        steps_per_epoch = math.ceil(spe / cfg.accum_steps)
        total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
        self.schedule = task.lr_schedule(self.optim_cfg, total, steps_per_epoch)
        state = self._restore(resume, _State()) if resume else _State()
        if cfg.patience is not None and state.bad_validations >= cfg.patience:
            stopped = "early_stop"  # the run had stopped early when this checkpoint was written: it stays finished
        else:
            stopped = "completed"
        self.wrapped = wrap_ddp(self.model, self.ctx.info)
        epoch_run = cfg.epochs is not None
        earlier = state.elapsed_s
        last_path: Path | None = None
        saved_at = -1
        running: dict[str, float] = {}

        def elapsed() -> float:
            return earlier + time.time() - started

        def checkpoint() -> Path | None:
            nonlocal saved_at
            state.elapsed_s = elapsed()
            saved_at = state.step
            path = self._save("last.pth", state)
            unit = state.epoch if epoch_run else state.step
            whole = state.batch == 0 or not epoch_run  # epoch runs keep copies at epoch ends only
            if path is not None and cfg.keep_every and whole and unit % cfg.keep_every == 0:
                kept = path.with_name(f"epoch_{unit:04d}.pth" if epoch_run else f"step_{unit:07d}.pth")
                shutil.copyfile(path, kept)  # a hard copy: last.pth is replaced by the next write
            return path

        self.log.info(f"training: {total} optimizer steps ({steps_per_epoch} per epoch, accum {cfg.accum_steps}) "
                      f"on {self.ctx.device}, {self.run_cfg.precision}")
        # one bar per epoch in an epoch run, one bar for the whole run in a step run
        run_bar = self.log.bar(total, state.step, desc="steps") if (cfg.progress and not epoch_run) else None
        logged_at, logged_time = state.step, time.time()
        with _Signals() as signals:
            while stopped == "completed" and state.step < total:
                if epoch_run and state.epoch >= cfg.epochs:
                    break
                remaining = math.ceil((spe - state.batch) / cfg.accum_steps)
                windows = self._windows(state, spe)
                epoch_bar = cfg.progress and epoch_run
                bar = self.log.progress(windows, total=remaining, desc=f"epoch {state.epoch + 1}") if epoch_bar else windows
                for window in bar:
                    values = self._step(window, state)
                    if run_bar is not None:
                        run_bar.update(1)
                    for k, v in values.items():
                        running[k] = running.get(k, 0.0) + v
                    if state.step % cfg.log_every == 0:
                        n = state.step - logged_at
                        mean = {k: v / max(n, 1) for k, v in running.items()}
                        self.log.scalars(mean, state.step, prefix="train/")
                        per_step = (time.time() - logged_time) / max(n, 1)
                        shown = " ".join(f"{k} {v:.4g}" for k, v in mean.items())
                        self.log.info(f"step {state.step}/{total} (epoch {state.epoch + 1}): {shown} ({per_step:.3g} s/step)")
                        running, logged_at, logged_time = {}, state.step, time.time()
                    if not epoch_run:
                        due_val = cfg.val_every is not None and (state.step % cfg.val_every == 0 or state.step == total)
                        if due_val and self._validate(state):
                            stopped = "early_stop"
                        keep = cfg.keep_every and state.step % cfg.keep_every == 0
                        if due_val or keep or (cfg.save_every and state.step % cfg.save_every == 0):
                            last_path = checkpoint()
                    received = self._stop_signal(signals)
                    if received is not None:
                        last_path = checkpoint()
                        code = EXIT_INTERRUPTED if received == signal.SIGINT else EXIT_TERMINATED
                        name = signal.Signals(received).name
                        self.log.info(f"{name}: stopped after step {state.step}; resume with --resume {last_path}")
                        raise RunInterrupted(f"{name}: stopped after step {state.step}, checkpoint {last_path}; "
                                             f"resume with: --resume {last_path}", code)
                    if self.run_cfg.max_steps is not None and state.step >= self.run_cfg.max_steps:
                        stopped = "max_steps"
                    elif self.run_cfg.max_time is not None and elapsed() > self.run_cfg.max_time:
                        stopped = "max_time"
                    if stopped != "completed" or state.step >= total:
                        break
                if state.batch >= spe:  # the epoch ran to its end
                    state.epoch, state.batch = state.epoch + 1, 0
                    if epoch_run:
                        last_epoch = state.epoch >= cfg.epochs
                        due_val = cfg.val_every is not None and (state.epoch % cfg.val_every == 0 or last_epoch)
                        if due_val and self._validate(state) and stopped == "completed":
                            stopped = "early_stop"
                        keep = cfg.keep_every and state.epoch % cfg.keep_every == 0
                        if due_val or last_epoch or keep or (cfg.save_every and state.epoch % cfg.save_every == 0):
                            last_path = checkpoint()
            if saved_at != state.step or last_path is None:
                last_path = checkpoint()
        if run_bar is not None:
            run_bar.close()
        if stopped != "completed":
            self.log.info(f"stopped ({stopped}) at step {state.step} of {total}")
        best = self.ctx.output_dir / "best.pth"
        return FitResult(step=state.step, epoch=state.epoch, total_steps=total, stopped=stopped, best=state.best,
                         best_step=state.best_step, history=state.history, wall_s=elapsed(),
                         skipped_batches=state.skipped, last_checkpoint=str(last_path) if last_path else None,
                         best_checkpoint=str(best) if state.best_step is not None else None)
