"""The authors' per-dataset, per-horizon hyper-parameters (their scripts; fact sheet §3.3) as data.

The YAML files in ``apps/timeseries/recipes/`` are generated from this table (``python -m
ffnet_timeseries.recipes --write DIR``) and a test checks they agree. Exchange has no official script; its entry
is ours (marked ``official=False``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ffnet_timeseries.config import DataConfig, ModelConfig, TrainConfig, TSConfig
from metamixer.train.config import save_config

__all__ = ["HORIZONS", "RECIPES", "Recipe", "recipe_config"]

HORIZONS = (96, 192, 336, 720)


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

    if dataset not in RECIPES:
        raise FFNetError(f"no recipe for dataset {dataset!r}; known: {', '.join(RECIPES)}")
    if pred_len not in HORIZONS:
        raise FFNetError(f"no recipe for pred_len={pred_len}; recipes exist for {HORIZONS}")
    r, i = RECIPES[dataset], HORIZONS.index(pred_len)
    return TSConfig(
        data=DataConfig(dataset=dataset, seq_len=96, pred_len=pred_len),
        model=ModelConfig(ffn_ratio=r.ffn_ratio, dropout=r.dropout[i], head_dropout=r.head_dropout[i]),
        train=TrainConfig(batch_size=r.batch_size[i], patience=r.patience[i], lr=r.lr, seed=seed, epochs=100),
        output_dir=output_dir or f"runs/timeseries/{dataset}_{pred_len}",
    )


def write_recipes(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset in RECIPES:
        for pred_len in HORIZONS:
            path = folder / f"{dataset}_{pred_len}.yaml"
            save_config(recipe_config(dataset, pred_len), path)
            written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="write the per-dataset/horizon YAML recipes")
    parser.add_argument("--write", type=Path, required=True)
    for p in write_recipes(parser.parse_args().write):
        print(p)
