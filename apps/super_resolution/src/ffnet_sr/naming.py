"""Output names of ``ffnet-sr-upscale`` and ``ffnet-sr-eval --save-images``: ``<stem><suffix>.<ext>``, the input's
sub-folder kept (``--recursive``), plus the option types both commands share.

One place for the rule so both commands name files the same way (BasicSR's ``suffix``: ``--suffix _x4`` turns
``baby.png`` into ``baby_x4.png``) and refuse the same impossible values up front, before any image is read.
"""

from __future__ import annotations

import argparse
from pathlib import PurePath

from metamixer.train.errors import FFNetError

__all__ = ["check_suffix", "output_name", "jpeg_quality"]


def check_suffix(suffix: str, option: str = "--suffix") -> str:
    """A suffix is part of a file name: no folder separators, no NUL. ``""`` is allowed (``baby.png``)."""
    bad = [c for c in ("/", "\\", "\0") if c in suffix]
    if bad:
        raise FFNetError(f"{option} {suffix!r}: a suffix is appended to the file name and cannot contain "
                         f"{' or '.join(repr(c) for c in bad)}; use --output for the folder")
    return suffix


def output_name(rel: PurePath, suffix: str, ext: str) -> PurePath:
    """``sub/baby.png`` -> ``sub/baby<suffix>.<ext>`` (relative to the output folder)."""
    return rel.parent / f"{rel.stem}{suffix}.{ext.lstrip('.')}"


def jpeg_quality(text: str) -> int:
    """argparse ``type=`` for ``--jpeg-quality``: an integer 1-100 (Pillow's JPEG quality scale)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 100, got {text!r}") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 100, got {text!r}")
    return value
