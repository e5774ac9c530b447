"""``ffnet-ts-eval --checkpoint runs/x/best.pth [--output FILE] [--split test] [--unscaled] [--save-predictions]
[key=value ...]``

Evaluates a checkpoint on a split (default: test) -> ``results.json`` (the shared shape: MSE/MAE/RMSE/MAPE/MSPE/RSE
in the scaled space used by the literature under ``metrics``, optionally also unscaled and labelled so) and, beside
it, ``forecast.png`` (a few windows of history, forecast and ground truth for the target variable). Overrides
(``data.path=my.csv``) change the checkpoint's own config.

``--save-predictions`` also writes, beside ``results.json``, the arrays TSLib's test writes: ``pred.npy`` and
``true.npy`` (float32 ``[windows, pred_len, vars]``, every window of the split in order, scaled space; ``MS``: the
target only, vars = 1), and the same in data units as ``pred_unscaled.npy`` / ``true_unscaled.npy`` (when the run
scaled its data). Their MSE/MAE are ``metrics`` / ``metrics_unscaled``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffnet_timeseries.builders import build_data, build_model
from ffnet_timeseries.config import TSConfig, upgrade_config
from ffnet_timeseries.engine import evaluate_split, forecast_arrays, predict, repeat_last_metrics
from ffnet_timeseries.weights import load_official_weights
from metamixer.train.atomic import atomic_write
from metamixer.train.checkpoint import load_checkpoint, load_state_dict_checked
from metamixer.train.cli import build_eval_parser, non_negative_int
from metamixer.train.config import apply_overrides, config_from_dict, config_to_dict, load_config
from metamixer.train.device import resolve_device
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_results

__all__ = ["main", "cli", "evaluate_checkpoint", "plot_forecasts", "save_predictions"]

#: the files ``--save-predictions`` writes beside results.json (TSLib's names for the scaled pair)
PREDICTION_FILES = ("pred.npy", "true.npy", "pred_unscaled.npy", "true_unscaled.npy")


def plot_forecasts(history: torch.Tensor, forecast: torch.Tensor, truth: torch.Tensor, column: int, name: str,
                   path: Path) -> Path | None:
    """Save a PNG with one panel per window; returns None if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = history.shape[0]
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 * n), squeeze=False)
    seq_len, pred_len = history.shape[1], forecast.shape[1]
    for i in range(n):
        ax = axes[i][0]
        ax.plot(range(seq_len), history[i, :, column], color="0.4", label="history")
        ax.plot(range(seq_len, seq_len + pred_len), truth[i, :, min(column, truth.shape[-1] - 1)], color="k", label="ground truth")
        ax.plot(range(seq_len, seq_len + pred_len), forecast[i, :, column], color="tab:red", label="FFNet forecast")
        ax.axvline(seq_len - 0.5, color="0.8", lw=1)
        if i == 0:
            ax.set_title(f"{name} (scaled)")
            ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_predictions(folder: Path, pred: np.ndarray, true: np.ndarray, mean: np.ndarray | None,
                     std: np.ndarray | None) -> dict[str, str]:
    """Write ``pred.npy`` / ``true.npy`` (scaled) and, with a scaler's ``mean`` / ``std`` (of the output columns),
    ``pred_unscaled.npy`` / ``true_unscaled.npy`` into ``folder``, atomically; returns name -> path. Each unscaled
    array is made only when the one before it is written (Traffic-720's test split is 6.9 GB per array)."""
    written: dict[str, str] = {}

    def save(name: str, array: np.ndarray) -> None:
        written[name] = str(atomic_write(folder / name, lambda handle: np.save(handle, array)))

    save("pred.npy", pred)
    save("true.npy", true)
    if mean is not None and std is not None:
        mean32, std32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)  # as evaluate_split's unscaled metrics
        save("pred_unscaled.npy", pred * std32 + mean32)
        save("true_unscaled.npy", true * std32 + mean32)
    return written


def evaluate_checkpoint(checkpoint: str | Path | None, overrides: Sequence[str] = (), split: str = "test", unscaled: bool = False,
                        output: Path | None = None, windows: int = 4, device: str = "auto",
                        config: str | Path | None = None, weights: str | Path | None = None,
                        save_arrays: bool = False) -> dict[str, Any]:
    """Evaluate our checkpoint (``checkpoint``), or foreign weights (``weights``: e.g. the authors' FFNet-TS
    state_dict, whose never-used modules are dropped) built from a recipe (``config``). With ``output`` (a
    ``results.json`` path) the results and ``forecast.png`` are written there; ``save_arrays`` adds the
    prediction arrays (:func:`save_predictions`) beside it."""
    started = time.time()
    if (checkpoint is None) == (weights is None):
        raise FFNetError("give either --checkpoint (ours) or --weights with --config (e.g. an official state_dict)")
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        if not ckpt.get("config"):
            raise FFNetError(f"{checkpoint}: checkpoint has no config; cannot rebuild the model and data")
        cfg_dict = upgrade_config(ckpt["config"])  # checkpoints of the old engine carry the old config shape
    else:
        if config is None:
            raise FFNetError("--weights needs --config RECIPE.yaml describing the model and data it was trained for")
        ckpt = {"extra": {}, "epoch": None}
        cfg_dict = config_to_dict(load_config(TSConfig, config))
        checkpoint = weights
    if overrides:
        cfg_dict = apply_overrides(cfg_dict, list(overrides), cls=TSConfig, source="command line")
    cfg = config_from_dict(TSConfig, cfg_dict, source=str(checkpoint))
    if split not in ("train", "val", "test"):
        raise FFNetError(f"--split: expected train, val or test, got {split!r}")
    data = build_data(cfg.data)
    extra = ckpt.get("extra", {})
    trained_vars = int(extra.get("task", {}).get("n_vars", extra.get("n_vars", data.n_vars)))
    if trained_vars != data.n_vars:
        raise FFNetError(
            f"{checkpoint}: model was trained for {trained_vars} variables but {data.path} gives {data.n_vars} "
            f"(features={cfg.data.features!r}); evaluate it on data with the same columns"
        )
    dev = resolve_device(device, key="--device")
    model = build_model(cfg.model, data.n_vars, cfg.data.seq_len, cfg.data.pred_len)
    if weights is not None:
        dropped = load_official_weights(model, weights)
    else:
        load_state_dict_checked(model, ckpt["model"], str(checkpoint))
        dropped = []
    model = model.to(dev).eval()
    dataset = getattr(data, split)
    bs = cfg.eval.batch_size or cfg.train.batch_size
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "dataset": cfg.data.dataset, "data_path": str(data.path), "split": split,
        "pred_len": cfg.data.pred_len, "seq_len": cfg.data.seq_len, "features": cfg.data.features,
        "windows": len(dataset), "epoch": ckpt.get("epoch"), "ignored_unused_keys": len(dropped),
        "metrics_scaled": evaluate_split(model, dataset, bs, dev, cfg.data.features, precision=cfg.run.precision),
        "repeat_last_scaled": repeat_last_metrics(dataset, cfg.data.features),
    }
    if unscaled:
        if data.scaler is None:
            raise FFNetError("--unscaled: this run used data.scale=false, its metrics are already in data units")
        result["metrics_unscaled"] = evaluate_split(model, dataset, bs, dev, cfg.data.features, scaler=data.scaler,
                                                    precision=cfg.run.precision)
    if output is not None:
        png = None
        if windows > 0:
            picks = torch.linspace(0, len(dataset) - 1, steps=min(windows, len(dataset))).long().tolist()
            hist, fc, truth = predict(model, dataset, picks, dev)
            png = plot_forecasts(hist, fc, truth, data.n_vars - 1,
                                 f"{cfg.data.dataset} {split} target {data.columns[-1]!r}", output.parent / "forecast.png")
        result["plot"] = str(png) if png else None
        if save_arrays:
            pred, true = forecast_arrays(model, dataset, bs, dev, cfg.data.features, precision=cfg.run.precision)
            cols = slice(-1, None) if cfg.data.features == "MS" else slice(None)
            scaler = data.scaler
            result["predictions"] = save_predictions(
                output.parent, pred, true, scaler.mean[cols] if scaler is not None else None,
                scaler.std[cols] if scaler is not None else None)
            result["predictions_shape"] = list(pred.shape)
        write_results(
            output, metrics=result["metrics_scaled"],
            data={"dataset": cfg.data.dataset, "path": str(data.path), "split": split, "windows": len(dataset),
                  "seq_len": cfg.data.seq_len, "pred_len": cfg.data.pred_len, "features": cfg.data.features},
            checkpoint=checkpoint,
            protocol={"space": "scaled (train-split standard scaler)", "precision": cfg.run.precision,
                      "weights": "official state_dict" if weights is not None else "ours"},
            wall_s=round(time.time() - started, 2), epoch=result["epoch"], repeat_last=result["repeat_last_scaled"],
            metrics_unscaled=result.get("metrics_unscaled"), ignored_unused_keys=len(dropped), plot=result["plot"],
            predictions=result.get("predictions"), predictions_shape=result.get("predictions_shape"),
            config=config_to_dict(cfg),
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_eval_parser("ffnet-ts-eval", "Evaluate an FFNet-TS checkpoint (results.json + forecast plot).",
                               checkpoint_required=False)
    parser.add_argument("--weights", default=None, help="instead of --checkpoint: a plain/official FFNet-TS "
                        "state_dict (needs --config)")
    parser.add_argument("--config", default=None, help="recipe YAML for --weights, e.g. recipes/ETTh1_96.yaml")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--unscaled", action="store_true", help="also report metrics in data units (labelled metrics_unscaled)")
    parser.add_argument("--windows", type=non_negative_int, default=4, help="forecast windows to plot (0: no plot)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps")
    parser.add_argument("--save-predictions", action="store_true", help="also write pred.npy / true.npy (scaled, "
                        "[windows, pred_len, vars], as TSLib) and pred_unscaled.npy / true_unscaled.npy beside the output")
    args = parser.parse_args(argv)
    source = args.checkpoint or args.weights
    if source is None:
        raise FFNetError("give --checkpoint PATH (or --weights PATH --config RECIPE.yaml)")
    output = Path(args.output) if args.output else Path(source).parent / f"eval_{args.split}" / "results.json"
    result = evaluate_checkpoint(args.checkpoint, args.overrides, args.split, args.unscaled, output, args.windows,
                                 args.device, config=args.config, weights=args.weights,
                                 save_arrays=args.save_predictions)
    m = result["metrics_scaled"]
    print(f"{result['dataset']} {args.split} ({result['windows']} windows): mse {m['mse']:.4f} mae {m['mae']:.4f} "
          f"(repeat-last mse {result['repeat_last_scaled']['mse']:.4f}); wrote {output}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
