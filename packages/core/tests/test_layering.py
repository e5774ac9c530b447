"""The core's layers import only downwards (docs/architecture.md): nn and kernels never reach into the run engine
(except its user-error type), kernels never into nn."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "metamixer"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("metamixer")}


@pytest.mark.parametrize("layer,forbidden", [("nn", ("metamixer.train", "metamixer.kernels")),
                                             ("kernels", ("metamixer.train", "metamixer.nn"))])
def test_lower_layers_do_not_import_upper_ones(layer: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((SRC / layer).glob("*.py"))
    assert files
    bad = {f.name: sorted(i for i in _imports(f) if i.startswith(forbidden) and i != "metamixer.train.errors")
           for f in files}
    assert not {k: v for k, v in bad.items() if v}, bad
