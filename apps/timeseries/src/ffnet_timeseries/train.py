"""``ffnet-ts-train --config recipes/ETTh1_96.yaml [key=value ...] [--resume runs/x/last.pth]``

Also: ``torchrun --nproc_per_node N -m ffnet_timeseries.train ...`` (DDP through ``metamixer.train.distributed``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ffnet_timeseries.config import TSConfig
from ffnet_timeseries.engine import train
from metamixer.train.cli import build_parser, config_from_args
from metamixer.train.distributed import cleanup_distributed
from metamixer.train.errors import run_cli

__all__ = ["main", "cli"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("ffnet-ts-train", "Train FFNet-TS on a forecasting CSV (TSLib protocol).")
    parser.add_argument("--resume", metavar="PATH", default=None, help="continue exactly from a last.pth")
    args = parser.parse_args(argv)
    cfg = config_from_args(TSConfig, args)
    try:
        train(cfg, resume=args.resume)
    finally:
        cleanup_distributed()
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
