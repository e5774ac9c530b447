"""Training and evaluation loops (used by the train/evaluate/reproduce/quickstart commands).

Protocol (the authors' ``exp_FFNet``, cleaned up): Adam + MSE; lr set per epoch by a named schedule; after each
epoch the exact validation MSE decides early stopping (patience per dataset); the best-validation weights are
reloaded for the single test evaluation. Exact resume: ``last.pth`` holds model, optimizer, RNG, epoch and the
early-stopping state; batch order is a pure function of (seed, epoch), so a resumed run replays the same batches.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ffnet_timeseries.builders import build_data, build_model, model_memory_report
from ffnet_timeseries.config import TSConfig
from ffnet_timeseries.data import ForecastData, WindowDataset, WindowLoader
from ffnet_timeseries.metrics import MetricAccumulator
from ffnet_timeseries.schedule import lr_at_epoch
from metamixer.train.allocator import keep_freed_memory
from metamixer.train.amp import autocast, make_grad_scaler
from metamixer.train.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from metamixer.train.config import config_to_dict, save_config
from metamixer.train.distributed import DistInfo, init_distributed, unwrap_model, wrap_ddp
from metamixer.train.errors import FFNetError
from metamixer.train.logger import RunLogger
from metamixer.train.results import write_json
from metamixer.train.seed import seed_everything

__all__ = ["TrainResult", "evaluate_split", "predict", "train", "repeat_last_metrics", "pick_device"]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FFNetError(f"train.device={name!r} but CUDA is not available")
    return torch.device(name)


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
    ``precision``: the forward pass under autocast (``train.precision``); metrics are always accumulated in fp32.
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


@dataclass
class TrainResult:
    """What a finished run reports (also written to ``results.json`` in the run folder)."""

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


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train(cfg: TSConfig, resume: str | None = None, data: ForecastData | None = None, quiet: bool = False) -> TrainResult:
    """Run one training job described by ``cfg``; returns the test metrics of the best-validation weights."""
    started = time.time()
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    info: DistInfo = init_distributed(pick_device(cfg.train.device))
    if info.device.type == "cpu":
        keep_freed_memory()  # ~2x faster CPU steps: no page faults on every step's large activations
    seed_everything(cfg.train.seed + info.rank)
    out_dir = Path(cfg.output_dir)
    logger = RunLogger(out_dir, enabled=info.is_main and not quiet, echo=not quiet) if info.is_main else RunLogger(out_dir, enabled=False)
    if info.is_main:
        save_config(cfg, out_dir / "config.yaml")

    data = data if data is not None else build_data(cfg.data)
    model = build_model(cfg.model, data.n_vars, cfg.data.seq_len, cfg.data.pred_len)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(model_memory_report(model, cfg, data.n_vars))
    logger.info(
        f"data: {data.path} rows train/val/test {data.borders}; windows {len(data.train)}/{len(data.val)}/{len(data.test)}"
    )
    model = model.to(info.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    grad_scaler = make_grad_scaler(cfg.train.precision, info.device)  # enabled for fp16 on CUDA only
    scaler_state = grad_scaler if grad_scaler.is_enabled() else None  # what checkpoints carry
    ddp_model = wrap_ddp(model, info)
    loader = WindowLoader(
        data.train, cfg.train.batch_size, shuffle=True, drop_last=False, seed=cfg.train.seed,
        rank=info.rank, world_size=info.world_size,
    )
    eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size
    out_slice = _output_slice(cfg.data.features)
    loss_fn = nn.MSELoss()

    start_epoch, best_val, best_epoch, bad_epochs, history = 1, math.inf, 0, 0, []
    earlier_s = 0.0  # wall time spent by the processes before a resume (so wall_s covers the whole run)
    best_state: dict[str, torch.Tensor] | None = None
    if resume:
        ckpt = restore_checkpoint(resume, model=model, optimizer=optimizer, scaler=scaler_state, restore_rng=True)
        state = ckpt.get("extra", {}).get("early_stopping", {})
        start_epoch = int(ckpt["epoch"]) + 1
        best_val, best_epoch = float(state.get("best_val", math.inf)), int(state.get("best_epoch", 0))
        bad_epochs, history = int(state.get("bad_epochs", 0)), list(ckpt.get("extra", {}).get("history", []))
        earlier_s = float(ckpt.get("extra", {}).get("elapsed_s", sum(h.get("epoch_s", 0.0) for h in history)))
        best_path = Path(resume).with_name("best.pth")
        if best_epoch > 0:
            if not best_path.exists():
                raise FFNetError(f"--resume {resume}: the best checkpoint {best_path} is missing (needed to finish the run)")
            best_state = load_checkpoint(best_path)["model"]
        logger.info(f"resumed from {resume} at epoch {start_epoch} (best val {best_val:.6f} @ epoch {best_epoch})")

    stopped_early = bad_epochs >= cfg.train.patience and start_epoch > 1
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        if stopped_early:
            break
        t0 = time.time()
        lr = lr_at_epoch(cfg.train.lr_schedule, cfg.train.lr, epoch, cfg.train.epochs, cfg.train.first_epoch_lr_div)
        _set_lr(optimizer, lr)
        loader.set_epoch(epoch)
        ddp_model.train()
        train_sq, train_n = 0.0, 0
        steps = len(loader) if cfg.train.max_steps_per_epoch <= 0 else min(len(loader), cfg.train.max_steps_per_epoch)
        batches = logger.progress(loader, total=steps, desc=f"epoch {epoch}") if cfg.train.progress else loader
        out_of_time = False
        for step, (x, y) in enumerate(batches):
            if step >= steps:
                break
            if cfg.train.time_budget_s > 0 and time.time() - started > cfg.train.time_budget_s and step > 0:
                out_of_time = True
                break
            x, y = x.to(info.device), y.to(info.device)
            with autocast(info.device, cfg.train.precision):
                pred = ddp_model(x)[..., out_slice]
            loss = loss_fn(pred.float(), y)
            optimizer.zero_grad(set_to_none=True)
            grad_scaler.scale(loss).backward()
            grad_scaler.step(optimizer)
            grad_scaler.update()
            train_sq += float(loss.detach()) * y.numel()
            train_n += y.numel()
        val = evaluate_split(model, data.val, eval_bs, info.device, cfg.data.features, info.rank, info.world_size,
                             precision=cfg.train.precision)
        record = {"epoch": epoch, "lr": lr, "train_mse": train_sq / max(train_n, 1), "val_mse": val["mse"],
                  "val_mae": val["mae"], "epoch_s": time.time() - t0}
        if cfg.train.test_every_epoch:
            test = evaluate_split(model, data.test, eval_bs, info.device, cfg.data.features, info.rank, info.world_size,
                                  precision=cfg.train.precision)
            record.update(test_mse=test["mse"], test_mae=test["mae"])
        history.append(record)
        improved = val["mse"] < best_val
        if improved:
            best_val, best_epoch, bad_epochs = val["mse"], epoch, 0
            best_state = copy.deepcopy(unwrap_model(model).state_dict())
        else:
            bad_epochs += 1
        stopped_early = bad_epochs >= cfg.train.patience or out_of_time
        logger.scalars({k: v for k, v in record.items() if k != "epoch"}, epoch, prefix="epoch/")
        logger.info(
            f"epoch {epoch}: lr {lr:.3g} train {record['train_mse']:.4f} val {val['mse']:.4f}"
            + (f" test {record['test_mse']:.4f}" if "test_mse" in record else "")
            + f" ({record['epoch_s']:.1f}s){' *' if improved else ''}"
        )
        if info.is_main and cfg.train.save_checkpoints:
            extra = {"early_stopping": {"best_val": best_val, "best_epoch": best_epoch, "bad_epochs": bad_epochs},
                     "history": history, "n_vars": data.n_vars, "elapsed_s": earlier_s + time.time() - started}
            if improved:
                save_checkpoint(out_dir / "best.pth", model=model, epoch=epoch, config=cfg, extra=extra)
            save_checkpoint(out_dir / "last.pth", model=model, optimizer=optimizer, scaler=scaler_state, epoch=epoch,
                            config=cfg, extra=extra)
        if out_of_time:
            logger.info(f"time budget of {cfg.train.time_budget_s:.0f}s spent: stopping after epoch {epoch}")
        elif stopped_early:
            logger.info(f"early stopping: no validation improvement for {cfg.train.patience} epochs")

    if best_state is not None:
        unwrap_model(model).load_state_dict(best_state)
    test = evaluate_split(model, data.test, eval_bs, info.device, cfg.data.features, info.rank, info.world_size,
                          precision=cfg.train.precision)
    result = TrainResult(
        dataset=cfg.data.dataset, pred_len=cfg.data.pred_len, seed=cfg.train.seed, test=test, best_val_mse=best_val,
        best_epoch=best_epoch, epochs_run=len(history), params=n_params, wall_s=earlier_s + time.time() - started,
        repeat_last=repeat_last_metrics(data.test, cfg.data.features), history=history, output_dir=str(out_dir),
    )
    logger.info(
        f"test (best epoch {best_epoch}): mse {test['mse']:.4f} mae {test['mae']:.4f} on {test['count'] // max(1, data.n_vars if cfg.data.features != 'MS' else 1) // cfg.data.pred_len} windows; "
        f"repeat-last mse {result.repeat_last['mse']:.4f} mae {result.repeat_last['mae']:.4f}; {result.wall_s:.0f}s"
    )
    if info.is_main:
        write_json(out_dir / "results.json", {**result.to_dict(), "config": config_to_dict(cfg)})
    logger.close()
    return result
