"""Range checks of the classification console scripts' options that have no argparse type (an unset ``None``
allowed, a crop fraction in (0, 1]); one-line argparse errors and output-path checks come from core
(``metamixer.train.cli``, ``metamixer.train.outputs``)."""
from __future__ import annotations

import math

from metamixer.train.errors import FFNetError

__all__ = ["check_int", "check_fraction"]




def check_int(flag: str, value: int | None, least: int) -> None:
    """``value`` (None: unset) must be an integer >= ``least``."""
    if value is not None and value < least:
        raise FFNetError(f"{flag} must be an integer >= {least}, got {value}")


def check_fraction(flag: str, value: float | None) -> None:
    """``value`` (None: unset) must lie in (0, 1] (a crop fraction)."""
    if value is not None and not (math.isfinite(value) and 0 < value <= 1):
        raise FFNetError(f"{flag} must be a number in (0, 1], got {value}")



