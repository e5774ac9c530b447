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


@pytest.mark.parametrize("name", ["README.md"])
def test_readme_test_command_is_ci_command(name):
    readme = (ROOT / name).read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "scripts/test.sh" in ci
    assert "bash scripts/quickstart.sh" in readme
