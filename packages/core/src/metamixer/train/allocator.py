"""Keep freed memory in the process on glibc, so CPU training does not page-fault its activations every step.

Why: glibc's ``malloc`` serves every block above 32 MiB with a fresh ``mmap`` and returns it with ``munmap`` on
free. A CPU training step allocates and frees its large activations (FFNet-TS at ETTh1 scale: tensors of 22-88 M
floats) every step, so the kernel zero-fills hundreds of MiB of new pages per step. Measured on this project's
2-core machine (ETTh1-96 FFNet-TS, batch 512, 1 thread): 4.2 s per step with the default allocator, 2.0 s after
:func:`keep_freed_memory` (the process's peak memory grows from 1.6 to 2.6 GB). It is the glibc counterpart of
running PyTorch on CPU with jemalloc or tcmalloc, which PyTorch's CPU performance guide recommends.

Opt out with ``FFNET_KEEP_FREED_MEMORY=0``. Elsewhere than Linux/glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_done: bool | None = None


def keep_freed_memory(top_pad_mib: int = 256) -> bool:
    """Ask glibc to serve large blocks from the heap (no per-block mmap) and not to trim it back to the OS.

    Idempotent and process-wide; returns whether the setting is active. Called by the apps' training loops when
    they run on CPU (GPU tensors are not allocated by malloc, so it changes nothing there).
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("FFNET_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(
        mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) and mallopt(_M_TOP_PAD, top_pad_mib << 20)
    )
    return _done
