"""``ffnet-pc-synth --output DIR [--train N] [--val M] [--seed S] [--density D] [--ply]``: write synthetic rooms.

The scenes use the preprocessed layout (``DIR/{train,val}/<scene>/{coord,color,normal,segment}.npy``), so they
train with ``data.dataset=synthetic data.root=DIR`` (or ``folder``); ``--ply`` also writes coloured PLYs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from metamixer.train.errors import FFNetError, run_cli

from .data.datasets import load_scene
from .data.ply import write_ply
from .data.synthetic import SYNTH_CLASSES, write_synthetic_dataset

__all__ = ["main", "cli"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "ffnet-pc-synth", description="Generate labelled synthetic indoor scenes."
    )
    parser.add_argument("--output", required=True)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--val", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--density", type=float, default=400.0, help="points per square metre of surface")
    parser.add_argument(
        "--ply", action="store_true", help="also write DIR/ply/<split>_<scene>.ply (true colours + label)"
    )
    args = parser.parse_args(argv)
    if args.train < 0 or args.val < 0 or args.density <= 0:
        raise FFNetError("--train/--val must be >= 0 and --density > 0")
    root = write_synthetic_dataset(Path(args.output), args.train, args.val, args.seed, args.density)
    if args.ply:
        for scene_dir in sorted(root.glob("*/*/")):
            s = load_scene(scene_dir)
            c = s["color"].astype("uint8")
            write_ply(
                root / "ply" / f"{scene_dir.parent.name}_{scene_dir.name}.ply",
                s["coord"],
                red=c[:, 0],
                green=c[:, 1],
                blue=c[:, 2],
                label=s["segment"].astype("int32"),
            )
    print(
        f"wrote {args.train} train + {args.val} val scenes ({len(SYNTH_CLASSES)} classes: "
        f"{', '.join(SYNTH_CLASSES)}) to {root}"
    )
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
