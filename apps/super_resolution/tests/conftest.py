"""Shared fixtures: the real SR benchmark data (skipped with a reason when absent) and thread count."""

from __future__ import annotations

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
def official_manifests() -> Path:
    from metamixer.train.datadir import find_repo_root

    repo = find_repo_root()
    candidates = [Path(repo).parent / "shared" / "reference" / "official_state_dicts"] if repo else []
    candidates.append(data_root().parent / "reference" / "official_state_dicts")
    for c in candidates:
        if c.is_dir():
            return c
    pytest.skip("official_state_dicts manifests not found (../shared/reference)")
