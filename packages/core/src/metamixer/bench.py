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
"""

from __future__ import annotations

import datetime
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metamixer.train.errors import FFNetError
from metamixer.train.results import write_json

__all__ = ["cpu_model", "machine", "speed_ratio", "summary_entry", "write_summary", "read_summary", "check_entry"]


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
                  higher_is_better: bool) -> dict[str, Any]:
    """One row of the table: ``ours`` / ``peer`` are (name, value) in the same ``unit``; ``peer=None`` for an app
    timed without a same-run peer (its ratio is then ``None``, never a made-up one)."""
    row = {"app": app, "what": what, "ours": {"name": ours[0], "value": float(ours[1]), "unit": unit},
           "peer": None if peer is None else {"name": peer[0], "value": float(peer[1]), "unit": unit},
           "ratio": None if peer is None else speed_ratio(ours[1], peer[1], higher_is_better),
           "higher_is_better": bool(higher_is_better)}
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
    """``{"speed_summary": [...], "machine": {...} or None}`` from a benchmark's JSON; FFNetError naming the file
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
    return {"speed_summary": entries, "machine": info if isinstance(info, dict) else None}
