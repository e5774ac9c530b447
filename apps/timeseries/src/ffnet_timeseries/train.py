"""``ffnet-ts-train CONFIG [key=value ...] [--resume runs/x/last.pth]``

CONFIG is a recipe path or the name of a shipped one (``ETTh1_96``, ``cpu_ETTh1_96``, ...: ``apps/timeseries/
recipes/``). Also: ``torchrun --nproc_per_node N -m ffnet_timeseries.train ...`` (DDP through core's engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ffnet_timeseries.config import TSConfig
from ffnet_timeseries.engine import train
from metamixer.train.allocator import keep_freed_memory
from metamixer.train.cli import build_train_parser, config_from_args
from metamixer.train.device import resolve_device
from metamixer.train.distributed import cleanup_distributed
from metamixer.train.errors import run_cli

__all__ = ["RECIPES_DIR", "main", "cli"]

#: the shipped recipes (an editable install: apps/timeseries/recipes); None where they are not installed
RECIPES_DIR: Path | None = next((p for p in [Path(__file__).resolve().parents[2] / "recipes"] if p.is_dir()), None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_train_parser("ffnet-ts-train", "Train FFNet-TS on a forecasting CSV (TSLib protocol).")
    args = parser.parse_args(argv)
    cfg = config_from_args(TSConfig, args, RECIPES_DIR)
    if resolve_device(cfg.run.device).type == "cpu":
        keep_freed_memory()  # ~2x faster CPU steps: no page faults on every step's large activations
    try:
        train(cfg, resume=args.resume)
    finally:
        cleanup_distributed()
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
