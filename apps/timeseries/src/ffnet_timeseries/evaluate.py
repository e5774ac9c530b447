"""``ffnet-ts-eval --checkpoint runs/x/best.pth [--output DIR] [--unscaled] [data.path=... overrides]``

Evaluates a checkpoint on a split (default: test) -> ``eval.json`` (MSE/MAE/RMSE/MAPE/MSPE/RSE in the scaled
space used by the literature, optionally also unscaled and labelled so) and ``forecast.png`` (a few windows of
history, forecast and ground truth for the target variable).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ffnet_timeseries.builders import build_data, build_model
from ffnet_timeseries.config import TSConfig
from ffnet_timeseries.engine import evaluate_split, pick_device, predict, repeat_last_metrics
from ffnet_timeseries.weights import load_official_weights
from metamixer.train.checkpoint import load_checkpoint, load_state_dict_checked
from metamixer.train.config import apply_overrides, config_from_dict, config_to_dict, load_config
from metamixer.train.errors import FFNetError, run_cli

__all__ = ["main", "cli", "evaluate_checkpoint", "plot_forecasts"]


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


def evaluate_checkpoint(checkpoint: str | Path | None, overrides: Sequence[str] = (), split: str = "test", unscaled: bool = False,
                        output: Path | None = None, windows: int = 4, device: str = "auto",
                        config: str | Path | None = None, weights: str | Path | None = None) -> dict[str, Any]:
    """Evaluate our checkpoint (``checkpoint``), or foreign weights (``weights``: e.g. the authors' FFNet-TS
    state_dict, whose never-used modules are dropped) built from a recipe (``config``)."""
    if (checkpoint is None) == (weights is None):
        raise FFNetError("give either --checkpoint (ours) or --weights with --config (e.g. an official state_dict)")
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        if not ckpt.get("config"):
            raise FFNetError(f"{checkpoint}: checkpoint has no config; cannot rebuild the model and data")
        cfg_dict = ckpt["config"]
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
    trained_vars = int(ckpt.get("extra", {}).get("n_vars", data.n_vars))
    if trained_vars != data.n_vars:
        raise FFNetError(
            f"{checkpoint}: model was trained for {trained_vars} variables but {data.path} gives {data.n_vars} "
            f"(features={cfg.data.features!r}); evaluate it on data with the same columns"
        )
    dev = pick_device(device)
    model = build_model(cfg.model, data.n_vars, cfg.data.seq_len, cfg.data.pred_len)
    if weights is not None:
        dropped = load_official_weights(model, weights)
    else:
        load_state_dict_checked(model, ckpt["model"], str(checkpoint))
        dropped = []
    model = model.to(dev).eval()
    dataset = getattr(data, split)
    bs = cfg.train.eval_batch_size or cfg.train.batch_size
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "dataset": cfg.data.dataset, "data_path": str(data.path), "split": split,
        "pred_len": cfg.data.pred_len, "seq_len": cfg.data.seq_len, "features": cfg.data.features,
        "windows": len(dataset), "epoch": ckpt.get("epoch"), "ignored_unused_keys": len(dropped),
        "metrics_scaled": evaluate_split(model, dataset, bs, dev, cfg.data.features, precision=cfg.train.precision),
        "repeat_last_scaled": repeat_last_metrics(dataset, cfg.data.features),
    }
    if unscaled:
        if data.scaler is None:
            raise FFNetError("--unscaled: this run used data.scale=false, its metrics are already in data units")
        result["metrics_unscaled"] = evaluate_split(model, dataset, bs, dev, cfg.data.features, scaler=data.scaler,
                                                    precision=cfg.train.precision)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        picks = torch.linspace(0, len(dataset) - 1, steps=min(windows, len(dataset))).long().tolist()
        hist, fc, truth = predict(model, dataset, picks, dev)
        png = plot_forecasts(hist, fc, truth, data.n_vars - 1, f"{cfg.data.dataset} {split} target {data.columns[-1]!r}",
                             output / "forecast.png") if windows > 0 else None
        result["plot"] = str(png) if png else None
        result["config"] = config_to_dict(cfg)
        (output / "eval.json").write_text(json.dumps(result, indent=2, default=lambda v: None))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ffnet-ts-eval", description="Evaluate an FFNet-TS checkpoint (MSE/MAE JSON + plot).")
    parser.add_argument("--checkpoint", default=None, help="best.pth / last.pth written by ffnet-ts-train")
    parser.add_argument("--weights", default=None, help="a plain/official FFNet-TS state_dict (needs --config)")
    parser.add_argument("--config", default=None, help="recipe YAML for --weights, e.g. recipes/ETTh1_96.yaml")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", default=None, help="folder for eval.json and forecast.png (default: next to the checkpoint)")
    parser.add_argument("--unscaled", action="store_true", help="also report metrics in data units (labelled metrics_unscaled)")
    parser.add_argument("--windows", type=int, default=4, help="forecast windows to plot")
    parser.add_argument("--device", default="auto")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="e.g. data.path=my.csv")
    args = parser.parse_args(argv)
    source = args.checkpoint or args.weights
    if source is None:
        raise FFNetError("give --checkpoint PATH (or --weights PATH --config RECIPE.yaml)")
    output = Path(args.output) if args.output else Path(source).parent / f"eval_{args.split}"
    result = evaluate_checkpoint(args.checkpoint, args.overrides, args.split, args.unscaled, output, args.windows,
                                 args.device, config=args.config, weights=args.weights)
    m = result["metrics_scaled"]
    print(f"{result['dataset']} {args.split} ({result['windows']} windows): mse {m['mse']:.4f} mae {m['mae']:.4f} "
          f"(repeat-last mse {result['repeat_last_scaled']['mse']:.4f}); wrote {output / 'eval.json'}")
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
