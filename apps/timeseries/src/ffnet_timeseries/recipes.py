"""The authors' per-dataset, per-horizon hyper-parameters (their scripts; fact sheet §3.3) as data.

The YAML files in ``apps/timeseries/recipes/`` are generated from this table (``python -m
ffnet_timeseries.recipes --write DIR``) and a test checks they agree. Exchange has no official script; its entry
is ours (marked ``official=False``).

ILI (``ILI_24`` ... ``ILI_60``) is not in the paper: its recipes take TSLib's ILI setting (seq_len 36, horizons
24/36/48/60, batch 32, lr 1e-4, 10 epochs, patience 3, lr halved every epoch) with ETTh1's model settings (the
same 7 variables); see :func:`ili_config`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ffnet_timeseries.config import (
    DataConfig,
    ModelConfig,
    TSConfig,
    TSOptimConfig,
    TSRunConfig,
    TSTrainConfig,
)
from metamixer.train.config import save_config

__all__ = ["HORIZONS", "ILI_HORIZONS", "ILI_LABEL_LEN", "ILI_SEQ_LEN", "RECIPES", "Recipe", "recipe_config",
           "ili_config", "cpu_quickstart_config"]

HORIZONS = (96, 192, 336, 720)
#: TSLib's ILI scripts (scripts/long_term_forecast/ILI_script/*.sh): weekly national_illness.csv, 36 weeks of history
ILI_HORIZONS = (24, 36, 48, 60)
ILI_SEQ_LEN = 36
#: TSLib's --label_len for ILI: the decoder's start-token length of encoder-decoder models (Informer, Autoformer).
#: FFNet-TS, like the authors' model, has no decoder, so it has no such input; kept here to say so.
ILI_LABEL_LEN = 18


@dataclass(frozen=True)
class Recipe:
    ffn_ratio: int
    dropout: tuple[float, float, float, float]
    head_dropout: tuple[float, float, float, float]
    batch_size: tuple[int, int, int, int]
    patience: tuple[int, int, int, int]
    lr: float = 1e-4
    official: bool = True


def _four(v):  # noqa: ANN001, ANN202 - tiny helper
    return (v, v, v, v)


RECIPES: dict[str, Recipe] = {
    "ETTh1": Recipe(2, _four(0.7), _four(0.0), _four(512), _four(20)),
    "ETTh2": Recipe(8, (0.8, 0.8, 0.8, 0.85), (0.0, 0.0, 0.0, 0.5), _four(512), _four(5)),
    "ETTm1": Recipe(12, _four(0.6), (0.0, 0.1, 0.1, 0.1), _four(2048), _four(20)),
    "ETTm2": Recipe(12, (0.6, 0.6, 0.7, 0.6), (0.2, 0.2, 0.2, 0.1), _four(2048), _four(20)),
    "Weather": Recipe(12, _four(0.6), _four(0.0), (256, 256, 512, 512), (5, 5, 10, 10)),
    "ECL": Recipe(12, _four(0.9), _four(0.0), _four(128), _four(2)),
    "Traffic": Recipe(12, _four(0.9), _four(0.0), _four(128), _four(5), lr=5e-5),
    # no official script; the paper (App. F.4) only says expansion ratio 1 for Exchange. Dropout/batch/patience ours.
    "Exchange": Recipe(1, _four(0.8), _four(0.0), _four(256), _four(5), official=False),
}


def recipe_config(dataset: str, pred_len: int, seed: int = 2021, output_dir: str | None = None) -> TSConfig:
    """The full run config of the authors' script for ``dataset`` at horizon ``pred_len``."""
    from metamixer.train.errors import FFNetError

    if dataset == "ILI":
        return ili_config(pred_len, seed, output_dir)
    if dataset not in RECIPES:
        raise FFNetError(f"no recipe for dataset {dataset!r}; known: {', '.join(RECIPES)}, ILI")
    if pred_len not in HORIZONS:
        raise FFNetError(f"no recipe for pred_len={pred_len}; recipes exist for {HORIZONS}")
    r, i = RECIPES[dataset], HORIZONS.index(pred_len)
    return TSConfig(
        run=TSRunConfig(output_dir=output_dir or f"runs/timeseries/{dataset}_{pred_len}", seed=seed),
        data=DataConfig(dataset=dataset, seq_len=96, pred_len=pred_len),
        model=ModelConfig(ffn_ratio=r.ffn_ratio, dropout=r.dropout[i], head_dropout=r.head_dropout[i]),
        optim=TSOptimConfig(name="adam", lr=r.lr, schedule="official_type3"),
        train=TSTrainConfig(epochs=100, batch_size=r.batch_size[i], patience=r.patience[i]),
    )


def ili_config(pred_len: int, seed: int = 2021, output_dir: str | None = None) -> TSConfig:
    """TSLib's ILI run at horizon ``pred_len`` (24/36/48/60), for FFNet-TS; not a setting of the paper.

    Training follows TSLib's ILI scripts, which leave these at ``run.py``'s defaults: batch 32, lr 1e-4, 10 epochs,
    early stopping after 3 validations without improvement, lr halved every epoch (``lradj type1`` = this app's
    ``type1``); 617 training windows at horizon 24, so 20 steps an epoch. The model is ETTh1's (7 variables too:
    ffn_ratio 2, dropout 0.7, no head dropout); nobody has tuned it for ILI. The data is TSLib's
    ``national_illness.csv`` (weekly, 966 rows, target ``OT``), which is not shipped: ``data.dataset: ILI`` reads
    ``$FFNET_DATA/ts/illness/national_illness.csv``, or give ``data.path=...``."""
    from metamixer.train.errors import FFNetError

    if pred_len not in ILI_HORIZONS:
        raise FFNetError(f"no ILI recipe for pred_len={pred_len}; ILI recipes exist for {ILI_HORIZONS}")
    etth1 = RECIPES["ETTh1"]
    return TSConfig(
        run=TSRunConfig(output_dir=output_dir or f"runs/timeseries/ILI_{pred_len}", seed=seed),
        data=DataConfig(dataset="ILI", seq_len=ILI_SEQ_LEN, pred_len=pred_len),
        model=ModelConfig(ffn_ratio=etth1.ffn_ratio, dropout=etth1.dropout[0], head_dropout=etth1.head_dropout[0]),
        optim=TSOptimConfig(name="adam", lr=1e-4, schedule="type1"),
        train=TSTrainConfig(epochs=10, batch_size=32, patience=3),
    )


def cpu_quickstart_config(output_dir: str = "runs/timeseries/cpu_ETTh1_96") -> TSConfig:
    """The CPU-sized smoke run of ``ffnet-ts-quickstart`` (``recipes/cpu_ETTh1_96.yaml`` holds the same values):
    the real ETTh1-96 model and protocol, but 45 steps of batch 128 at lr 1e-3, validating every 15 steps (each
    a short "epoch" before this engine), and a 100 s training limit."""
    cfg = recipe_config("ETTh1", 96, seed=2021, output_dir=output_dir)
    cfg.run.threads, cfg.run.max_time = 2, 100.0
    cfg.optim.lr, cfg.optim.schedule = 1e-3, "constant"
    cfg.train = TSTrainConfig(epochs=None, steps=45, val_every=15, save_every=15, batch_size=128)
    cfg.eval.batch_size = 512
    return cfg


def write_recipes(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset in RECIPES:
        for pred_len in HORIZONS:
            path = folder / f"{dataset}_{pred_len}.yaml"
            save_config(recipe_config(dataset, pred_len), path)
            written.append(path)
    for pred_len in ILI_HORIZONS:
        path = folder / f"ILI_{pred_len}.yaml"
        save_config(ili_config(pred_len), path)
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="write the per-dataset/horizon YAML recipes")
    parser.add_argument("--write", type=Path, required=True)
    for p in write_recipes(parser.parse_args().write):
        print(p)
