"""An argparse type the classification console scripts need beside core's range-checked ones
(``metamixer.train.cli.positive_int`` and friends): a crop fraction in (0, 1]."""
from __future__ import annotations

import argparse
import math

__all__ = ["fraction"]


def fraction(text: str) -> float:
    """``--crop-pct``: a number in (0, 1] (argparse names the option in its one-line error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value
