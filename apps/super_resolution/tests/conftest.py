"""Shared fixtures: the real SR data (benchmarks and the T91 training set; skipped with a reason when absent), a
small T91 training folder, and the thread count."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from metamixer.train.datadir import data_root


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors run fastest single-threaded (and a shared CI box suffers from OpenMP oversubscription);
    the training test sets its own 2 threads through the config and is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sr_data() -> Path:
    root = data_root() / "sr"
    if not (root / "Set5" / "HR").is_dir():
        pytest.skip(f"SR benchmark data not found under {root} (set FFNET_DATA)")
    return root


@pytest.fixture(scope="session")
def t91() -> Path:
    """The T91 training set (HR only), the one the quick start and the tests train on."""
    folder = data_root() / "sr" / "T91" / "HR"
    if not folder.is_dir():
        pytest.skip(f"T91 training images not found under {folder} (set FFNET_DATA)")
    return folder


@pytest.fixture
def t91_five(t91: Path, tmp_path: Path) -> Path:
    """Five T91 images in a folder of their own: small runs whose epochs are a few batches long (5 images in
    batches of 2 = 3 batches per epoch), trained on a training set, never on a benchmark."""
    folder = tmp_path / "t91_five"
    folder.mkdir()
    for name in ("t1.bmp", "t2.bmp", "t3.bmp", "t5.bmp", "t8.bmp"):
        shutil.copy(t91 / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def official_manifests() -> Path:
    from metamixer.train.datadir import find_repo_root

    repo = find_repo_root()
    candidates = [Path(repo).parent / "shared" / "reference" / "official_state_dicts"] if repo else []
    candidates.append(data_root().parent / "reference" / "official_state_dicts")
    for c in candidates:
        if c.is_dir():
            return c
    pytest.skip("official_state_dicts manifests not found (../shared/reference)")
