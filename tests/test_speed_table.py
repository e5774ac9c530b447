"""scripts/speed_table.py and core's speed-summary contract (metamixer.bench): the renderer on a fixed input, the
README updater, ratio arithmetic, the errors for a missing or broken summary, and that the README's speed block
and docs/speed.md are exactly what docs/speed.json renders to (a hand edit fails here). No time is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from metamixer.bench import check_entry, machine, read_summary, speed_ratio, summary_entry, write_summary
from metamixer.train.errors import FFNetError

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("speed_table", ROOT / "scripts" / "speed_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


st = _script()

MACHINE = {"cpu": "Test CPU 9000", "isa": "avx2", "torch_cpu_capability": "AVX2", "threads": 2, "logical_cpus": 4,
           "device": "cpu", "torch": "2.13.0+cpu", "python": "3.11.7", "date": "2026-12-04 01:00 UTC",
           "loadavg_1min": 1.5}


def _record() -> dict:
    ts = summary_entry("timeseries", "one Adam step, batch 512", ("ours", 1.25), ("authors", 5.0), "s", False)
    cls = [summary_entry("classification", f"FFNet-1 batch {b}", ("ffnet_1 deploy", v), ("ConvNeXt-T", 4.0),
                         "img/s", True) for b, v in ((1, 6.0), (16, 9.7))]
    pc = summary_entry("pointcloud", "ffnet3d step, 100,000 points", ("ffnet3d", 45.25), None, "s / 100k points",
                       False)
    apps = {"classification": {"status": "measured", "mode": "quick", "command": "python benchmarks/cls_bench.py",
                               "wall_s": 60.0, "machine": MACHINE, "speed_summary": cls},
            "timeseries": {"status": "measured", "mode": "quick", "command": "python benchmarks/ts_speed.py",
                           "wall_s": 90.0, "machine": MACHINE, "speed_summary": [ts]},
            "pointcloud": {"status": "measured", "mode": "quick", "command": "python benchmarks/pc_speed.py",
                           "wall_s": 150.0, "machine": MACHINE, "speed_summary": [pc]}}
    return {"apps": apps}


def test_ratio_is_ours_faster_by_for_times_and_throughputs() -> None:
    assert speed_ratio(1.25, 5.0, higher_is_better=False) == pytest.approx(4.0)  # time: peer / ours
    assert speed_ratio(6.0, 4.0, higher_is_better=True) == pytest.approx(1.5)  # throughput: ours / peer
    assert speed_ratio(2.0, 1.0, higher_is_better=False) == pytest.approx(0.5)  # slower than the peer: < 1
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(FFNetError, match="positive finite"):
            speed_ratio(bad, 1.0, True)
    entry = summary_entry("x", "w", ("a", 2.0), ("b", 3.0), "s", False)
    assert entry["ratio"] == pytest.approx(1.5) and entry["peer"]["unit"] == entry["ours"]["unit"] == "s"


def test_entries_that_break_the_contract_are_refused() -> None:
    good = summary_entry("timeseries", "w", ("ours", 1.0), ("peer", 4.0), "s", False)
    check_entry(good, "here")
    cases = {
        "'ratio' is 2.0 but": {**good, "ratio": 2.0},  # a ratio that does not follow from the values
        "different units": {**good, "peer": {**good["peer"], "unit": "ms"}},
        "'ours.value' must be a positive number": {**good, "ours": {**good["ours"], "value": 0}},
        "'higher_is_better' must be true or false": {**good, "higher_is_better": "yes"},
        "'ratio' must be null when there is no peer": {**good, "peer": None},
        "'what' must be a non-empty string": {**good, "what": ""},
    }
    for needle, entry in cases.items():
        with pytest.raises(FFNetError, match=needle) as info:
            check_entry(entry, "bench.json: speed_summary[0]")
        assert str(info.value).startswith("bench.json: speed_summary[0]")


def test_read_summary_errors_name_the_file_and_the_missing_key(tmp_path: Path) -> None:
    no_key = tmp_path / "sr.json"
    no_key.write_text(json.dumps({"environment": {}, "median_s": {"ours": 1.0}}))
    with pytest.raises(FFNetError, match=r"sr\.json: no top-level 'speed_summary' key \(found \['environment', "
                                         r"'median_s'\]\)"):
        read_summary(no_key)
    with pytest.raises(FFNetError, match="no such file"):
        read_summary(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FFNetError, match="not a readable JSON file"):
        read_summary(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text(json.dumps({"speed_summary": []}))
    with pytest.raises(FFNetError, match="non-empty list"):
        read_summary(tmp_path / "empty.json")
    entry = summary_entry("generation", "w", ("u_ffnet_s", 3.0), ("u_dit_s", 1.0), "img/s", True)
    path = write_summary(tmp_path / "ok.json", [entry], MACHINE)
    got = read_summary(path)
    assert got == {"speed_summary": [entry], "machine": MACHINE, "notes": []}
    (tmp_path / "no_machine.json").write_text(json.dumps({"speed_summary": [entry]}))  # e.g. SR's "environment"
    assert read_summary(tmp_path / "no_machine.json")["machine"] is None


def test_machine_describes_this_process() -> None:
    m = machine(threads=3)
    assert m["threads"] == 3 and m["isa"] in {"avx512", "avx2", "plain"} and m["cpu"]
    import torch

    assert m["torch"] == torch.__version__ and m["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    if flags:
        assert (m["isa"] == "avx512") == (" avx512f" in flags)


def test_table_rows_and_machine_header_on_a_fixed_record() -> None:
    table = st.render_table(_record())
    header, _, rows = table.partition("\n\n")
    assert header.startswith("Measured 2026-12-04 by `python scripts/speed_table.py` (--quick) on Test CPU 9000 "
                             "(AVX2; torch CPU capability AVX2), 2 threads of 4 logical CPUs, torch 2.13.0+cpu.")
    assert rows.splitlines() == [
        "| app | workload | ours | peer | ours faster by |",
        "|---|---|---|---|---|",
        "| classification | FFNet-1 batch 1 | ffnet_1 deploy: 6.00 img/s | ConvNeXt-T: 4.00 img/s | **1.50×** |",
        "| classification | FFNet-1 batch 16 | ffnet_1 deploy: 9.70 img/s | ConvNeXt-T: 4.00 img/s | **2.42×** |",
        "| super_resolution | not measured yet | – | – | – |",
        "| timeseries | one Adam step, batch 512 | ours: 1.25 s | authors: 5.00 s | **4.00×** |",
        "| pointcloud | ffnet3d step, 100,000 points | ffnet3d: 45.2 s / 100k points | no same-run peer | – |",
        "| generation | not measured yet | – | – | – |",
    ]


def test_header_names_apps_measured_on_another_machine() -> None:
    record = _record()
    record["apps"]["timeseries"]["machine"] = {**MACHINE, "cpu": "Other CPU", "isa": "avx512",
                                               "date": "2026-12-05 09:00 UTC"}
    header = st.machine_header(record)
    assert header.startswith("Measured 2026-12-04 to 2026-12-05 by")
    assert "- Test CPU 9000 (AVX2; torch CPU capability AVX2), 2 threads of 4 logical CPUs, torch 2.13.0+cpu: " \
           "classification, pointcloud" in header
    assert "- Other CPU (AVX-512; torch CPU capability AVX2), 2 threads of 4 logical CPUs, torch 2.13.0+cpu: " \
           "timeseries" in header
    assert st.machine_header({"apps": {}}).startswith("Nothing measured yet")


def test_readme_update_replaces_only_the_marked_block() -> None:
    block = st.readme_block(_record())
    text = f"# Title\n\nprose before\n\n{st.BEGIN}\nold hand-typed 9.9× row\n{st.END}\n\nprose after\n"
    new = st.update_readme(text, block)
    assert new == f"# Title\n\nprose before\n\n{block}\n\nprose after\n"
    assert "9.9×" not in new and "**4.00×**" in new
    assert st.update_readme(new, block) == new  # idempotent
    for broken in ("no markers", f"{st.BEGIN}\n{st.BEGIN}\n{st.END}", f"{st.END}\n{st.BEGIN}"):
        with pytest.raises(FFNetError, match="expected exactly one"):
            st.update_readme(broken, block)


def test_a_benchmark_without_speed_summary_is_an_error_naming_it(tmp_path: Path, monkeypatch) -> None:
    writes = "import json, sys; json.dump({'rows': []}, open(sys.argv[sys.argv.index('--summary') + 1], 'w'))"
    monkeypatch.setitem(st.APPS, "fake", {"quick": ["-c", writes], "summary": "--summary", "timeout": {"quick": 60}})
    with pytest.raises(FFNetError, match=r"fake\.summary\.json: no top-level 'speed_summary' key \(found \['rows'\]\)"):
        st.measure("fake", "quick", 2, tmp_path)
    monkeypatch.setitem(st.APPS, "fake", {"quick": ["-c", "raise SystemExit(3)"], "summary": "--summary",
                                          "timeout": {"quick": 60}})
    with pytest.raises(FFNetError, match=r"fake: the benchmark exited 3 \(log: .*fake\.log\)"):
        st.measure("fake", "quick", 2, tmp_path)


def test_a_benchmark_summary_becomes_a_record(tmp_path: Path, monkeypatch) -> None:
    entry = summary_entry("fake", "w", ("ours", 2.0), ("peer", 3.0), "s", False)
    source = write_summary(tmp_path / "source.json", [entry], MACHINE)
    code = f"import shutil, sys; shutil.copy({str(source)!r}, sys.argv[sys.argv.index('--summary') + 1])"
    monkeypatch.setitem(st.APPS, "fake", {"quick": ["-c", code], "summary": "--summary", "timeout": {"quick": 60}})
    rec = st.measure("fake", "quick", 2, tmp_path)
    assert rec["status"] == "measured" and rec["speed_summary"] == [entry] and rec["machine"] == MACHINE
    assert rec["command"].endswith("--threads 2 --summary SUMMARY.json")
    write_summary(source, [{**entry, "app": "other"}], MACHINE)  # another app's rows are refused
    with pytest.raises(FFNetError, match=r"rows of \['other'\] in the fake benchmark's summary"):
        st.measure("fake", "quick", 2, tmp_path)


def test_classification_summary_quotes_the_fixed_form_not_the_best() -> None:
    from ffnet_classification.bench import speed_summary

    def row(layout: str, deploy: float) -> dict:
        return {"batch": 1, "dtype": "fp32", "mode": "eager", "layout": layout,
                "img_s": {"ffnet_1_fused": 9.0, "ffnet_1_fused_deploy": deploy, "convnext_t": 4.0}}

    report = {"info": {"model": "ffnet_1", "resolution": 256, "threads": 2},
              "results": [row("contiguous", 8.0), row("channels_last", 5.0)]}
    [entry] = speed_summary(report)
    assert entry["ours"]["value"] == 5.0 and entry["ratio"] == pytest.approx(1.25)  # channels-last, deploy form
    assert entry["what"] == "ffnet_1 vs ConvNeXt-T, 256 px, batch 1, fp32, eager, channels-last, 2 threads"


def test_readme_and_speed_page_are_rendered_from_docs_speed_json() -> None:
    record = st.load()
    readme = (ROOT / "README.md").read_text()
    assert readme.count(st.BEGIN) == 1, "README.md lost its speed-table markers"
    shown = readme[readme.index(st.BEGIN):readme.index(st.END) + len(st.END)]
    assert shown == st.readme_block(record), "README speed table differs from docs/speed.json: " \
                                             "run python scripts/speed_table.py --render"
    assert (ROOT / "docs" / "speed.md").read_text() == st.render_page(record)
    assert set(record["apps"]) == set(st.APPS)


def test_cli_check_and_bad_threads_in_a_fresh_process() -> None:
    run = [sys.executable, str(ROOT / "scripts" / "speed_table.py")]
    done = subprocess.run([*run, "--check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "match docs/speed.json" in done.stdout, done.stdout + done.stderr
    bad = subprocess.run([*run, "--threads", "0", "--apps", "timeseries"], capture_output=True, text=True,
                         timeout=120)
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and lines == ["error: --threads must be >= 1, got 0"], bad.stderr


def test_peak_memory_sees_a_transient_allocation_and_not_freed_memory() -> None:
    """``peak_memory_mib`` (every benchmark's peak-memory column): a 96 MiB buffer touched and freed inside the
    measured call shows as ~96 MiB of growth; a call that allocates nothing shows (almost) none, even right after
    a large buffer was freed (freed heap is handed back before measuring)."""
    import torch

    from metamixer.bench import peak_memory_mib

    def transient() -> float:
        buf = torch.ones(96 * 2**20 // 4)  # touched: resident, not just reserved
        return float(buf[-1])

    out, grown = peak_memory_mib(transient)
    assert out == 1.0 and 80 <= grown <= 140
    _, idle = peak_memory_mib(lambda: None)
    assert idle < 16


def test_peak_memory_and_notes_reach_the_page(tmp_path: Path) -> None:
    """A summary's optional peak memory per side shows in the table cells, its notes under the app on the page;
    a negative peak or a non-string note is refused naming the field."""
    entry = summary_entry("super_resolution", "x4, LR 90x160", ("ours", 2.0), ("authors", 4.0), "s", False,
                          peak_mib=(21.4, 47.6))
    assert entry["ours"]["peak_mib"] == 21.4 and entry["peer"]["peak_mib"] == 47.6
    record = {"apps": {"super_resolution": {"status": "measured", "mode": "quick", "command": "python -m x",
                                            "wall_s": 10.0, "machine": MACHINE, "speed_summary": [entry],
                                            "notes": ["tiled peak: 90x160 -> 20.0 MiB, 180x320 -> 21.0 MiB"]}}}
    table = st.render_table(record)
    assert "ours: 2.00 s (peak +21.4 MiB)" in table and "authors: 4.00 s (peak +47.6 MiB)" in table
    assert "  - tiled peak: 90x160 -> 20.0 MiB, 180x320 -> 21.0 MiB" in st.render_page(record)
    bad = dict(entry, ours=dict(entry["ours"], peak_mib=-1.0))
    with pytest.raises(FFNetError, match="ours.peak_mib"):
        check_entry(bad, "x")
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"speed_summary": [entry], "notes": [3]}))
    with pytest.raises(FFNetError, match="'notes'"):
        read_summary(path)
    path.write_text(json.dumps({"speed_summary": [entry], "notes": ["a note"]}))
    assert read_summary(path)["notes"] == ["a note"]


def test_isa_page_keeps_one_instruction_set_and_the_main_page_links_it() -> None:
    record = _record()  # every app measured on MACHINE (avx2)
    page = st.render_page(record, isa="avx2")
    assert page.startswith("# Speed on AVX2 CPUs") and "--isa-page avx2" in page
    assert "| timeseries | one Adam step, batch 512 | ours: 1.25 s | authors: 5.00 s | **4.00×** |" in page
    main = st.render_page(record, isa_pages=["avx2"])
    assert "[AVX2](speed_avx2.md)" in main and "[AVX2]" not in st.render_page(record, isa_pages=[])


def test_every_per_isa_page_is_rendered_from_its_record() -> None:
    for isa in st.isa_pages_present():
        record_path, page = st.isa_paths(isa)
        record = st.load(record_path)
        assert page.read_text() == st.render_page(record, isa=isa), f"{page}: run --isa-page {isa} --render"
        for app, rec in record["apps"].items():
            if rec.get("status") == "measured":
                assert rec["machine"]["isa"] == isa, f"{record_path}: {app} measured on {rec['machine']['isa']}"


def test_isa_page_of_another_isa_is_refused_before_measuring_in_a_fresh_process() -> None:
    other = "plain" if machine(1)["isa"] != "plain" else "avx2"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "speed_table.py"), "--isa-page", other,
                           "--apps", "timeseries"], capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and f"--isa-page {other}: this CPU's best ISA is" in lines[0], \
        done.stderr
