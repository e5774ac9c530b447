"""Monorepo hygiene: every package declares what it imports, apps depend on core by name, no app imports
another app, torchvision/timm are never imported at module level, and every console script resolves."""
from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted([ROOT / "packages" / "core"] + [p.parent for p in (ROOT / "apps").glob("*/pyproject.toml")])
APP_IMPORT_NAMES = {"ffnet_classification", "ffnet_sr", "ffnet_pointcloud", "ffnet_timeseries", "ffnet_generation"}
# distribution name -> import names it provides
DIST_MODULES = {
    "torch": {"torch"}, "numpy": {"numpy"}, "pyyaml": {"yaml"}, "tqdm": {"tqdm"}, "tensorboard": {"tensorboard"},
    "pillow": {"PIL"}, "scikit-learn": {"sklearn"}, "scikit-image": {"skimage"}, "scipy": {"scipy"},
    "kornia": {"kornia"}, "onnx": {"onnx"}, "onnxruntime": {"onnxruntime"}, "onnxscript": {"onnxscript"},
    "pandas": {"pandas"}, "matplotlib": {"matplotlib"}, "spconv": {"spconv"}, "spconv-cu120": {"spconv"},
    "spconv-cu121": {"spconv"}, "spconv-cu124": {"spconv"}, "spconv-cu126": {"spconv"},
    "opencv-python-headless": {"cv2"}, "diffusers": {"diffusers"}, "timm": {"timm"}, "torchvision": {"torchvision"}, "metamixer": {"metamixer"},
    "pytest": {"pytest"}, "safetensors": {"safetensors"}, "plyfile": {"plyfile"}, "imageio": {"imageio"},
    "pytest-timeout": set(), "ruff": set(), "psutil": {"psutil"}, "tabulate": {"tabulate"},
}


def _dist_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project(pkg: Path) -> dict:
    return tomllib.loads((pkg / "pyproject.toml").read_text())["project"]


def _imports(pkg: Path) -> dict[str, list[tuple[str, int, bool]]]:
    """top-level module -> [(file, line, at_module_level)] for every import in the package's src/."""
    found: dict[str, list[tuple[str, int, bool]]] = {}
    for f in (pkg / "src").rglob("*.py"):
        tree = ast.parse(f.read_text(), filename=str(f))
        top_level = {id(n) for n in tree.body}
        guarded: set[int] = set()
        for node in tree.body:  # imports inside a module-level try/except are optional imports
            if isinstance(node, ast.Try):
                guarded |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                found.setdefault(n.split(".")[0], []).append(
                    (str(f.relative_to(ROOT)), node.lineno, id(node) in top_level and id(node) not in guarded)
                )
    return found


@pytest.mark.parametrize("pkg", PACKAGES, ids=[p.name for p in PACKAGES])
def test_imports_are_declared(pkg: Path):
    proj = _project(pkg)
    required = {_dist_name(r) for r in proj.get("dependencies", [])}
    optional = {_dist_name(r) for reqs in proj.get("optional-dependencies", {}).values() for r in reqs}
    own = {p.name for p in (pkg / "src").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    ok_required = set().union(*(DIST_MODULES.get(d, {d.replace("-", "_")}) for d in required)) | own
    ok_optional = set().union(*(DIST_MODULES.get(d, {d.replace("-", "_")}) for d in optional)) if optional else set()
    problems = []
    for mod, sites in _imports(pkg).items():
        if mod in sys.stdlib_module_names or mod in ok_required:
            continue
        for file, line, module_level in sites:
            if mod in APP_IMPORT_NAMES:
                problems.append(f"{file}:{line} imports another app ({mod})")
            elif mod in ok_optional and not module_level:
                continue  # optional extra imported lazily
            elif mod in ok_optional:
                problems.append(f"{file}:{line} imports optional '{mod}' at module level (import it lazily)")
            else:
                problems.append(f"{file}:{line} imports '{mod}', which {pkg.name}/pyproject.toml does not declare")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("pkg", PACKAGES, ids=[p.name for p in PACKAGES])
def test_no_module_level_torchvision_or_timm(pkg: Path):
    imports = _imports(pkg)
    bad = [f"{f}:{ln}" for m in ("torchvision", "timm") for f, ln, top in imports.get(m, []) if top]
    assert not bad, f"torchvision/timm must be imported lazily: {bad}"


@pytest.mark.parametrize("pkg", [p for p in PACKAGES if p.parent.name == "apps"], ids=lambda p: p.name)
def test_app_metadata_and_console_scripts(pkg: Path):
    proj = _project(pkg)
    assert proj.get("version"), "every package carries its own version"
    deps = {_dist_name(r) for r in proj.get("dependencies", [])}
    assert "metamixer" in deps, f"{pkg.name} must depend on core by name"
    core = next(r for r in proj["dependencies"] if _dist_name(r) == "metamixer")
    core_version = _project(ROOT / "packages" / "core")["version"]
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    spec = Requirement(core).specifier
    assert "~=" in str(spec), f"{pkg.name}: depend on core with a compatible-version specifier, not {core!r}"
    assert core_version in spec and "1.0.0" not in SpecifierSet(str(spec)), f"{pkg.name}: {core!r} vs core {core_version}"
    assert not any("+cpu" in r for r in proj.get("dependencies", [])), "never pin a +cpu torch build"
    scripts = proj.get("scripts", {})
    assert scripts, f"{pkg.name} defines no console scripts"
    for name, target in scripts.items():
        module, func = target.split(":")
        obj = getattr(importlib.import_module(module), func)
        assert callable(obj), f"console script {name} -> {target} is not callable"
        with pytest.raises(SystemExit) as exc:
            obj(["--help"])
        assert exc.value.code == 0, f"{name} --help exited with {exc.value.code}"
