"""Measured numbers live in one place, ``docs/measured.yaml``; README.md, the apps' READMEs and docs/*.md show them
through markers ``<!--m:KEY-->value<!--/m-->`` that this script fills in.

    python scripts/measured.py          # rewrite every marker from docs/measured.yaml
    python scripts/measured.py --check  # list markers that disagree with it (tests/test_docs.py runs this)
    python scripts/measured.py --from-quickstart quickstart_out   # take the quick starts' numbers, then spread

An entry with ``results: {file: STEP/results.json, keys: [dotted.key, ...], format: "{0:.2f}", scale: 1}`` is a
number a quick start measures: ``--from-quickstart DIR`` (the folder ``scripts/quickstart.sh`` writes) reads it from
``DIR/STEP/results.json`` so the README and the docs show what the quick start printed, not a copy typed by hand.

A number measured again is changed in the YAML (with its date and command) and the script spreads it; a marker
naming a key the YAML lacks, or a YAML entry no page shows, is an error too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs" / "measured.yaml"
MARKER = re.compile(r"<!--m:([\w.\-]+)-->(.*?)<!--/m-->", re.S)


def pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted(root.glob("apps/*/README.md")), *sorted(root.glob("docs/*.md"))]


def load(source: Path = SOURCE) -> dict[str, str]:
    entries = yaml.safe_load(source.read_text()) or {}
    values = {}
    for key, entry in entries.items():
        if not isinstance(entry, dict) or not {"value", "what", "source"} <= entry.keys():
            raise SystemExit(f"{source}: entry {key!r} needs value, what and source")
        values[key] = str(entry["value"])
    return values


def _lookup(record: dict, dotted: str) -> float:
    value: object = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise KeyError(f"{dotted} is not a number")
    return float(value)


def values_from_results(entries: dict, folder: Path) -> dict[str, str]:
    """key -> formatted value for every entry with a ``results`` spec whose results.json exists in ``folder``."""
    found = {}
    for key, entry in entries.items():
        spec = entry.get("results") if isinstance(entry, dict) else None
        if not spec or not (folder / spec["file"]).is_file():
            continue
        record = json.loads((folder / spec["file"]).read_text())
        try:
            numbers = [_lookup(record, k) * float(spec.get("scale", 1)) for k in spec["keys"]]
        except KeyError as exc:
            raise SystemExit(f"{folder / spec['file']}: no number at {exc} (docs/measured.yaml entry {key!r})") from None
        found[key] = spec["format"].format(*numbers)
    return found


def update_from_quickstart(folder: Path, root: Path = ROOT) -> dict[str, str]:
    """Write the quick starts' numbers into docs/measured.yaml (comments kept); returns what changed."""
    source = root / "docs" / "measured.yaml"
    text = source.read_text()
    entries = yaml.safe_load(text) or {}
    changed = {k: v for k, v in values_from_results(entries, folder).items() if str(entries[k]["value"]) != v}
    for key, value in changed.items():
        entries[key]["value"] = value
    header = "".join(line for line in text.splitlines(True) if line.startswith("#"))
    source.write_text(header + yaml.safe_dump(entries, sort_keys=False, allow_unicode=True, width=120))
    return changed


def problems(root: Path = ROOT) -> list[str]:
    values, used, found = load(root / "docs" / "measured.yaml"), set(), []
    for page in pages(root):
        for match in MARKER.finditer(page.read_text()):
            key, shown = match.groups()
            used.add(key)
            if key not in values:
                found.append(f"{page.relative_to(root)}: marker {key!r} is not in docs/measured.yaml")
            elif shown != values[key]:
                found.append(f"{page.relative_to(root)}: {key} shows {shown!r}, docs/measured.yaml says {values[key]!r}")
    found += [f"docs/measured.yaml: {key!r} is shown on no page" for key in sorted(values.keys() - used)]
    return found


def write(root: Path = ROOT) -> int:
    values, changed = load(root / "docs" / "measured.yaml"), 0
    for page in pages(root):
        text = page.read_text()
        new = MARKER.sub(lambda m: f"<!--m:{m[1]}-->{values.get(m[1], m[2])}<!--/m-->", text)
        if new != text:
            page.write_text(new)
            changed += 1
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report markers that disagree")
    parser.add_argument("--from-quickstart", metavar="DIR", type=Path, default=None,
                        help="first take the numbers of entries with a results spec from DIR/<step>/results.json")
    args = parser.parse_args()
    if args.from_quickstart is not None:
        for key, value in update_from_quickstart(args.from_quickstart).items():
            print(f"{key}: {value}")
    if not args.check:
        print(f"{write()} page(s) updated")
    found = problems()
    print("\n".join(found) or "every marker agrees with docs/measured.yaml")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
