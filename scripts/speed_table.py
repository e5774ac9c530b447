"""One command for the side-by-side speed table of the five apps: ours vs the peer each is compared with.

    python scripts/speed_table.py                       # quick mode, 2 threads, all apps (~15-25 min on 2 cores)
    python scripts/speed_table.py --apps timeseries     # re-measure one app, keep the others' rows
    python scripts/speed_table.py --full --threads 4    # the benchmarks' longer settings
    python scripts/speed_table.py --gpu                 # on a CUDA machine: docs/speed_gpu.{json,md}
    python scripts/speed_table.py --isa-page avx2       # on an AVX2 CPU: a second CPU table, docs/speed_avx2.*
    python scripts/speed_table.py --render              # re-render docs/speed.md and the README from docs/speed.json
    python scripts/speed_table.py --check               # exit 1 when docs/speed.md or the README is stale

Why: a speed claim typed by hand drifts from what the benchmark measures, and ratios from different runs or
machines do not compare. Each app's benchmark runs in its own fresh process, one after the other, with the same
thread count; each times ours and its peer in that one process, interleaved, and writes a speed summary
(``metamixer.bench``). This script collects them into docs/speed.json, renders docs/speed.md (table + machine:
CPU model, ISA, threads, torch) and puts the same table into the README between the speed-table markers.
tests/test_speed_table.py fails when the README or docs/speed.md differ from docs/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metamixer.bench import check_entry, machine, read_summary
from metamixer.train.errors import FFNetError, SomeInputsFailed, for_each_input, run_cli
from metamixer.train.results import write_json

ROOT = Path(__file__).resolve().parents[1]
SPEED_JSON = ROOT / "docs" / "speed.json"
SPEED_MD = ROOT / "docs" / "speed.md"
#: the GPU table (``--gpu``) has its own record and page: CPU and GPU ratios never share one table
SPEED_GPU_JSON, SPEED_GPU_MD = ROOT / "docs" / "speed_gpu.json", ROOT / "docs" / "speed_gpu.md"
README = ROOT / "README.md"
BEGIN, END = "<!-- speed-table:begin -->", "<!-- speed-table:end -->"
NOT_MEASURED = "not measured yet"

#: app -> (quick args, full args, gpu args where the benchmark runs on CUDA, option that names the summary file,
#: timeout per mode in s). Every command also gets ``--threads N``; the interpreter is this one (the venv's).
APPS: dict[str, dict[str, Any]] = {
    "classification": {
        "quick": ["benchmarks/cls_bench.py", "--quick", "--parts", "fp32_eager", "--layouts", "channels_last",
                  "--forms", "deploy"],
        "full": ["benchmarks/cls_bench.py"],
        "summary": "--summary", "work": "--out", "timeout": {"quick": 900, "full": 5400}},
    "super_resolution": {
        "quick": ["-m", "ffnet_sr.bench", "--compare-authors", "--compiled", "--quick", "--device", "cpu"],
        "full": ["-m", "ffnet_sr.bench", "--compare-authors", "--compiled", "--device", "cpu"],
        "gpu": ["-m", "ffnet_sr.bench", "--compare-authors", "--device", "cuda"],
        "summary": "--output", "timeout": {"quick": 900, "full": 2700, "gpu": 600}},
    "timeseries": {
        "quick": ["benchmarks/ts_speed.py", "--repeats", "3"],
        "full": ["benchmarks/ts_speed.py", "--repeats", "8"],
        "summary": "--summary", "timeout": {"quick": 900, "full": 2700}},
    "pointcloud": {
        "quick": ["benchmarks/pc_speed.py", "--model", "ffnet3d", "--reps", "2"],
        "full": ["benchmarks/pc_speed.py", "--model", "ffnet3d", "--reps", "5"],
        "summary": "--summary", "timeout": {"quick": 1200, "full": 3600}},
    "generation": {
        "quick": ["benchmarks/gen_throughput.py", "--size", "s", "--batch", "2", "--sample-batch", "8",
                  "--repeats", "2"],
        "full": ["benchmarks/gen_throughput.py", "--size", "s", "--batch", "4", "--sample-batch", "16",
                 "--repeats", "5"],
        "gpu": ["benchmarks/gen_throughput.py", "--size", "b", "--device", "cuda", "--precision", "bf16",
                "--batch", "64", "--sample-batch", "64", "--repeats", "10"],
        "summary": "--summary", "timeout": {"quick": 1200, "full": 3600, "gpu": 600}},
}
_ISA_NAMES = {"avx512": "AVX-512", "avx2": "AVX2", "plain": "no AVX2"}


def isa_paths(isa: str) -> tuple[Path, Path]:
    """The record and page of the per-instruction-set CPU table ``isa`` (``--isa-page``): the same apps measured on
    a CPU of that ISA, kept beside the main table because the ratios differ by ISA (core's kernels have one code
    path per ISA) and a new measurement elsewhere must not erase them."""
    return ROOT / "docs" / f"speed_{isa}.json", ROOT / "docs" / f"speed_{isa}.md"


def isa_pages_present() -> list[str]:
    """The ISAs that have a per-ISA table in docs/, in _ISA_NAMES order (linked from docs/speed.md)."""
    return [isa for isa in _ISA_NAMES if isa_paths(isa)[0].is_file()]


def command(app: str, mode: str, threads: int, summary: str, work: str) -> list[str]:
    """The argv (after the interpreter) that measures ``app``: its benchmark's ``mode`` settings, the thread count,
    where to write the summary (and, for benchmarks that write more files, a work folder)."""
    spec = APPS[app]
    argv = [*spec[mode], "--threads", str(threads), spec["summary"], summary]
    return argv + ([spec["work"], work] if "work" in spec else [])


def measure(app: str, mode: str, threads: int, work: Path) -> dict[str, Any]:
    """Run one app's benchmark in a fresh process (stdout+stderr to ``work/<app>.log``) and return its record."""
    summary, log = work / f"{app}.summary.json", work / f"{app}.log"
    summary.unlink(missing_ok=True)
    argv = command(app, mode, threads, str(summary), str(work / app))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    before, start = machine(threads), time.perf_counter()  # for a summary without its own machine description
    with log.open("w") as handle:
        try:
            done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=APPS[app]["timeout"][mode])
        except subprocess.TimeoutExpired:
            raise FFNetError(f"{app}: the benchmark ran past {APPS[app]['timeout'][mode]} s (log: {log})") from None
    if done.returncode != 0:
        raise FFNetError(f"{app}: the benchmark exited {done.returncode} (log: {log})")
    found = read_summary(summary)
    others = sorted({e["app"] for e in found["speed_summary"]} - {app})
    if others:
        raise FFNetError(f"{summary}: rows of {others} in the {app} benchmark's summary")
    return {"status": "measured", "mode": mode, "command": "python " + " ".join(command(app, mode, threads,
            "SUMMARY.json", "WORK")), "wall_s": round(time.perf_counter() - start, 1),
            "machine": found["machine"] or before, "speed_summary": found["speed_summary"],
            **({"notes": found["notes"]} if found.get("notes") else {})}


def load(path: Path = SPEED_JSON) -> dict[str, Any]:
    """docs/speed.json, every measured entry checked against the contract (an app missing: not measured yet)."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {"apps": {app: {"status": NOT_MEASURED} for app in APPS}}
    except json.JSONDecodeError as exc:
        raise FFNetError(f"{path}: not valid JSON ({exc})") from None
    apps = record.get("apps") if isinstance(record, dict) else None
    if not isinstance(apps, dict):
        raise FFNetError(f"{path}: expected a top-level 'apps' object")
    for app in APPS:
        rec = apps.setdefault(app, {"status": NOT_MEASURED})
        if rec.get("status") == "measured":
            if not isinstance(rec.get("machine"), dict) or not rec.get("speed_summary"):
                raise FFNetError(f"{path}: apps.{app} is measured but lacks 'machine' or 'speed_summary'")
            for i, entry in enumerate(rec["speed_summary"]):
                check_entry(entry, f"{path}: apps.{app}.speed_summary[{i}]")
    return record


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 \
        else f"{value:.3g}"


def _machine_line(m: dict[str, Any]) -> str:
    if str(m.get("device", "cpu")).startswith("cuda"):
        return f"{m.get('gpu') or 'a CUDA GPU'} (host CPU {m.get('cpu', '?')}), torch {m.get('torch', '?')}"
    isa = _ISA_NAMES.get(m.get("isa"), m.get("isa"))
    cap = f"; torch CPU capability {m['torch_cpu_capability']}" if m.get("torch_cpu_capability") else ""
    cpus = f" of {m['logical_cpus']} logical CPUs" if m.get("logical_cpus") else ""
    return f"{m.get('cpu', '?')} ({isa}{cap}), {m.get('threads', '?')} threads{cpus}, torch {m.get('torch', '?')}"


def machine_header(record: dict[str, Any], gpu: bool = False) -> str:
    """Where and when the rows were measured; apps measured on a different machine setting are named."""
    measured = {app: rec for app, rec in record["apps"].items() if rec.get("status") == "measured"}
    if not measured:
        return f"Nothing measured yet: run `python scripts/speed_table.py{' --gpu' if gpu else ''}`."
    lines: dict[str, list[str]] = {}
    for app, rec in measured.items():
        lines.setdefault(_machine_line(rec["machine"]), []).append(app)
    dates = sorted({str(rec["machine"].get("date", "?"))[:10] for rec in measured.values()})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    modes = sorted({rec.get("mode", "quick") for rec in measured.values()})
    head = f"Measured {when} by `python scripts/speed_table.py` ({' and '.join(f'--{m}' for m in modes)})"
    if len(lines) == 1:
        return f"{head} on {next(iter(lines))}."
    return head + " on:\n" + "\n".join(f"- {line}: {', '.join(apps)}" for line, apps in lines.items())


def _cell(side: dict[str, Any]) -> str:
    peak = f" (peak +{_number(side['peak_mib'])} MiB)" if "peak_mib" in side else ""
    return f"{side['name']}: {_number(side['value'])} {side['unit']}{peak}"


def _unmeasured(app: str, gpu: bool) -> str:
    return "CPU-only benchmark" if gpu and "gpu" not in APPS[app] else NOT_MEASURED


def render_table(record: dict[str, Any], gpu: bool = False) -> str:
    """The machine header and one row per summary entry (an app without rows: 'not measured yet', or on the
    GPU page 'CPU-only benchmark' for an app whose benchmark has no CUDA settings)."""
    rows = ["| app | workload | ours | peer | ours faster by |", "|---|---|---|---|---|"]
    for app in APPS:
        rec = record["apps"].get(app, {"status": NOT_MEASURED})
        if rec.get("status") != "measured":
            rows.append(f"| {app} | {_unmeasured(app, gpu)} | – | – | – |")
            continue
        for e in rec["speed_summary"]:
            ours = _cell(e["ours"])
            if e["peer"] is None:
                rows.append(f"| {app} | {e['what']} | {ours} | no same-run peer | – |")
                continue
            peer = _cell(e["peer"])
            rows.append(f"| {app} | {e['what']} | {ours} | {peer} | **{e['ratio']:.2f}×** |")
    note = ("Ours and the peer run in the same process on the same input, interleaved; \"ours faster by\" = peer "
            "time / our time (or our throughput / the peer's), > 1 means ours is faster.")
    return f"{machine_header(record, gpu)} {note}\n\n" + "\n".join(rows)


def readme_block(record: dict[str, Any]) -> str:
    """What the README shows between the markers: the generated table and where it comes from."""
    return (f"{BEGIN}\n{render_table(record)}\n\nGenerated from [docs/speed.json](docs/speed.json) (commands and "
            f"per-app details: [docs/speed.md](docs/speed.md)); do not edit by hand.\n{END}")


def render_page(record: dict[str, Any], gpu: bool = False, isa: str | None = None,
                isa_pages: Sequence[str] | None = None) -> str:
    """docs/speed.md (or, ``gpu``, docs/speed_gpu.md; ``isa``, docs/speed_<isa>.md): the table, then per app the
    exact command, its wall time and load at the start. ``isa_pages``: the per-ISA tables the main page links
    (default: those present in docs/)."""
    flag = " --gpu" if gpu else f" --isa-page {isa}" if isa else ""
    if isa:
        name = _ISA_NAMES.get(isa, isa)
        head = [f"# Speed on {name} CPUs: each app against its peer (generated)", "",
                f"Generated by `python scripts/speed_table.py --isa-page {isa}` on a CPU whose best ISA is {name}, "
                f"from [speed_{isa}.json](speed_{isa}.json). Core's C kernels have one code path per instruction "
                "set, so the ratios differ by ISA; this table keeps the figures of this ISA beside the main one "
                "([speed.md](speed.md), which the README quotes). `tests/test_speed_table.py` fails when this page "
                f"differs from speed_{isa}.json."]
    elif gpu:
        head = ["# Speed on a GPU: each app against its peer (generated)", "",
                "Generated by `python scripts/speed_table.py --gpu` on a CUDA machine from "
                "[speed_gpu.json](speed_gpu.json); the CPU table is [speed.md](speed.md). Apps whose benchmark "
                "times CPU code only have no GPU row. `tests/test_speed_table.py` fails when this page differs "
                "from speed_gpu.json."]
    else:
        head = ["# Speed: each app against its peer, side by side (generated)", "",
                "Generated by `python scripts/speed_table.py` from [speed.json](speed.json); the README quotes the "
                "same table. `tests/test_speed_table.py` fails when this page or the README differs from "
                "speed.json, so edit neither by hand: re-measure (`--apps NAME` for one app) or re-render "
                "(`--render`). GPU figures: [speed_gpu.md](speed_gpu.md)."]
        pages = isa_pages_present() if isa_pages is None else list(isa_pages)
        if pages:
            head[-1] += " Per instruction set (the same benchmarks on a CPU of that ISA): " + ", ".join(
                f"[{_ISA_NAMES.get(i, i)}](speed_{i}.md)" for i in pages) + "."
    lines = [*head, "", render_table(record, gpu), "", "## How each app was measured", ""]
    for app in APPS:
        rec = record["apps"].get(app, {})
        if rec.get("status") != "measured":
            lines.append(f"- **{app}**: {_unmeasured(app, gpu)}" + (
                "" if gpu and "gpu" not in APPS[app] else f": `python scripts/speed_table.py{flag} --apps {app}`"))
            continue
        load = rec["machine"].get("loadavg_1min")
        lines.append(f"- **{app}**: `{rec['command']}`, {rec['wall_s']:.0f} s"
                     + (f", load average {load:.1f} at the start" if load is not None else "")
                     + f", {rec['machine'].get('date', '?')}")
        lines.extend(f"  - {note}" for note in rec.get("notes", []))
    return "\n".join(lines) + "\n"


def update_readme(text: str, block: str) -> str:
    """``text`` with the part between the speed-table markers (markers included) replaced by ``block``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise FFNetError(f"README.md: expected exactly one '{BEGIN}' followed by one '{END}'")
    return text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]


def write_pages(record: dict[str, Any], page: Path = SPEED_MD, readme: Path | None = README,
                gpu: bool = False, isa: str | None = None) -> None:
    """Write docs/speed.md (``gpu``: docs/speed_gpu.md, ``isa``: docs/speed_<isa>.md) and, unless ``readme`` is
    None, the README's block."""
    page.write_text(render_page(record, gpu, isa))
    if readme is not None:
        readme.write_text(update_readme(readme.read_text(), readme_block(record)))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--apps", nargs="+", choices=list(APPS), default=list(APPS), help="only these (others kept)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="short settings (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the benchmarks' long settings")
    mode.add_argument("--gpu", dest="mode", action="store_const", const="gpu",
                      help="the CUDA settings of the apps that have them, into docs/speed_gpu.{json,md}")
    p.add_argument("--isa-page", choices=list(_ISA_NAMES), default=None,
                   help="measure into (or render/check) docs/speed_<ISA>.{json,md}, a CPU table kept per ISA; "
                        "measuring needs a CPU whose best ISA is that one")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of every benchmark (default 2)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "speed_table", help="logs and raw summaries")
    p.add_argument("--render", action="store_true", help="only re-render docs/speed.md and README from speed.json")
    p.add_argument("--check", action="store_true", help="exit 1 when docs/speed.md or README is not the rendering")
    p.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    a = p.parse_args(argv)
    if a.threads < 1:
        raise FFNetError(f"--threads must be >= 1, got {a.threads}")
    gpu, isa = a.mode == "gpu", a.isa_page
    if gpu and isa:
        raise FFNetError("--gpu and --isa-page name two different tables: give one")
    record_path, page = (SPEED_GPU_JSON, SPEED_GPU_MD) if gpu else isa_paths(isa) if isa else (SPEED_JSON, SPEED_MD)
    readme = None if gpu or isa else README
    if isa and not (a.render or a.check) and machine(a.threads).get("isa") != isa:
        raise FFNetError(f"--isa-page {isa}: this CPU's best ISA is {machine(a.threads).get('isa')}, not {isa}; "
                         f"measure that table on a {_ISA_NAMES[isa]} CPU")
    record = load(record_path)
    if isa:
        foreign = [app for app, rec in record["apps"].items()
                   if rec.get("status") == "measured" and rec["machine"].get("isa") != isa]
        if foreign:
            raise FFNetError(f"{record_path}: apps {foreign} were measured on another ISA than {isa}")
    if a.check:
        checks = [(page.relative_to(ROOT).as_posix(), page, render_page(record, gpu, isa))]
        if readme is not None:
            checks.append(("README.md", README, update_readme(README.read_text(), readme_block(record))))
        stale = [name for name, path, want in checks if not path.is_file() or path.read_text() != want]
        flag = " --gpu" if gpu else f" --isa-page {isa}" if isa else ""
        print("stale: " + ", ".join(stale) + f" (run python scripts/speed_table.py{flag} --render)"
              if stale
              else f"{', '.join(c[0] for c in checks)} match {record_path.relative_to(ROOT).as_posix()}")
        return 1 if stale else 0
    failure = None
    if not a.render:
        a.work.mkdir(parents=True, exist_ok=True)
        mode_name = a.mode or "quick"
        if gpu:
            import torch

            if not torch.cuda.is_available():
                raise FFNetError("--gpu needs a CUDA device; this machine has none (torch.cuda.is_available())")
            skipped = [app for app in a.apps if "gpu" not in APPS[app]]
            if skipped:
                print(f"no GPU settings (CPU-only benchmarks), skipped: {', '.join(skipped)}", flush=True)
            a.apps = [app for app in a.apps if "gpu" in APPS[app]]

        def run_one(app: str) -> None:
            shown = " ".join(command(app, mode_name, a.threads, "...", "..."))
            print(f"[{a.apps.index(app) + 1}/{len(a.apps)}] {app}: python {shown}", flush=True)
            record["apps"][app] = measure(app, mode_name, a.threads, a.work)
            for e in record["apps"][app]["speed_summary"]:
                ratio = "no same-run peer" if e["ratio"] is None else f"ours faster by {e['ratio']:.2f}x"
                print(f"    {e['what']}: {ratio}", flush=True)

        try:  # a failed benchmark keeps its previous row; the others still run
            for_each_input(a.apps, run_one, what="benchmark")
        except SomeInputsFailed as exc:
            failure = exc
        write_json(record_path, record)
    write_pages(record, page, readme, gpu, isa)
    print(f"wrote {record_path.relative_to(ROOT)}, {page.relative_to(ROOT)}" + ("" if readme is None else
          " and the README's speed table"))
    if failure is not None:
        raise failure
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
