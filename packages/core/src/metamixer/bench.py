"""The speed-summary contract every benchmark writes and ``scripts/speed_table.py`` reads.

Why one module: five apps each time themselves against a peer (ConvNeXt-T, the authors' formulations, U-DiT), and
the README quotes one generated table of those ratios. If every benchmark described the machine, computed its
ratio and wrote its file its own way, the table would mix "faster by" with "time ratio" and an AVX2 box with an
AVX-512 one without saying so. A summary file is::

    {"speed_summary": [{"app": "timeseries", "what": "<workload>",
                        "ours": {"name": ..., "value": 1.19, "unit": "s"},
                        "peer": {"name": ..., "value": 5.08, "unit": "s"},     # or null: no same-run peer
                        "ratio": 4.27, "higher_is_better": false}, ...],
     "machine": {"cpu": ..., "isa": "avx512", "threads": 2, "torch": ..., "date": ...}}

``ratio`` is always "ours is faster by" (> 1 = ours faster): peer/ours for times, ours/peer for throughputs.
Optional: ``"peak_mib"`` in ``ours`` / ``peer`` (peak memory growth of one run, :func:`peak_memory_mib`), and a
top-level ``"notes"`` list of short strings (e.g. tiled-inference peaks), which the speed page prints per app.
"""

from __future__ import annotations

import ctypes
import datetime
import gc
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from metamixer.train.errors import FFNetError
from metamixer.train.results import write_json

__all__ = ["cpu_model", "machine", "speed_ratio", "summary_entry", "write_summary", "read_summary", "check_entry",
           "PeakRSS", "peak_memory_mib"]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` reports: ratios differ between
    CPU generations, so every summary names the one it ran on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() == "model name":
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine(threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """What a speed number depends on: CPU model, its widest vector ISA (``avx512`` / ``avx2`` / ``plain``, from
    the /proc/cpuinfo flags as core's C kernels see them), torch's own CPU capability, thread count (default:
    torch's current one), logical CPUs, the GPU's name for a CUDA ``device``, torch and Python versions, UTC date
    and the 1-minute load average."""
    import torch

    from metamixer.kernels.native import cpu_isa

    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cpu": cpu_model(), "isa": cpu_isa(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": int(threads if threads is not None else torch.get_num_threads()), "logical_cpus": os.cpu_count(),
        "device": device, "gpu": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda")
        and torch.cuda.is_available() else None, "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "loadavg_1min": load,
    }


def speed_ratio(ours: float, peer: float, higher_is_better: bool) -> float:
    """How many times faster ours is (> 1 = ours faster): ``ours / peer`` for a throughput, ``peer / ours`` for a
    time. Both must be positive finite numbers (a zero time is a broken measurement, not an infinite speed-up)."""
    for label, value in (("ours", ours), ("peer", peer)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise FFNetError(f"speed ratio: {label} value must be a positive finite number, got {value!r}")
    return float(ours / peer if higher_is_better else peer / ours)


def summary_entry(app: str, what: str, ours: tuple[str, float], peer: tuple[str, float] | None, unit: str,
                  higher_is_better: bool, peak_mib: tuple[float, float | None] | None = None) -> dict[str, Any]:
    """One row of the table: ``ours`` / ``peer`` are (name, value) in the same ``unit``; ``peer=None`` for an app
    timed without a same-run peer (its ratio is then ``None``, never a made-up one). ``peak_mib``: (ours, peer)
    peak memory in MiB, when the benchmark measured it."""
    row = {"app": app, "what": what, "ours": {"name": ours[0], "value": float(ours[1]), "unit": unit},
           "peer": None if peer is None else {"name": peer[0], "value": float(peer[1]), "unit": unit},
           "ratio": None if peer is None else speed_ratio(ours[1], peer[1], higher_is_better),
           "higher_is_better": bool(higher_is_better)}
    if peak_mib is not None:
        row["ours"]["peak_mib"] = float(peak_mib[0])
        if row["peer"] is not None and peak_mib[1] is not None:
            row["peer"]["peak_mib"] = float(peak_mib[1])
    check_entry(row, "summary_entry")
    return row


def _side(entry: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    side = entry.get(key)
    if not isinstance(side, Mapping):
        raise FFNetError(f"{where}: '{key}' must be an object with name, value, unit; got {side!r}")
    for field, kind in (("name", str), ("unit", str)):
        if not isinstance(side.get(field), kind) or not side[field]:
            raise FFNetError(f"{where}: '{key}.{field}' must be a non-empty string, got {side.get(field)!r}")
    value = side.get("value")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise FFNetError(f"{where}: '{key}.value' must be a positive number, got {value!r}")
    peak = side.get("peak_mib", 0.0)
    if not isinstance(peak, (int, float)) or isinstance(peak, bool) or not math.isfinite(peak) or peak < 0:
        raise FFNetError(f"{where}: '{key}.peak_mib' must be a number >= 0 (MiB), got {peak!r}")
    return side


def check_entry(entry: object, where: str) -> None:
    """Raise FFNetError naming ``where`` and the field unless ``entry`` follows the contract (module docstring),
    including that ``ratio`` is what ours/peer and ``higher_is_better`` give (within 1e-6 relative)."""
    if not isinstance(entry, Mapping):
        raise FFNetError(f"{where}: each speed_summary entry must be an object, got {type(entry).__name__}")
    for field in ("app", "what"):
        if not isinstance(entry.get(field), str) or not entry[field]:
            raise FFNetError(f"{where}: '{field}' must be a non-empty string, got {entry.get(field)!r}")
    if not isinstance(entry.get("higher_is_better"), bool):
        raise FFNetError(f"{where}: 'higher_is_better' must be true or false, got {entry.get('higher_is_better')!r}")
    ours = _side(entry, "ours", where)
    if entry.get("peer") is None:
        if entry.get("ratio") is not None:
            raise FFNetError(f"{where}: 'ratio' must be null when there is no peer, got {entry['ratio']!r}")
        return
    peer = _side(entry, "peer", where)
    if ours["unit"] != peer["unit"]:
        raise FFNetError(f"{where}: ours and peer are in different units ({ours['unit']!r} vs {peer['unit']!r})")
    expected = speed_ratio(ours["value"], peer["value"], entry["higher_is_better"])
    ratio = entry.get("ratio")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not math.isclose(ratio, expected,
                                                                                          rel_tol=1e-6):
        raise FFNetError(f"{where}: 'ratio' is {ratio!r} but ours {ours['value']!r} and peer {peer['value']!r} "
                         f"({'higher' if entry['higher_is_better'] else 'lower'} is better) give {expected:.6g}")


def write_summary(path: str | os.PathLike[str], entries: Sequence[Mapping[str, Any]],
                  machine_info: Mapping[str, Any] | None = None, **extra: Any) -> Path:
    """Write ``{"speed_summary": entries, "machine": ..., **extra}`` atomically (core's write_json) after
    checking every entry; ``machine_info`` defaults to :func:`machine` of this process."""
    if not entries:
        raise FFNetError(f"{path}: a speed summary needs at least one entry")
    for i, entry in enumerate(entries):
        check_entry(entry, f"{path}: speed_summary[{i}]")
    return write_json(path, {"speed_summary": list(entries), "machine": dict(machine_info or machine()), **extra})


def read_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"speed_summary": [...], "machine": {...} or None, "notes": [...]}`` from a benchmark's JSON; FFNetError naming the file
    and the field when it is missing, not JSON, lacks the top-level ``speed_summary`` list or an entry breaks the
    contract."""
    import json

    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise FFNetError(f"{path}: no such file (the benchmark wrote no speed summary)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FFNetError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(record, dict) or "speed_summary" not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise FFNetError(f"{path}: no top-level 'speed_summary' key (found {keys}); the benchmark must write one "
                         "(metamixer.bench.write_summary)")
    entries = record["speed_summary"]
    if not isinstance(entries, list) or not entries:
        raise FFNetError(f"{path}: 'speed_summary' must be a non-empty list of entries, got {entries!r}")
    for i, entry in enumerate(entries):
        check_entry(entry, f"{path}: speed_summary[{i}]")
    info = record.get("machine")
    notes = record.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) and n for n in notes):
        raise FFNetError(f"{path}: 'notes' must be a list of non-empty strings, got {notes!r}")
    return {"speed_summary": entries, "machine": info if isinstance(info, dict) else None, "notes": notes}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``) so the next RSS growth is that run's own, not
    pages an earlier run left in the allocator. No-op where unavailable."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Context manager sampling the process's resident memory every ``interval_s`` in a thread;
    ``.peak_delta`` (bytes) = the largest RSS seen minus the RSS at entry (after :func:`release_free_memory`).
    CPU peaks by RSS are approximate (other threads' allocations count; a peak shorter than the interval can be
    missed) but they are what a user's machine feels; 0 where ``/proc`` is missing."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.peak_delta = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        release_free_memory()
        self._base = _rss_bytes() or 0
        self._peak = self._base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes() or 0)
            time.sleep(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes() or 0)
        self.peak_delta = max(0, self._peak - self._base) if self._base else 0


def peak_memory_mib(fn: Callable[[], Any], device: Any = "cpu") -> tuple[Any, float]:
    """``(fn(), peak memory growth in MiB while it ran)``: the CUDA allocator's peak over what was allocated
    before on a CUDA ``device`` (synchronised), else :class:`PeakRSS`. One function so that every benchmark's
    "peak memory" column means the same thing."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with PeakRSS() as rss:
        out = fn()
    return out, rss.peak_delta / 2**20
