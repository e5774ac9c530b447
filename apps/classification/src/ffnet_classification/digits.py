"""A real, offline image dataset for the quick start and tests: scikit-learn's bundled 8x8 digits.

The 1,797 scans (10 classes) are upsampled bicubically and written as grayscale PNGs in the ImageFolder
layout (``train/<digit>/*.png``, ``val/<digit>/*.png``, stratified 80/20 split with a fixed seed), so the
whole pipeline — PIL decoding, grayscale->RGB conversion, transforms, training — runs on real files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from metamixer.train.errors import FFNetError


def write_digits_imagefolder(root: str | os.PathLike, size: int = 32, val_fraction: float = 0.2,
                             seed: int = 0) -> dict[str, int]:
    """Write the digits as ``root/{train,val}/<digit>/<index>.png``; returns image counts per split.

    Idempotent: an existing complete folder is reused (the file count is checked).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise FFNetError("the digits quick start needs scikit-learn (pip install ffnet-classification[quickstart])") from None
    digits = load_digits()
    images = digits.images  # [N, 8, 8] floats in 0..16
    labels = digits.target
    rng = np.random.default_rng(seed)
    val_mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        val_mask[idx[: int(round(len(idx) * val_fraction))]] = True
    root = Path(root)
    counts = {"train": int((~val_mask).sum()), "val": int(val_mask.sum())}
    existing = sum(1 for _ in root.glob("*/*/*.png")) if root.is_dir() else 0
    if existing == len(labels):
        return counts
    for i, (img, label) in enumerate(zip(images, labels)):
        split = "val" if val_mask[i] else "train"
        folder = root / split / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        pix = Image.fromarray(np.clip(img * (255.0 / 16.0), 0, 255).astype(np.uint8), mode="L")
        pix.resize((size, size), Image.BICUBIC).save(folder / f"{i:04d}.png")
    return counts
