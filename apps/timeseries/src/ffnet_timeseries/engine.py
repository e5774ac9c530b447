"""Forecasting on core's engine: a :class:`ForecastTask` for ``metamixer.train.loop.Trainer``, the exact split
metrics, and :func:`train` (used by the train / reproduce / quickstart commands).

Protocol (the authors' ``exp_FFNet``, cleaned up): Adam + MSE; lr set per epoch by a named rule
(``optim.schedule``, see :mod:`ffnet_timeseries.schedule`); after each epoch the exact validation MSE picks
``best.pth`` and counts toward early stopping (``train.patience``, in validations); the best-validation weights are
reloaded for the single test evaluation. The trainer owns the loop, checkpoints and exact resume (also mid-epoch:
the batch order is a pure function of (seed, epoch), and :meth:`ForecastTask.train_batches` skips to a batch).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from ffnet_timeseries.builders import build_data, build_model, model_memory_report
from ffnet_timeseries.config import TSConfig
from ffnet_timeseries.data import ForecastData, WindowDataset, WindowLoader, few_steps_advice
from ffnet_timeseries.metrics import MetricAccumulator
from ffnet_timeseries.schedule import EPOCH_SCHEDULES, epoch_schedule
from metamixer.train.amp import autocast
from metamixer.train.checkpoint import load_checkpoint
from metamixer.train.config import config_to_dict
from metamixer.train.distributed import DistInfo
from metamixer.train.errors import FFNetError
from metamixer.train.logger import RunLogger
from metamixer.train.loop import Task, Trainer, prepare_run
from metamixer.train.results import write_results
from metamixer.train.schedules import Schedule
from metamixer.train.sections import OptimConfig

__all__ = ["ForecastTask", "TrainResult", "evaluate_split", "forecast_arrays", "predict", "train", "repeat_last_metrics"]


def _output_slice(features: str) -> slice:
    """The model forecasts every input variable; with features=MS only the target (last column) is scored."""
    return slice(-1, None) if features == "MS" else slice(None)


def _sum_across_ranks(acc: MetricAccumulator, device: torch.device) -> MetricAccumulator:
    if dist.is_available() and dist.is_initialized():
        sums = acc.sums.to(device)
        dist.all_reduce(sums)
        acc.sums = sums.cpu()
    return acc


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    dataset: WindowDataset,
    batch_size: int,
    device: torch.device,
    features: str = "M",
    rank: int = 0,
    world_size: int = 1,
    scaler: Any = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """Exact metrics over every window of ``dataset`` (no window dropped, each counted once, even under DDP).

    With ``scaler`` the predictions and targets are mapped back to the data's units first (label them as such).
    ``precision``: the forward pass under autocast (``run.precision``); metrics are always accumulated in fp32.
    """
    model.eval()
    out_slice = _output_slice(features)
    acc = MetricAccumulator()
    indices = torch.arange(len(dataset))[rank::world_size]
    for start in range(0, len(indices), batch_size):
        x, y = dataset.get_batch(indices[start : start + batch_size])
        with autocast(device, precision):
            pred = model(x.to(device))[..., out_slice]
        pred, y = pred.float(), y.to(device)
        if scaler is not None:
            cols = slice(-1, None) if features == "MS" else slice(None)
            mean = torch.as_tensor(scaler.mean[cols], dtype=pred.dtype, device=device)
            std = torch.as_tensor(scaler.std[cols], dtype=pred.dtype, device=device)
            pred, y = pred * std + mean, y * std + mean
        acc.update(pred, y)
    return _sum_across_ranks(acc, device).compute()


@torch.no_grad()
def forecast_arrays(model: nn.Module, dataset: WindowDataset, batch_size: int, device: torch.device,
                    features: str = "M", precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """(pred, true) over every window of ``dataset``, float32 ``[windows, pred_len, vars]`` in the scaled space:
    the arrays TSLib saves as ``pred.npy`` / ``true.npy`` (with ``MS`` only the target, so vars = 1), from the same
    forward passes :func:`evaluate_split` scores."""
    model.eval()
    out_slice = _output_slice(features)
    n = len(dataset)
    n_out = dataset.data[:, dataset.target_columns].shape[1]
    pred = np.empty((n, dataset.pred_len, n_out), dtype=np.float32)
    true = np.empty_like(pred)
    for start in range(0, n, batch_size):
        x, y = dataset.get_batch(torch.arange(start, min(start + batch_size, n)))
        with autocast(device, precision):
            out = model(x.to(device))[..., out_slice]
        pred[start : start + len(x)] = out.float().cpu().numpy()
        true[start : start + len(x)] = y.numpy()
    return pred, true


@torch.no_grad()
def predict(model: nn.Module, dataset: WindowDataset, indices: list[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """(history, forecast, truth) for a few windows, in scaled space (for plots)."""
    model.eval()
    x, y = dataset.get_batch(torch.tensor(indices))
    return x, model(x.to(device)).cpu(), y


def repeat_last_metrics(dataset: WindowDataset, features: str = "M", batch_size: int = 4096) -> dict[str, float]:
    """The naive baseline every forecaster must beat: repeat the last observed value over the horizon."""
    acc = MetricAccumulator()
    cols = _output_slice(features)
    for start in range(0, len(dataset), batch_size):
        x, y = dataset.get_batch(torch.arange(start, min(start + batch_size, len(dataset))))
        acc.update(x[:, -1:, cols].expand_as(y), y)
    return acc.compute()



class ForecastTask(Task):
    """MSE forecasting on the train windows; validation = exact MSE/MAE over every validation window.

    Besides the trainer's own history, the task keeps one record per validation in the shape the reproduction
    archive has always had (epoch 1-based, lr, train_mse, val_mse, val_mae, epoch_s[, test_mse, test_mae]).
    """

    monitor, monitor_mode = "mse", "min"

    def __init__(self, cfg: TSConfig, data: ForecastData, model: nn.Module, info: DistInfo) -> None:
        super().__init__(model)
        self.cfg, self.data, self.info = cfg, data, info
        self.loader = WindowLoader(data.train, cfg.train.batch_size, shuffle=True, drop_last=False, seed=cfg.run.seed,
                                   rank=info.rank, world_size=info.world_size)
        self.out_slice = _output_slice(cfg.data.features)
        self.eval_batch_size = cfg.eval.batch_size or cfg.train.batch_size
        self.history: list[dict[str, float]] = []
        self.schedule: Schedule | None = None
        self._optimizer_steps_per_epoch = 1
        self._sq, self._n, self._since = 0.0, 0, time.time()

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def train_batches(self, epoch: int, start: int = 0) -> Iterable[Any]:
        self.loader.set_epoch(epoch + 1)  # seed + 1-based epoch: the permutations the old loop drew
        return self.loader.batches(start)

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        y = y.to(self.info.device)
        loss = F.mse_loss(model(x.to(self.info.device))[..., self.out_slice].float(), y)
        value = float(loss.detach())
        if math.isfinite(value):
            self._sq, self._n = self._sq + value * y.numel(), self._n + y.numel()
        return {"loss": loss}

    def lr_schedule(self, cfg: OptimConfig, total_steps: int, steps_per_epoch: int) -> Schedule:
        self._optimizer_steps_per_epoch = steps_per_epoch
        if cfg.schedule in EPOCH_SCHEDULES:
            if cfg.warmup_steps or cfg.warmup_epochs or cfg.min_lr:
                raise FFNetError(f"optim.schedule={cfg.schedule} sets the lr per epoch: optim.warmup_steps, "
                                 "optim.warmup_epochs and optim.min_lr apply to constant and cosine only")
            self.schedule = epoch_schedule(cfg.schedule, cfg.lr, steps_per_epoch, getattr(cfg, "first_epoch_lr_div", 25.0))
        else:
            self.schedule = super().lr_schedule(cfg, total_steps, steps_per_epoch)
        return self.schedule

    def score(self, model: nn.Module, dataset: WindowDataset) -> dict[str, float]:
        """Exact metrics of ``model`` over every window of ``dataset`` (sharded over the ranks, summed)."""
        return evaluate_split(model, dataset, self.eval_batch_size, self.info.device, self.cfg.data.features,
                              self.info.rank, self.info.world_size, precision=self.cfg.run.precision)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        val = self.score(model, self.data.val)
        metrics = {"mse": val["mse"], "mae": val["mae"]}
        if self.cfg.eval.test_every_epoch:
            test = self.score(model, self.data.test)
            metrics.update(test_mse=test["mse"], test_mae=test["mae"])
        return metrics

    def on_validation(self, model: nn.Module, metrics: Mapping[str, float], step: int, logger: RunLogger) -> None:
        record = {"epoch": math.ceil(step / self._optimizer_steps_per_epoch), "step": step,
                  "lr": self.schedule(step - 1) if self.schedule is not None else float("nan"),
                  "train_mse": self._sq / max(self._n, 1), "val_mse": metrics["mse"], "val_mae": metrics["mae"],
                  "epoch_s": time.time() - self._since}
        record.update({k: metrics[k] for k in ("test_mse", "test_mae") if k in metrics})
        self.history.append(record)
        logger.scalars({"train_mse": record["train_mse"], "lr": record["lr"]}, step, prefix="epoch/")
        self._sq, self._n, self._since = 0.0, 0, time.time()

    def state_dict(self) -> dict[str, Any]:
        """The loop's bookkeeping, plus what a forecast from this checkpoint needs without the training CSV: the
        model's columns (in its variable order) and the train-split scaler (``ffnet-ts-predict``)."""
        scaler = self.data.scaler.state_dict() if self.data.scaler is not None else None
        return {"history": self.history, "train_sq": self._sq, "train_n": self._n, "n_vars": self.data.n_vars,
                "columns": list(self.data.columns), "scaler": scaler}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = [dict(r) for r in state.get("history", [])]
        self._sq, self._n = float(state.get("train_sq", 0.0)), int(state.get("train_n", 0))


@dataclass
class TrainResult:
    """What a run reports. A finished one (``stopped`` completed | early_stop) also writes ``results.json`` in the
    run folder: the shared results shape plus these fields (``test`` is kept for the reproduction archive)."""

    dataset: str
    pred_len: int
    seed: int
    test: dict[str, float]
    best_val_mse: float
    best_epoch: int
    epochs_run: int
    params: int
    wall_s: float
    repeat_last: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    output_dir: str = ""
    stopped: str = "completed"

    def to_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return clean(dict(self.__dict__))


def train(cfg: TSConfig, resume: str | None = None, data: ForecastData | None = None, quiet: bool = False) -> TrainResult:
    """Run one training job described by ``cfg``; returns the test metrics of the best-validation weights.

    A run cut short by ``run.max_time`` / ``run.max_steps`` is scored too (its best weights so far) but writes no
    ``results.json``: it is unfinished, resume it with ``resume=<run>/last.pth``."""
    ctx = prepare_run(cfg.run, cfg, quiet=quiet)
    log = ctx.logger
    data = data if data is not None else build_data(cfg.data)
    model = build_model(cfg.model, data.n_vars, cfg.data.seq_len, cfg.data.pred_len)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(model_memory_report(model, cfg, data.n_vars))
    log.info(f"data: {data.path} rows train/val/test {data.borders}; windows {len(data.train)}/{len(data.val)}/{len(data.test)}")
    for note in data.notes:
        log.info(f"data: {note}")
    task = ForecastTask(cfg, data, model, ctx.info)
    advice = few_steps_advice(len(data.train), cfg.train.batch_size, cfg.train.accum_steps, ctx.info.world_size)
    if advice is not None and cfg.train.epochs is not None and ctx.is_main:
        log.info(f"warning: {advice}")
        warnings.warn(advice, UserWarning, stacklevel=2)
    fit = Trainer(task, ctx, cfg.optim, cfg.train, cfg.run, config=cfg).fit(resume)
    fit_end = time.time()
    stopped = fit.stopped
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # best.pth is written by rank 0: every rank reads the finished file
    best_epoch = 0
    if fit.best_checkpoint is not None:
        model.load_state_dict(load_checkpoint(fit.best_checkpoint)["model"])
        best_epoch = next((int(r["epoch"]) for r in task.history if r["step"] == fit.best_step), 0)
    test = task.score(model, data.test)
    result = TrainResult(
        dataset=cfg.data.dataset, pred_len=cfg.data.pred_len, seed=cfg.run.seed, test=test,
        best_val_mse=fit.best if fit.best is not None else math.inf, best_epoch=best_epoch,
        epochs_run=len(task.history), params=n_params, wall_s=fit.wall_s + time.time() - fit_end,
        repeat_last=repeat_last_metrics(data.test, cfg.data.features), history=task.history,
        output_dir=str(ctx.output_dir), stopped=stopped,
    )
    per_window = max(1, data.n_vars if cfg.data.features != "MS" else 1) * cfg.data.pred_len
    log.info(
        f"test (best epoch {best_epoch}): mse {test['mse']:.4f} mae {test['mae']:.4f} on {test['count'] // per_window} "
        f"windows; repeat-last mse {result.repeat_last['mse']:.4f} mae {result.repeat_last['mae']:.4f}; {result.wall_s:.0f}s"
    )
    if ctx.is_main and stopped in ("completed", "early_stop"):
        record = result.to_dict()
        write_results(ctx.output_dir / "results.json", metrics=record["test"],
                      data={"dataset": cfg.data.dataset, "path": str(data.path), "split": "test", "windows": len(data.test),
                            "seq_len": cfg.data.seq_len, "pred_len": cfg.data.pred_len, "features": cfg.data.features},
                      checkpoint=fit.best_checkpoint, protocol={"weights": "best validation MSE",
                                                                "space": "scaled (train-split standard scaler)"},
                      **{k: v for k, v in record.items() if k != "wall_s"}, wall_s=record["wall_s"],
                      config=config_to_dict(cfg))
    elif stopped not in ("completed", "early_stop"):
        log.info(f"run unfinished ({stopped}): no results.json; continue with --resume {ctx.output_dir / 'last.pth'}")
    log.close()
    return result
