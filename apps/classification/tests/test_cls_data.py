"""Datasets and transforms: ImageFolder / CSV lists, bad images by path, mode conversion, empty classes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ffnet_classification.data import (
    BadImageError,
    EvalTransform,
    ImageFolder,
    ImageList,
    Mixup,
    TrainTransform,
    build_dataset,
    load_rgb,
)
from metamixer.train.errors import FFNetError


def _img(path: Path, mode: str = "RGB", size: tuple[int, int] = (20, 12), color=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if color is None:
        color = {"RGB": (200, 10, 30), "L": 77, "RGBA": (10, 20, 30, 0), "CMYK": (0, 255, 0, 0), "P": 3}[mode]
    Image.new(mode, size, color).save(path)
    return path


def _folder(root: Path) -> Path:
    _img(root / "cat" / "a.png")
    _img(root / "cat" / "b.jpg")
    _img(root / "dog" / "c.png", "L")
    return root


def test_image_folder_classes_and_samples(tmp_path: Path) -> None:
    ds = ImageFolder(_folder(tmp_path / "train"))
    assert ds.classes == ["cat", "dog"] and len(ds) == 3
    assert sorted(ds.targets) == [0, 0, 1]
    img, target = ds[2]
    assert img.mode == "RGB" and target == 1


def test_mode_conversions(tmp_path: Path) -> None:
    gray = load_rgb(_img(tmp_path / "g.png", "L"))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (77, 77, 77)
    # fully transparent pixels become white, not black
    rgba = load_rgb(_img(tmp_path / "a.png", "RGBA"))
    assert rgba.getpixel((0, 0)) == (255, 255, 255)
    cmyk = load_rgb(_img(tmp_path / "c.jpg", "CMYK"))
    r, g, b = cmyk.getpixel((0, 0))
    assert cmyk.mode == "RGB" and g < 60 and r > 200 and b > 200  # magenta
    p16 = tmp_path / "i16.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(p16)
    assert load_rgb(p16).getpixel((0, 0)) == (255, 255, 255)
    pal = load_rgb(_img(tmp_path / "p.png", "P"))
    assert pal.mode == "RGB"


def test_corrupt_image_reported_by_path_or_skipped(tmp_path: Path) -> None:
    root = _folder(tmp_path / "train")
    bad = root / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    truncated = root / "cat" / "trunc.png"
    data = (root / "cat" / "a.png").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    ds = ImageFolder(root)
    idx = [i for i, (p, _) in enumerate(ds.samples) if p == str(bad)][0]
    with pytest.raises(BadImageError, match="broken.jpg"):
        ds[idx]
    assert sorted(Path(p).name for p in ds.verify()) == ["broken.jpg", "trunc.png"]
    skipping = ImageFolder(root, on_bad_image="skip")
    img, _ = skipping[idx]
    assert img.mode == "RGB" and str(bad) in skipping.bad_paths
    with pytest.raises(FFNetError, match="on_bad_image"):
        ImageFolder(root, on_bad_image="ignore")


def test_empty_class_folder_is_an_error(tmp_path: Path) -> None:
    root = _folder(tmp_path / "train")
    (root / "empty_class").mkdir()
    with pytest.raises(FFNetError, match=r"contain no images: \['empty_class'\]"):
        ImageFolder(root)
    ds = ImageFolder(root, allow_empty=True)
    assert ds.classes == ["cat", "dog", "empty_class"]
    with pytest.raises(FFNetError, match="not found"):
        ImageFolder(tmp_path / "missing")
    flat = tmp_path / "flat"
    _img(flat / "x.png")
    with pytest.raises(FFNetError, match="one sub-folder per class"):
        ImageFolder(flat)


def test_val_folder_uses_train_classes(tmp_path: Path) -> None:
    train = ImageFolder(_folder(tmp_path / "train"))
    _img(tmp_path / "val" / "dog" / "v.png")
    val = ImageFolder(tmp_path / "val", classes=train.classes, allow_empty=True)
    assert val.targets == [1]
    _img(tmp_path / "val2" / "horse" / "v.png")
    with pytest.raises(FFNetError, match="horse"):
        ImageFolder(tmp_path / "val2", classes=train.classes)


def test_csv_and_txt_lists(tmp_path: Path) -> None:
    _folder(tmp_path / "imgs")
    (tmp_path / "list.csv").write_text("path,label\nimgs/cat/a.png,cat\nimgs/dog/c.png,dog\n")
    ds = build_dataset(tmp_path / "list.csv")
    assert isinstance(ds, ImageList) and ds.classes == ["cat", "dog"] and ds.targets == [0, 1]
    assert ds[1][0].mode == "RGB"
    (tmp_path / "list.txt").write_text("imgs/cat/a.png 2\nimgs/dog/c.png 0\n")
    ds = ImageList(tmp_path / "list.txt")
    assert ds.targets == [2, 0] and len(ds.classes) == 3
    (tmp_path / "bad.csv").write_text("imgs/cat/a.png,cat\nimgs/dog/c.png\n")
    with pytest.raises(FFNetError, match="bad.csv:2"):
        ImageList(tmp_path / "bad.csv")
    (tmp_path / "unk.csv").write_text("imgs/cat/a.png,cat\n")
    with pytest.raises(FFNetError, match="unknown class 'cat'"):
        ImageList(tmp_path / "unk.csv", classes=["dog"])


def test_eval_transform_resize_and_center_crop() -> None:
    img = Image.new("RGB", (300, 200), (255, 0, 0))
    x = EvalTransform(size=64, crop_pct=0.875)(img)
    assert x.shape == (3, 64, 64)
    want = (1.0 - 0.485) / 0.229
    assert torch.allclose(x[0], torch.full((64, 64), want), atol=1e-3)


def test_train_transform_shapes_and_randomness() -> None:
    torch.manual_seed(0)
    arr = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(arr)
    tf = TrainTransform(size=32, rand_n=2, rand_m=9, rand_mstd=0.5, reprob=0.5)
    a, b = tf(img), tf(img)
    assert a.shape == b.shape == (3, 32, 32)
    assert not torch.equal(a, b)
    assert torch.isfinite(a).all()


def test_mixup_cutmix_targets_are_distributions() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16)
    y = torch.arange(8) % 4
    for kw in ({"mixup_alpha": 0.8, "cutmix_alpha": 0.0}, {"mixup_alpha": 0.0, "cutmix_alpha": 1.0}):
        xm, t = Mixup(4, label_smoothing=0.1, **kw)(x, y)
        assert xm.shape == x.shape and t.shape == (8, 4)
        assert torch.allclose(t.sum(1), torch.ones(8))
        assert not torch.equal(xm, x)
    xm, t = Mixup(4, mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.1)(x, y)
    assert torch.equal(xm, x) and torch.allclose(t.max(1).values, torch.full((8,), 0.925))
