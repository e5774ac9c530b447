"""Pixel-mode data: class-folder image datasets (ImageNet layout), scikit-learn digits, and image I/O helpers.

Images are mapped to [-1, 1] (the range the diffusion's discretised decoder likelihood assumes). The crop is
ADM's: downsample by 2 with a box filter while the short side is >= 2x the target (avoids aliasing), bicubic
resize of the short side to the target, centre crop.

Every user image is read through core's ``open_image`` (the one reader of all apps): EXIF orientation applied,
grey / palette / CMYK / 16-bit converted to RGB and RGBA composited on white, a pixel limit against
decompression bombs, and one message naming the file for anything unreadable (empty, truncated, not an image).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from metamixer.train.atomic import atomic_write
from metamixer.train.errors import FFNetError, SomeInputsFailed, for_each_input
from metamixer.train.images import DEFAULT_MAX_PIXELS, open_image

__all__ = ["IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS", "ImageFolderDataset", "DigitsDataset", "center_crop_arr",
           "list_images", "load_image", "to_uint8", "make_grid", "class_rows_grid", "save_png"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM / DiT centre crop to ``size`` x ``size`` (HWC uint8 array)."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def load_image(path: str | Path, channels: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image upright as RGB (channels=3) or L (channels=1); any unreadable file raises core's
    ImageReadError (an FFNetError) naming the file. Grey output goes through RGB so that transparent
    pixels turn white, as for colour models, not into whatever colour hides under the alpha channel."""
    rgb = open_image(path, "RGB", max_pixels=max_pixels)
    return rgb if channels == 3 else rgb.convert("L")


def list_images(root: str | Path) -> list[Path]:
    """All image files below ``root`` (sorted), by extension."""
    root = Path(root)
    if not root.is_dir():
        raise FFNetError(f"image folder not found: {root}" if not root.exists() else
                         f"{root}: is a file, expected a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FFNetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return files


class ImageFolderDataset(Dataset):
    """``root/<class_name>/*.png|jpg...`` -> (image in [-1, 1] CHW float, label); classes sorted by name.

    A flat folder (no class sub-folders) gives label 0 for every image (unconditional data).
    """

    def __init__(self, root: str | Path, image_size: int, channels: int = 3, hflip: bool = True,
                 num_classes: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        root = Path(root)
        self.root, self.max_pixels = root, max_pixels
        files = list_images(root)
        class_dirs = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
        self.classes = class_dirs or ["all"]
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(p, index.get(p.relative_to(root).parts[0], 0) if class_dirs else 0) for p in files]
        if num_classes is not None and len(self.classes) > num_classes:
            raise FFNetError(f"{root} has {len(self.classes)} class folders but model.num_classes={num_classes}; "
                             "set model.num_classes to at least the number of classes")
        self.image_size, self.channels, self.hflip = image_size, channels, hflip

    def verify(self) -> None:
        """Decode every image once; each unreadable one is reported on its own line, then one FFNetError.

        Why before training and not when a batch first draws the file: a bad file found at step 90,000 would
        stop the run there, and only that one file would be named; found here, all of them are listed and
        nothing has started (no run folder). It costs one decode per image (measured: 0.25 ms for a 32x32 PNG,
        about 10 ms for a 500x375 JPEG on one busy core), which pixel mode, meant for small data sets, can
        afford; ImageNet-size sets go through latent mode (ffnet-gen-extract-latents reads each image once)."""
        files = [p for p, _ in self.samples]
        read: set[Path] = set()

        def check(path: Path) -> None:
            load_image(path, self.channels, self.max_pixels)
            read.add(path)

        try:
            for_each_input(files, check, what="image")
        except SomeInputsFailed:
            bad = [p for p in files if p not in read]
            raise FFNetError(f"{len(bad)} of {len(files)} images under {self.root} cannot be read (each listed "
                             f"above, first {bad[0]}): remove or re-encode them; training did not start") from None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        arr = center_crop_arr(load_image(path, self.channels, self.max_pixels), self.image_size)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.hflip and np.random.rand() < 0.5:
            arr = arr[:, ::-1]
        x = torch.from_numpy(np.array(arr)).permute(2, 0, 1).float() / 127.5 - 1.0  # a copy: writable
        return x, label


def digits_arrays(image_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits (1797 real images, 10 classes) as uint8 [N, S, S].

    The 0..16 intensities are rescaled to 0..255 and upsampled bilinearly to ``image_size``; ships inside the
    scikit-learn wheel, so the quick start runs offline on real data.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise FFNetError("the digits data needs scikit-learn (pip install scikit-learn)") from None
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    if image_size != 8:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1)[:, 0].numpy() * 255).round().astype(np.uint8), digits.target.astype(np.int64)


class DigitsDataset(Dataset):
    """Digits as (image [1, S, S] in [-1, 1], label); ``indices`` selects a split."""

    def __init__(self, image_size: int = 16, indices: Sequence[int] | None = None) -> None:
        images, labels = digits_arrays(image_size)
        if indices is not None:
            images, labels = images[np.asarray(indices)], labels[np.asarray(indices)]
        self.images = torch.from_numpy(images).float()[:, None] / 127.5 - 1.0
        self.labels = torch.from_numpy(labels)
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW tensor -> uint8 NHWC array (ADM's sample .npz layout)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 NHWC images into one HWC grid (white padding)."""
    n, h, w, c = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = images[i]
    return grid


def class_rows_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int = 10,
                    scale: int = 4) -> np.ndarray:
    """One row per class (row c: the first ``per_class`` samples conditioned on c, white where fewer), each
    image upscaled ``scale`` x with nearest neighbour so that 16x16 digits are readable on a screen."""
    n, h, w, c = images.shape
    blank = np.full((h, w, c), 255, dtype=np.uint8)
    tiles = []
    for cls in range(num_classes):
        row = list(images[np.asarray(labels) == cls][:per_class])
        tiles.extend(row + [blank] * (per_class - len(row)))
    big = np.stack(tiles).repeat(scale, axis=1).repeat(scale, axis=2)
    return make_grid(big, ncols=per_class, pad=2 * scale)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Save an HWC uint8 array (C in 1/3) as PNG, creating the folder; atomic (no half-written PNG on Ctrl-C)."""
    image = Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)
    return atomic_write(path, lambda handle: image.save(handle, format="PNG"))
