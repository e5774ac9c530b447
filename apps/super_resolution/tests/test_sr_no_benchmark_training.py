"""Nothing the project ships trains on an evaluation set: not the quick start, not a recipe, not a test.

The guard (:mod:`ffnet_sr.data.benchmark_guard`) refuses such a run at start; these tests check the shipped
choices themselves, so a slip is caught here, by name, before anyone runs anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ffnet_sr.config import RECIPES_DIR, SRConfig, resolve_data_dir
from ffnet_sr.data.benchmark_guard import BENCHMARK_SETS, benchmark_by_name, check_training_dirs
from ffnet_sr.quickstart import EVAL_SETS, TRAIN_DIR, quickstart_overrides
from metamixer.train.config import load_config

TESTS = Path(__file__).resolve().parent
ROOT_TESTS = TESTS.parents[2] / "tests"
#: the one file allowed to train on a benchmark, to test the guard's refusal and its override
GUARD_TESTS = "test_sr_benchmark_guard.py"
#: every evaluation set the literature reports, spelled as folders might be
EVAL_NAMES = {"set5", "set14", "b100", "bsd100", "urban100", "manga109"}


def _names_a_benchmark(folder: str) -> bool:
    return benchmark_by_name(folder) is not None or any(p.lower() in EVAL_NAMES for p in Path(folder).parts)


def test_benchmark_list_covers_the_paper_table():
    assert set(BENCHMARK_SETS) == {"Set5", "Set14", "B100", "Urban100", "Manga109"}


def test_quick_start_trains_on_t91_and_scores_the_benchmarks(tmp_path):
    assert TRAIN_DIR == "sr/T91/HR" and not _names_a_benchmark(TRAIN_DIR)
    assert tuple(EVAL_SETS) == ("Set5", "Set14", "B100")
    assert not {s.lower() for s in EVAL_SETS} & {p.lower() for p in Path(TRAIN_DIR).parts}
    cfg = load_config(SRConfig, None, quickstart_overrides(tmp_path))
    assert cfg.data.train_dirs == [TRAIN_DIR] and cfg.data.allow_benchmark_training is False


def test_quick_start_training_folder_passes_the_guard_on_real_data(t91):
    folder = resolve_data_dir(TRAIN_DIR)
    assert folder.resolve() == t91.resolve()
    assert check_training_dirs([folder], eval_folders=EVAL_SETS) == []  # path, name and pixel content


RECIPES = sorted(RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR else []


def test_there_are_recipes_to_check():
    assert {p.stem for p in RECIPES} >= {"cpu_t91_x2", "ffnetsr_light_div2k_x2", "ffnetsr_df2k_x2"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_no_recipe_trains_on_a_benchmark(recipe):
    cfg = load_config(SRConfig, recipe)
    assert cfg.data.train_dirs, recipe
    for folder in cfg.data.train_dirs:
        assert not _names_a_benchmark(folder), (recipe.name, folder)
    assert cfg.data.allow_benchmark_training is False, recipe.name
    assert "allow_benchmark_training" not in recipe.read_text()


def test_paper_recipes_train_on_div2k_or_df2k():
    by_name = {p.stem: load_config(SRConfig, p).data.train_dirs for p in RECIPES}
    assert by_name["ffnetsr_light_div2k_x2"] == ["DIV2K/DIV2K_train_HR"]
    assert by_name["ffnetsr_light_paper_x2"] == ["DIV2K/DIV2K_train_HR"]
    assert by_name["ffnetsr_df2k_x2"] == ["DIV2K/DIV2K_train_HR", "Flickr2K/Flickr2K_HR"]
    assert by_name["cpu_t91_x2"] == [TRAIN_DIR]


def _sr_test_files() -> list[Path]:
    files = sorted(TESTS.glob("test_*.py"))
    if ROOT_TESTS.is_dir():  # the repository's cross-app tests that run SR commands
        files += [f for f in sorted(ROOT_TESTS.glob("test_*.py")) if re.search(r"ffnet[-_]sr", f.read_text())]
    return files


# a training folder in a test: an override "data.train_dirs=[...]" or YAML "train_dirs: [...]"
_TRAIN_DIRS = re.compile(r"train_dirs\s*[=:]\s*\[([^\]]*)\]")
_ALLOW = re.compile(r"allow_benchmark_training\s*[=:]\s*true", re.IGNORECASE)


def test_no_test_trains_on_a_benchmark():
    files = _sr_test_files()
    assert TESTS / "test_sr_train.py" in files and TESTS / "test_sr_cli.py" in files
    seen = 0
    for f in files:
        if f.name == GUARD_TESTS:
            continue
        text = f.read_text()
        # the override is what lets a benchmark through the guard: only the guard's own tests may set it
        assert not _ALLOW.search(text), f.name
        for match in _TRAIN_DIRS.finditer(text):
            for folder in (s.strip(" '\"") for s in match.group(1).split(",")):
                seen += 1
                assert not _names_a_benchmark(folder), (f.name, folder)
    assert seen >= 4  # the scan does see the tests' training folders (test_sr_train, test_sr_cli, ...)
