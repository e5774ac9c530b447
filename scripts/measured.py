"""Measured numbers live in one place, ``docs/measured.yaml``; README.md, the apps' READMEs and docs/*.md show them
through markers ``<!--m:KEY-->value<!--/m-->`` that this script fills in.

    python scripts/measured.py          # rewrite every marker from docs/measured.yaml
    python scripts/measured.py --check  # list markers that disagree with it (tests/test_docs.py runs this)

A number measured again is changed in the YAML (with its date and command) and the script spreads it; a marker
naming a key the YAML lacks, or a YAML entry no page shows, is an error too.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    if not args.check:
        print(f"{write()} page(s) updated")
    found = problems()
    print("\n".join(found) or "every marker agrees with docs/measured.yaml")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
