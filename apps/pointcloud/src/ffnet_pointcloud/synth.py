"""``ffnet-pc-synth --output DIR [--train N] [--val M] [--seed S] [--density D] [--ply]``: write synthetic rooms.

The scenes use the preprocessed layout (``DIR/{train,val}/<scene>/{coord,color,normal,segment}.npy``), so they
train with ``data.dataset=synthetic data.root=DIR`` (or ``folder``); ``--ply`` also writes coloured PLYs.

Everything is generated into a hidden folder beside DIR and moved in at the end, so an interrupted run leaves no
half dataset; a DIR that already holds a dataset (``train/`` or ``val/``) is refused instead of overwritten.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from metamixer.train.cli import OverrideParser
from metamixer.train.errors import FFNetError, run_cli

from .data.datasets import load_scene
from .data.ply import write_ply
from .data.synthetic import SYNTH_CLASSES, write_synthetic_dataset

__all__ = ["main", "cli"]


def _parser() -> OverrideParser:
    parser = OverrideParser(prog="ffnet-pc-synth", description="Generate labelled synthetic indoor scenes.")
    parser.add_argument("--debug", action="store_true", help="on failure show the full traceback")
    parser.add_argument("--output", required=True, help="dataset folder to create (must not hold train/ or val/)")
    parser.add_argument("--train", type=int, default=16, help="training scenes (>= 1)")
    parser.add_argument("--val", type=int, default=4, help="validation scenes (>= 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--density", type=float, default=400.0, help="points per square metre of surface (> 0)")
    parser.add_argument(
        "--ply", action="store_true", help="also write DIR/ply/<split>_<scene>.ply (true colours + label)"
    )
    return parser


def _check(args: argparse.Namespace) -> Path:
    """Every option before anything is written (the same bounds as data.synthetic_* in the config)."""
    for option, value in (("--train", args.train), ("--val", args.val)):
        if value < 1:
            raise FFNetError(f"{option} must be an integer >= 1 (scenes to generate), got {value}")
    if not math.isfinite(args.density) or args.density <= 0:
        raise FFNetError(f"--density must be a finite number > 0 (points per square metre), got {args.density}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise FFNetError(f"--output {out} is a file; expected a folder for the dataset")
    held = [name for name in ("train", "val", "ply") if (out / name).exists()]
    if held:
        raise FFNetError(f"--output {out} already holds {', '.join(f'{h}/' for h in held)}; "
                         "choose a new folder (nothing is overwritten)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = _check(args)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        write_synthetic_dataset(tmp, args.train, args.val, args.seed, args.density)
        if args.ply:
            for scene_dir in sorted(tmp.glob("*/*/")):
                s = load_scene(scene_dir)
                c = s["color"].astype("uint8")
                write_ply(
                    tmp / "ply" / f"{scene_dir.parent.name}_{scene_dir.name}.ply",
                    s["coord"],
                    red=c[:, 0],
                    green=c[:, 1],
                    blue=c[:, 2],
                    label=s["segment"].astype("int32"),
                )
        if out.exists():  # an existing (checked: dataset-free) folder keeps its other files
            for child in sorted(tmp.iterdir()):
                os.replace(child, out / child.name)
        else:
            os.replace(tmp, out)  # one rename: the dataset appears complete or not at all
    except OSError as exc:
        raise FFNetError(f"could not write {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"wrote {args.train} train + {args.val} val scenes ({len(SYNTH_CLASSES)} classes: "
        f"{', '.join(SYNTH_CLASSES)}) to {out}"
    )
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
