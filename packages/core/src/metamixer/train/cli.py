"""The one command-line shape shared by every app's console scripts.

* ``ffnet-<app>-train CONFIG [key.sub=value ...] [--resume last.pth]`` (:func:`build_train_parser`): a YAML
  recipe (a path, or the name of one of the app's shipped recipes) plus dotted overrides, parsed into the app's
  config dataclass by :mod:`metamixer.train.config`.
* ``ffnet-<app>-eval --checkpoint CKPT [--output results.json] [key.sub=value ...]`` (:func:`build_eval_parser`).
* every command takes ``--debug`` (a failure shows its full traceback instead of the one-line message).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from metamixer.train.config import load_config
from metamixer.train.errors import FFNetError

__all__ = ["OverrideParser", "build_parser", "build_train_parser", "build_eval_parser", "resolve_recipe",
           "config_from_args"]

T = TypeVar("T")

_EPILOG = (
    "overrides: dotted keys with YAML values (null = off), e.g.  optim.lr=3e-4  run.precision=bf16  "
    "run.output_dir=runs/try1  run.max_steps=null"
)


_OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.\w+)*=")


class OverrideParser(argparse.ArgumentParser):
    """An ArgumentParser that takes every ``key.sub=value`` token as an override, wherever it stands.

    Why: plain argparse gives a ``nargs="+"`` option every positional that follows it, so ``--seeds 2021
    train.lr=1e-3`` would read the override as a seed. Tokens of the override shape (a dotted name, then ``=``) are
    lifted out before parsing, in order, into ``args.overrides``. An option whose value itself looks like that takes
    the ``--option=value`` form.
    """

    def error(self, message: str) -> NoReturn:
        """One line on stderr (``error: <prog>: ...``), exit 2: the rule every FFNet CLI follows, also for what
        argparse itself rejects (it would print the whole usage block first)."""
        sys.stderr.write(f"error: {self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):  # noqa: ANN201
        tokens = list(sys.argv[1:] if args is None else args)
        lifted = [t for t in tokens if _OVERRIDE.match(t)]
        if lifted and not getattr(self, "accepts_overrides", False):
            self.error(f"unrecognized arguments: {' '.join(lifted)} (this command takes no key=value settings)")
        parsed, extra = super().parse_known_args([t for t in tokens if not _OVERRIDE.match(t)], namespace)
        parsed.overrides = lifted + list(getattr(parsed, "overrides", None) or [])
        return parsed, extra


def _bounded_number(kind: type, low: float, inclusive: bool) -> Callable[[str], Any]:
    relation = ">=" if inclusive else ">"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'} {relation} "
                                             f"{low:g}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"expected a {'' if kind is int else 'finite '}value {relation} {low:g}, "
                                             f"got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} {relation} {low:g}"
    return parse


#: argparse ``type=`` callables for range-checked options (the message names the option through argparse)
positive_int = _bounded_number(int, 1, True)
non_negative_int = _bounded_number(int, 0, True)
positive_float = _bounded_number(float, 0, False)


def build_parser(prog: str, description: str = "", config: bool = True) -> OverrideParser:
    """Return a parser with ``--config PATH`` (unless ``config=False``) and positional ``overrides`` (``key.sub=value``).

    Overrides are positional (not ``--key value``) so they compose with any config schema without the parser
    knowing it; :func:`config_from_args` validates them against the dataclass. They may stand anywhere on the
    command line (see :class:`OverrideParser`).
    """
    parser = _bare_parser(prog, description)
    if config:
        parser.add_argument("--config", "-c", metavar="PATH", default=None,
                            help="YAML recipe; omitted keys keep their defaults")
    return _add_overrides(parser)


def _add_overrides(parser: OverrideParser,
                   what: str = "config overrides applied after the recipe") -> OverrideParser:
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help=f"{what} (values parsed as YAML)")
    parser.accepts_overrides = True
    return parser


def _bare_parser(prog: str, description: str) -> OverrideParser:
    parser = OverrideParser(prog=prog, description=description, epilog=_EPILOG)
    parser.add_argument("--debug", action="store_true", help="on failure show the full traceback")
    return parser


def build_train_parser(prog: str, description: str = "") -> OverrideParser:
    """``PROG CONFIG [key.sub=value ...] [--resume PATH] [--debug]``; CONFIG may be omitted (defaults)."""
    parser = _bare_parser(prog, description)
    parser.add_argument("config", nargs="?", metavar="CONFIG", default=None,
                        help="YAML recipe: a path, or the name of a shipped recipe (see the app's recipes/)")
    parser.add_argument("--resume", metavar="PATH", default=None,
                        help="continue a run exactly from its last.pth (same config, same results)")
    return _add_overrides(parser)


def build_eval_parser(prog: str, description: str = "", checkpoint_required: bool = True,
                      overrides: bool = True, output: str = "file", output_required: bool = False) -> OverrideParser:
    """``PROG --checkpoint CKPT [--output FILE] [key.sub=value ...] [--debug]``; ``overrides=False`` for an eval
    whose every setting is a flag (no ``key=value`` positional). ``output="folder"``: commands that write many
    files (upscaled images, samples) take ``--output DIR``, ``output_required`` makes it mandatory."""
    if output not in ("file", "folder"):
        raise ValueError(f"output must be 'file' or 'folder', got {output!r}")
    parser = _bare_parser(prog, description)
    parser.add_argument("--checkpoint", metavar="CKPT", required=checkpoint_required, default=None,
                        help="a checkpoint of ours (best.pth / last.pth) or an official weights file")
    if output == "file":
        parser.add_argument("--output", metavar="FILE", default=None, required=output_required,
                            help="results.json to write (metrics, data, checkpoint, protocol, versions, wall time)")
    else:
        parser.add_argument("--output", metavar="DIR", default=None, required=output_required,
                            help="folder for the output files (created when the first one is written)")
    return _add_overrides(parser, "settings of the checkpoint's config to change for this evaluation") if overrides else parser


def resolve_recipe(config: str | None, recipes_dir: Path | None) -> Path | None:
    """A recipe argument as a path: as given (relative to the working directory), else ``recipes_dir/NAME`` or
    ``recipes_dir/NAME.yaml``; an FFNetError listing the shipped recipes when neither exists."""
    if config is None:
        return None
    path = Path(config).expanduser()
    if path.is_file():
        return path
    if recipes_dir is not None:
        for candidate in (recipes_dir / path.name, recipes_dir / f"{path.name}.yaml", recipes_dir / path):
            if candidate.is_file():
                return candidate
    shipped = sorted(p.stem for p in recipes_dir.glob("*.yaml")) if recipes_dir is not None and recipes_dir.is_dir() else []
    hint = f"; shipped recipes: {', '.join(shipped)}" if shipped else ""
    raise FFNetError(f"config file not found: {config}{hint}")


def config_from_args(cls: type[T], args: argparse.Namespace, recipes_dir: Path | None = None) -> T:
    """Build config ``cls`` from parsed ``args`` (``args.config`` + ``args.overrides``), raising ConfigError;
    a recipe name is looked up in ``recipes_dir`` (:func:`resolve_recipe`)."""
    recipe = resolve_recipe(getattr(args, "config", None), recipes_dir)
    return load_config(cls, recipe, getattr(args, "overrides", None) or ())
