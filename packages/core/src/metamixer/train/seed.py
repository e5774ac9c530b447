"""Seeding and determinism: one call makes a run repeatable.

Seeds Python's ``random``, NumPy's global RNG and torch (CPU and all CUDA devices). With
``deterministic=True`` torch is also asked for deterministic kernels (``warn_only`` so an op without a
deterministic implementation warns instead of crashing a long run) and cuDNN autotuning is turned off.
DataLoader workers get distinct but reproducible seeds via :func:`seed_worker` + :func:`make_generator`.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything", "seed_worker", "make_generator"]


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed python/numpy/torch(+CUDA) with ``seed`` and toggle deterministic algorithms; returns the seed."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)  # inherited by subprocesses (e.g. spawned workers)
    if deterministic:
        # cuBLAS needs this set before the first GEMM for deterministic results on CUDA >= 10.2
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Only touch the global switch when it changes: the call imports torch._inductor (5-20 s per process),
    # which every test and every torchrun rank would otherwise pay.
    if deterministic != torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False
    return seed


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=seed_worker)``: derive numpy/python seeds from torch's per-worker seed.

    torch already gives each worker ``base_seed + worker_id``; numpy and ``random`` would otherwise be
    forked with identical state in every worker and produce the same "random" augmentations.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_generator(seed: int) -> torch.Generator:
    """A seeded CPU ``torch.Generator`` for ``DataLoader(generator=...)`` / samplers, independent of the global RNG."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator
