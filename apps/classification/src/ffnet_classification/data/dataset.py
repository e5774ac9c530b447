"""Image datasets without torchvision: an ImageFolder layout and a CSV/txt list format, decoded with PIL.

Every image goes through core's :func:`metamixer.train.images.open_image`, the reader every app shares: EXIF
orientation applied (a phone photo is trained, scored and predicted upright), grey / palette / RGBA (composited
on white) / CMYK / 16-bit converted to RGB, and a pixel limit that refuses decompression bombs before decoding.

Bad input is handled explicitly because ImageNet-scale folders always contain some: an unreadable, truncated or
oversized file is a :class:`BadImageError` naming it. ``on_bad_image="error"`` (the default) stops on it,
``"skip"`` leaves it out. Plain indexing (``ds[i]``) keeps the old contract (raise, or under ``skip`` return
the next readable sample); the loaders of training and evaluation use :class:`ReportBadImages` and
:func:`collate_reporting` instead, so every bad file reaches the main process by name (a DataLoader worker's
exception would arrive wrapped in its traceback text) and can be listed, not silently replaced.
"""
from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile
from torch.utils.data import Dataset, default_collate

from metamixer.train.errors import FFNetError
from metamixer.train.images import DEFAULT_MAX_PIXELS, ImageReadError, open_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".jfif")
BAD_IMAGE_POLICIES = ("error", "skip")

# Do not let PIL silently return half-decoded truncated JPEGs: they must be reported as bad.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImageError(ImageReadError):
    """An image file that cannot be used (missing, empty, not an image, truncated, too many pixels); the
    message starts with the file's path."""


def load_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, exif: bool = True) -> Image.Image:
    """Decode ``path`` fully and return an upright RGB PIL image (core's ``open_image``; every failure is a
    :class:`BadImageError` naming the file)."""
    try:
        return open_image(path, "RGB", max_pixels=max_pixels, exif=exif)
    except ImageReadError as exc:
        raise BadImageError(str(exc)) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an already decoded PIL image of any mode to RGB the way a user expects (transparent pixels become
    white, not black; 16-bit grey scaled, not clipped). Files are read with :func:`load_rgb` instead."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bit instead of clipping everything above 255 to white
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 / 65535.0 if float(arr.max(initial=0.0)) > 255 else 1.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, F, ...


def bad_reason(path: str, exc: Exception) -> str:
    """The message of a bad-image error without its leading ``path:`` (the path is listed beside it)."""
    text = " ".join(str(exc).split())
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


def is_image_file(path: Path) -> bool:
    """An image by extension, not a hidden file (macOS ``._x.jpg`` resource forks are not images)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


class ClassificationDataset(Dataset):
    """A list of ``(path, label)`` samples with class names; base of the folder and list formats."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
        on_bad_image: str = "error",
        source: str = "",
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        exif: bool = True,
    ) -> None:
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise FFNetError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        if not samples:
            raise FFNetError(f"{source or 'dataset'}: no images found (extensions: {', '.join(IMAGE_EXTENSIONS)})")
        self.samples = list(samples)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [t for _, t in self.samples]
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.source = source
        self.max_pixels = max_pixels
        self.exif = exif
        self.bad_paths: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, int]:
        path, target = self.samples[index]
        return load_rgb(path, self.max_pixels, self.exif), target

    def read(self, index: int) -> tuple[Any, int]:
        """Sample ``index`` transformed; a :class:`BadImageError` whatever the policy."""
        img, target = self.load(index)
        return (self.transform(img) if self.transform is not None else img), target

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for attempt in range(len(self.samples)):
            i = (index + attempt) % len(self.samples)
            try:
                return self.read(i)
            except BadImageError as exc:
                if self.on_bad_image == "error":
                    raise
                path = self.samples[i][0]
                if path not in self.bad_paths:
                    self.bad_paths.add(path)
                    log.warning("skipping %s", exc)
        raise FFNetError(f"{self.source}: none of its {len(self.samples)} images is readable")

    def verify(self) -> list[str]:
        """Decode every image once; returns the unreadable paths (use before a long run)."""
        bad = []
        for path, _ in self.samples:
            try:
                load_rgb(path, self.max_pixels, self.exif)
            except BadImageError:
                bad.append(path)
        return bad


class ImageFolder(ClassificationDataset):
    """``root/<class>/**/<image>`` — classes are the sorted sub-folder names (ImageNet / timm layout).

    Empty class folders are an error by default: a class that silently has no images shifts nothing but makes
    the head larger and the metrics misleading. ``allow_empty=True`` keeps them (e.g. a val split subset).
    ``classes`` forces a class list (e.g. the train split's) so train and val indices agree.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[Image.Image], Any] | None = None,
        on_bad_image: str = "error",
        classes: Sequence[str] | None = None,
        allow_empty: bool = False,
        **read: Any,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FFNetError(f"dataset folder not found: {root}")
        found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not found:
            raise FFNetError(f"{root}: expected one sub-folder per class (root/<class>/<image>), found none")
        if classes is None:
            classes = found
        else:
            extra = sorted(set(found) - set(classes))
            if extra:
                raise FFNetError(f"{root}: class folders {extra[:5]} are not among the {len(classes)} known classes")
        samples: list[tuple[str, int]] = []
        empty: list[str] = []
        for idx, cls in enumerate(classes):
            folder = root / cls
            files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)) if folder.is_dir() else []
            if not files:
                empty.append(cls)
            samples += [(str(p), idx) for p in files]
        if empty and not allow_empty:
            raise FFNetError(
                f"{root}: {len(empty)} class folder(s) contain no images: {empty[:5]} "
                f"(remove them, or set allow_empty=True / data.allow_empty_classes=true)"
            )
        super().__init__(samples, classes, transform, on_bad_image, source=str(root), **read)
        self.root = root


class ImageList(ClassificationDataset):
    """A CSV/txt list: one ``path,label`` (or ``path label``) per line; ``label`` is an index or a class name.

    Relative paths are resolved against ``root`` (default: the list file's folder). A header line
    ``path,label`` is skipped. Class names come from ``classes`` or, for name labels, their sorted set.
    """

    def __init__(
        self,
        list_file: str | os.PathLike,
        root: str | os.PathLike | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        on_bad_image: str = "error",
        classes: Sequence[str] | None = None,
        **read: Any,
    ) -> None:
        list_file = Path(list_file)
        if not list_file.is_file():
            raise FFNetError(f"image list not found: {list_file}")
        base = Path(root) if root is not None else list_file.parent
        rows: list[tuple[str, str, int]] = []
        with open(list_file, newline="") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = next(csv.reader([line])) if "," in line else line.rsplit(None, 1)
                parts = [p.strip() for p in parts]
                if len(parts) != 2:
                    raise FFNetError(f"{list_file}:{lineno}: expected 'path,label', got {line!r}")
                if lineno == 1 and parts[1].lower() in ("label", "class", "target"):
                    continue
                rows.append((parts[0], parts[1], lineno))
        numeric = all(label.lstrip("-").isdigit() for _, label, _ in rows)
        if classes is None:
            if numeric:
                n = max((int(label) for _, label, _ in rows), default=-1) + 1
                classes = [str(i) for i in range(n)]
            else:
                classes = sorted({label for _, label, _ in rows})
        index = {c: i for i, c in enumerate(classes)}
        samples = []
        for path, label, lineno in rows:
            if numeric:
                target = int(label)
                if not 0 <= target < len(classes):
                    raise FFNetError(f"{list_file}:{lineno}: label {target} outside 0..{len(classes) - 1}")
            elif label in index:
                target = index[label]
            else:
                raise FFNetError(f"{list_file}:{lineno}: unknown class {label!r}")
            p = Path(path)
            samples.append((str(p if p.is_absolute() else base / p), target))
        super().__init__(samples, classes, transform, on_bad_image, source=str(list_file), **read)


def build_dataset(
    path: str | os.PathLike,
    transform: Callable[[Image.Image], Any] | None = None,
    on_bad_image: str = "error",
    classes: Sequence[str] | None = None,
    allow_empty: bool = False,
    root: str | os.PathLike | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif: bool = True,
) -> ClassificationDataset:
    """A folder -> :class:`ImageFolder`; a ``.csv``/``.txt`` file -> :class:`ImageList`. ``max_pixels`` and
    ``exif`` are passed to :func:`load_rgb` for every image."""
    p = Path(path)
    read = {"max_pixels": max_pixels, "exif": exif}
    if p.is_dir():
        return ImageFolder(p, transform, on_bad_image, classes, allow_empty, **read)
    if p.is_file():
        return ImageList(p, root, transform, on_bad_image, classes, **read)
    raise FFNetError(f"dataset path not found: {p} (expected a class-folder root or a .csv/.txt list)")


# ------------------------------------------------------------------------------- loaders that report bad files
class ReportBadImages(Dataset):
    """``dataset`` for a DataLoader: item ``i`` is ``(sample or None, [(path, reason), ...])``.

    ``replace=True`` (training under ``skip``): a bad image is replaced by the next readable one, so every batch
    keeps its size and a resumed run sees the same batches; the skipped paths still come back. ``replace=False``
    (evaluation, and training under ``error``): the sample is ``None`` and is left out of the batch. Either way
    the main process learns every bad file by name through :func:`collate_reporting`.
    """

    def __init__(self, dataset: ClassificationDataset, replace: bool) -> None:
        self.dataset, self.replace = dataset, replace

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, list[tuple[str, str]]]:
        ds, bad = self.dataset, []
        for attempt in range(len(ds) if self.replace else 1):
            i = (index + attempt) % len(ds)
            try:
                return ds.read(i), bad
            except BadImageError as exc:
                path = ds.samples[i][0]
                bad.append((path, bad_reason(path, exc)))
        return None, bad


def collate_reporting(items: Sequence[tuple[Any, list[tuple[str, str]]]]) -> tuple[Any, Any, list[tuple[str, str]]]:
    """``(images, targets, bad)``: the readable samples batched (``None, None`` when there is none) and every
    ``(path, reason)`` met while loading this batch."""
    good = [sample for sample, _ in items if sample is not None]
    bad = [entry for _, entries in items for entry in entries]
    if not good:
        return None, None, bad
    images, targets = default_collate(good)
    return images, targets, bad


def describe_bad_images(bad: Sequence[tuple[str, str]], total: int, source: str, limit: int = 10) -> str:
    """One line: how many of ``total`` images of ``source`` are unusable, the first ``limit`` with their reason."""
    unique = dict(bad)
    shown = "; ".join(f"{path} ({reason})" for path, reason in list(unique.items())[:limit])
    more = f"; ... and {len(unique) - limit} more" if len(unique) > limit else ""
    return f"{source}: {len(unique)} of {total} images are unreadable: {shown}{more}"
