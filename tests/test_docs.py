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
