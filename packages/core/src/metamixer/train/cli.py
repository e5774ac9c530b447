"""The one command-line shape shared by every app's console scripts.

``ffnet-<app>-train --config recipes/x.yaml train.lr=3e-4 model.depths=[2,2,6,2]``: a YAML recipe plus dotted
overrides, parsed into the app's config dataclass by :mod:`metamixer.train.config`. Apps add their own flags
(``--resume``, ``--checkpoint``) to the parser returned by :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import TypeVar

from metamixer.train.config import load_config

__all__ = ["OverrideParser", "build_parser", "config_from_args"]

T = TypeVar("T")

_EPILOG = (
    "overrides: dotted keys with YAML values, e.g.  train.lr=3e-4  model.depths=[2,2,6,2]  "
    "train.amp=bf16  model.drop_path=null"
)


_OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.\w+)*=")


class OverrideParser(argparse.ArgumentParser):
    """An ArgumentParser that takes every ``key.sub=value`` token as an override, wherever it stands.

    Why: plain argparse gives a ``nargs="+"`` option every positional that follows it, so ``--seeds 2021
    train.lr=1e-3`` would read the override as a seed. Tokens of the override shape (a dotted name, then ``=``) are
    lifted out before parsing, in order, into ``args.overrides``. An option whose value itself looks like that takes
    the ``--option=value`` form.
    """

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):  # noqa: ANN201
        tokens = list(sys.argv[1:] if args is None else args)
        lifted = [t for t in tokens if _OVERRIDE.match(t)]
        parsed, extra = super().parse_known_args([t for t in tokens if not _OVERRIDE.match(t)], namespace)
        parsed.overrides = lifted + list(getattr(parsed, "overrides", None) or [])
        return parsed, extra


def build_parser(prog: str, description: str = "", config: bool = True) -> OverrideParser:
    """Return a parser with ``--config PATH`` (unless ``config=False``) and positional ``overrides`` (``key.sub=value``).

    Overrides are positional (not ``--key value``) so they compose with any config schema without the parser
    knowing it; :func:`config_from_args` validates them against the dataclass. They may stand anywhere on the
    command line (see :class:`OverrideParser`).
    """
    parser = OverrideParser(prog=prog, description=description, epilog=_EPILOG)
    if config:
        parser.add_argument("--config", "-c", metavar="PATH", default=None,
                            help="YAML recipe; omitted keys keep their defaults")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides applied after the recipe (values parsed as YAML)")
    return parser


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build config ``cls`` from parsed ``args`` (``args.config`` + ``args.overrides``), raising ConfigError."""
    return load_config(cls, getattr(args, "config", None), getattr(args, "overrides", None) or ())
