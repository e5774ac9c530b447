"""One run logger for every app: plain-text ``log.txt`` + tensorboard events + tqdm progress bars.

Only the main process writes (``enabled`` defaults to ``is_main_process()``), so distributed runs do not
interleave lines or create one event file per rank. ``log.txt`` is line-buffered with timestamps, so a crashed
run still has its history and a headless CI log is readable without tensorboard.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from metamixer.train.distributed import is_main_process

__all__ = ["RunLogger"]

T = TypeVar("T")


def _to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item()) if value.numel() != 1 else float(value.item())
    return float(value)


def _image_array(img: Any) -> tuple[np.ndarray, str]:
    """Normalise an image to (array, dataformats) for SummaryWriter.add_image.

    Accepts CHW float tensors/arrays in [0, 1] (model outputs), HWC uint8 (loaded pictures) and HW grayscale.
    A 3-D array whose first dim is 1/3/4 is taken as CHW, otherwise as HWC.
    """
    array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if array.ndim == 2:
        fmt = "HW"
    elif array.ndim == 3 and array.dtype == np.uint8 and array.shape[-1] in (1, 3, 4):
        fmt = "HWC"
    elif array.ndim == 3 and array.shape[0] in (1, 3, 4):
        fmt = "CHW"
    elif array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        fmt = "HWC"
    else:
        raise ValueError(f"image must be HW, CHW (C in 1/3/4) or HWC, got shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        array = np.clip(array.astype(np.float32), 0.0, 1.0)
    return array, fmt


class RunLogger:
    """Logger for one run folder (``run_dir/log.txt`` + tensorboard event files in ``run_dir``).

    Args:
        run_dir: the run folder (created on the main process).
        enabled: write anything at all; default: only on the main process.
        echo: also print :meth:`info` messages to stdout (through tqdm so bars are not broken).
    """

    def __init__(self, run_dir: str | os.PathLike[str], enabled: bool | None = None, echo: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = is_main_process() if enabled is None else bool(enabled)
        self.echo = echo
        self._writer: Any = None
        self._log_file = None
        if self.enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.run_dir / "log.txt", "a", encoding="utf-8", buffering=1)

    @property
    def writer(self) -> Any:
        """The tensorboard SummaryWriter, created on first use (importing tensorboard costs ~1 s)."""
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir))
        return self._writer

    def info(self, msg: str) -> None:
        """Append a timestamped line to ``log.txt`` (and echo it)."""
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in str(msg).splitlines() or [""]:
            if self._log_file is not None:
                self._log_file.write(f"{stamp} {line}\n")
            if self.echo:
                tqdm.write(line, file=sys.stdout)

    def scalar(self, tag: str, value: float | torch.Tensor, step: int) -> None:
        """Log one scalar to tensorboard."""
        if self.enabled:
            self.writer.add_scalar(tag, _to_float(value), int(step))

    def scalars(self, values: Mapping[str, float | torch.Tensor], step: int, prefix: str = "") -> None:
        """Log several scalars (``prefix`` e.g. ``"train/"`` or ``"val/"``)."""
        for tag, value in values.items():
            self.scalar(f"{prefix}{tag}", value, step)

    def image(self, tag: str, img: Any, step: int) -> None:
        """Log an image: CHW float in [0, 1] or HWC uint8 (tensor or array)."""
        if self.enabled:
            array, fmt = _image_array(img)
            self.writer.add_image(tag, array, int(step), dataformats=fmt)

    def progress(self, iterable: Iterable[T], total: int | None = None, desc: str = "", **kwargs: Any) -> Iterator[T]:
        """Wrap ``iterable`` in a tqdm bar on the main process (a plain iteration elsewhere).

        Without a terminal (CI, nohup) the bar refreshes at most every 30 s so logs stay small.
        """
        interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        kwargs.setdefault("mininterval", 0.1 if interactive else 30.0)
        kwargs.setdefault("dynamic_ncols", True)
        return iter(tqdm(iterable, total=total, desc=desc, disable=not self.enabled, **kwargs))

    def bar(self, total: int, initial: int = 0, desc: str = "", **kwargs: Any) -> Any:
        """A tqdm bar updated by hand (``.update(n)``, ``.set_postfix``, ``.close()``), with :meth:`progress`'s
        settings; disabled off the main process."""
        interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        kwargs.setdefault("mininterval", 0.1 if interactive else 30.0)
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(total=total, initial=initial, desc=desc, disable=not self.enabled, **kwargs)

    def flush(self) -> None:
        """Push pending tensorboard events and log lines to disk."""
        if self._writer is not None:
            self._writer.flush()
        if self._log_file is not None:
            self._log_file.flush()

    def close(self) -> None:
        """Flush and close the files (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
