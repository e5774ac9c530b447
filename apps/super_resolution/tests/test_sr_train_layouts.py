"""Training-folder layouts: HR only (T91 style, LR made on the fly) and HR/LR pairs (EDSR, DIV2K) give the same
patches when the paired LR files are what our MATLAB-exact imresize makes of the HR mod-crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ffnet_sr.config import SRConfig
from ffnet_sr.data.dataset import SRTrainDataset, find_lr_dir, hr_folder, mod_crop
from ffnet_sr.imresize import imresize
from ffnet_sr.task import build_dataset
from metamixer.train.config import load_config

# sizes that are not multiples of 2 or 3, so the mod-crop matters; smooth content plus noise, like a photo
_SIZES = {"a": (75, 61), "b": (64, 91), "c": (101, 77)}


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    out = {}
    for name, (h, w) in _SIZES.items():
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 100 * np.sin(xx / 7 + c) * np.cos(yy / 5 - c) for c in range(3)], axis=2)
        out[name] = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).round().astype(np.uint8)
    return out


def _write(folder: Path, images: dict[str, np.ndarray], ext: str, scale: int | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        if scale is None:
            Image.fromarray(img).save(folder / f"{name}{ext}")
        else:  # the LR file: imresize of the HR mod-crop, as MATLAB made the DIV2K / benchmark LR files
            Image.fromarray(imresize(mod_crop(img, scale), 1.0 / scale)).save(folder / f"{name}x{scale}{ext}")


@pytest.fixture
def layouts(tmp_path: Path) -> dict[str, Path]:
    images = _images()
    _write(tmp_path / "T91like" / "HR", images, ".bmp")  # HR only, as T91
    _write(tmp_path / "edsr" / "HR", images, ".png")
    _write(tmp_path / "DIV2K_train_HR", images, ".png")
    for scale in (2, 3):
        _write(tmp_path / "edsr" / "LR_bicubic" / f"X{scale}", images, ".png", scale)
        _write(tmp_path / "DIV2K_train_LR_bicubic" / f"X{scale}", images, ".png", scale)
    return {"hr_only": tmp_path / "T91like" / "HR", "hr_only_root": tmp_path / "T91like",
            "edsr": tmp_path / "edsr" / "HR", "div2k": tmp_path / "DIV2K_train_HR"}


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("cache", [False, True], ids=["no_cache", "cache"])
def test_hr_only_and_paired_folders_give_identical_patches(layouts, scale, cache):
    kwargs = dict(scale=scale, patch_size=16, augment=True, cache_images=cache, seed=5)
    datasets = {k: SRTrainDataset([d], **kwargs) for k, d in layouts.items()}
    # the HR-only folders really generate their LR; the paired ones really read the LR files
    assert all(lr is None for _, lr in datasets["hr_only"].items + datasets["hr_only_root"].items)
    assert all(lr is not None and lr.parent.name == f"X{scale}" for _, lr in datasets["edsr"].items)
    assert all(lr is not None and "DIV2K_train_LR_bicubic" in str(lr) for _, lr in datasets["div2k"].items)
    for k in range(12):  # 4 passes over the 3 images: every image, several crops and flips
        want_lr, want_hr = datasets["hr_only"][k]
        assert want_lr.shape == (3, 16, 16) and want_hr.shape == (3, 16 * scale, 16 * scale)
        for name in ("hr_only_root", "edsr", "div2k"):
            lr, hr = datasets[name][k]
            assert torch.equal(lr, want_lr) and torch.equal(hr, want_hr), (name, k)


def test_accepted_layouts_are_found(layouts, tmp_path):
    assert hr_folder(layouts["hr_only_root"]) == layouts["hr_only"]  # a set root means its HR/ subfolder
    assert hr_folder(layouts["edsr"]) == layouts["edsr"]
    assert find_lr_dir(layouts["hr_only"], 2) is None
    assert find_lr_dir(layouts["edsr"], 3) == tmp_path / "edsr" / "LR_bicubic" / "X3"
    assert find_lr_dir(layouts["div2k"], 2) == tmp_path / "DIV2K_train_LR_bicubic" / "X2"
    # DF2K: two folders in one list (here the same images twice), each with its own LR source
    df2k = SRTrainDataset([layouts["div2k"], layouts["hr_only"]], 2, patch_size=16)
    assert len(df2k) == 6 and [lr is None for _, lr in df2k.items] == [False] * 3 + [True] * 3


def test_t91_trains_from_its_hr_folder(t91, tmp_path):
    """The real T91 (HR-only BMPs) through the config path, given as its set root: 91 images, LR generated."""
    cfg = load_config(SRConfig, None, [f"data.train_dirs=[{t91.parent}]", "model.scale=2", "data.patch_size=32",
                                       "data.val_sets=[]", f"run.output_dir={tmp_path}"])
    ds = build_dataset(cfg)
    assert len(ds) == 91 and all(lr is None for _, lr in ds.items) and ds.notes == []
    assert {p.parent for p, _ in ds.items} == {t91}
    lr, hr = ds[0]
    assert lr.shape == (3, 32, 32) and hr.shape == (3, 64, 64)
