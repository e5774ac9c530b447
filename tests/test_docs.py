"""The runnable examples in docs/ must run as written."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_metamixer_doc_example_runs(capsys):
    blocks = python_blocks(ROOT / "docs" / "metamixer.md")
    runnable = [b for b in blocks if "assert" in b]
    assert runnable, "docs/metamixer.md lost its runnable example"
    for code in runnable:
        exec(compile(code, "docs/metamixer.md", "exec"), {})
    assert "custom mixer OK" in capsys.readouterr().out


def test_readme_python_example_runs():
    blocks = python_blocks(ROOT / "README.md")
    assert blocks, "README lost its code example"
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["y"].shape == (2, 64, 32, 32)
    assert not any("BatchNorm" in type(m).__name__ for m in namespace["deploy"].modules())


@pytest.mark.parametrize("name", ["README.md"])
def test_readme_test_command_is_ci_command(name):
    readme = (ROOT / name).read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "scripts/test.sh" in ci
    assert "bash scripts/quickstart.sh" in readme


def test_timeseries_speed_claims_match_the_measurement():
    """Every page that quotes the FFNet-TS step speed-up and memory saving quotes docs/timeseries_speed.json."""
    import json

    raw = json.loads((ROOT / "docs" / "timeseries_speed.json").read_text())
    etth1 = next(v for k, v in raw.items() if k.startswith("ETTh1"))
    weather = next(v for k, v in raw.items() if k.startswith("Weather"))
    speed = [f"{m['speedup_vs_authors']:.1f}" for m in (etth1, weather)]
    memory = [f"{m['saved_activations_authors_MiB'] / m['saved_activations_ours_MiB']:.1f}" for m in (etth1, weather)]
    claims = {
        "apps/timeseries/README.md": r"per training step ([\d.]+)× the authors' formulation at ETTh1 size and "
                                     r"([\d.]+)× at Weather\s+size, with ([\d.]+)× / ([\d.]+)× less activation memory",
        "docs/timeseries.md": r"Ours is \*\*([\d.]+)×\*\* \(ETTh1\) and \*\*([\d.]+)×\*\* \(Weather\) faster than the "
                              r"authors' formulation with the same\s+allocator, and keeps ([\d.]+)× / ([\d.]+)× less",
    }
    for page, pattern in claims.items():
        found = re.search(pattern, (ROOT / page).read_text())
        assert found, f"{page}: the speed/memory claim is gone or reworded (pattern {pattern!r})"
        assert list(found.groups()) == speed + memory, f"{page} quotes {found.groups()}, the measurement {speed + memory}"


def test_core_api_page_is_generated_from_the_code() -> None:
    """docs/core_api.md is rendered from the real signatures; a stale page (an argument that no longer exists)
    fails here. Regenerate with `python scripts/gen_core_api.py`."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "gen_core_api.py"
    spec = importlib.util.spec_from_file_location("gen_core_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OUT.read_text() == module.render(), "docs/core_api.md is stale: run python scripts/gen_core_api.py"


def test_measured_numbers_come_from_docs_measured_yaml() -> None:
    """Each measured number the pages repeat lives once, in docs/measured.yaml; every marker shows that value,
    names a known key, and every entry is shown somewhere."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("measured", ROOT / "scripts" / "measured.py")
    measured = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measured)
    assert measured.problems() == []
    assert len(measured.load()) >= 15
    readme = (ROOT / "README.md").read_text()
    assert readme.count("<!--m:") >= 15  # the headline table takes its numbers from there


def test_quickstart_numbers_are_read_from_results_json(tmp_path: Path) -> None:
    """``scripts/measured.py --from-quickstart DIR`` takes each quick-start number from DIR/<step>/results.json:
    every spec names a real quick-start step and formats what it reads; a missing key is an error naming it."""
    import importlib.util
    import json

    import yaml

    spec = importlib.util.spec_from_file_location("measured", ROOT / "scripts" / "measured.py")
    measured = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measured)
    entries = yaml.safe_load((ROOT / "docs" / "measured.yaml").read_text())
    specs = {k: e["results"] for k, e in entries.items() if "results" in e}
    steps = re.search(r"ORDER=\(([^)]*)\)", (ROOT / "scripts" / "quickstart.sh").read_text()).group(1).split()
    assert len(specs) >= 6 and {s["file"].split("/")[0] for s in specs.values()} <= set(steps)
    records: dict[str, dict] = {}
    for s in specs.values():
        for i, dotted in enumerate(s["keys"]):
            node = records.setdefault(s["file"], {})
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = 0.5 + i
    for file, record in records.items():
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text(json.dumps(record))
    got = measured.values_from_results(entries, tmp_path)
    for key, s in specs.items():
        numbers = [(0.5 + i) * float(s.get("scale", 1)) for i in range(len(s["keys"]))]
        assert got[key] == s["format"].format(*numbers)
    (tmp_path / "pointcloud" / "results.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"no number at 'metrics.mIoU'"):
        measured.values_from_results(entries, tmp_path)
