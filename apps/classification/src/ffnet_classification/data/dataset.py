"""Image datasets without torchvision: an ImageFolder layout and a CSV/txt list format, decoded with PIL.

Bad input is handled explicitly because ImageNet-scale folders always contain some: unreadable or truncated
files are reported by path and either raise (``on_bad_image="error"``, the default) or are skipped
(``"skip"``: the sample is replaced by the next readable one and the path is logged once). Grayscale, palette,
RGBA/LA (composited on white), CMYK and 16-bit images are converted to RGB.
"""
from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError
from torch.utils.data import Dataset

from metamixer.train.errors import FFNetError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".jfif")
BAD_IMAGE_POLICIES = ("error", "skip")

# Do not let PIL silently return half-decoded truncated JPEGs: they must be reported as bad.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImageError(FFNetError):
    """An image file that PIL cannot decode; the message names the file."""


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully and return an RGB PIL image (any mode converted; alpha composited on white)."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise BadImageError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadImageError(f"unreadable image {path}: {exc}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB the way a user expects (transparent pixels become white, not black)."""
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


def _is_image(path: Path) -> bool:
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
        self.bad_paths: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, int]:
        path, target = self.samples[index]
        return load_rgb(path), target

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for attempt in range(len(self.samples)):
            i = (index + attempt) % len(self.samples)
            try:
                img, target = self.load(i)
            except BadImageError as exc:
                if self.on_bad_image == "error":
                    raise
                path = self.samples[i][0]
                if path not in self.bad_paths:
                    self.bad_paths.add(path)
                    log.warning("skipping %s", exc)
                continue
            return (self.transform(img) if self.transform is not None else img), target
        raise FFNetError(f"{self.source}: no readable image at all")

    def verify(self) -> list[str]:
        """Decode every image once; returns the unreadable paths (use before a long run)."""
        bad = []
        for path, _ in self.samples:
            try:
                load_rgb(path)
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
            files = sorted(p for p in folder.rglob("*") if p.is_file() and _is_image(p)) if folder.is_dir() else []
            if not files:
                empty.append(cls)
            samples += [(str(p), idx) for p in files]
        if empty and not allow_empty:
            raise FFNetError(
                f"{root}: {len(empty)} class folder(s) contain no images: {empty[:5]} "
                f"(remove them, or set allow_empty=True / data.allow_empty_classes=true)"
            )
        super().__init__(samples, classes, transform, on_bad_image, source=str(root))
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
        super().__init__(samples, classes, transform, on_bad_image, source=str(list_file))


def build_dataset(
    path: str | os.PathLike,
    transform: Callable[[Image.Image], Any] | None = None,
    on_bad_image: str = "error",
    classes: Sequence[str] | None = None,
    allow_empty: bool = False,
    root: str | os.PathLike | None = None,
) -> ClassificationDataset:
    """A folder -> :class:`ImageFolder`; a ``.csv``/``.txt`` file -> :class:`ImageList`."""
    p = Path(path)
    if p.is_dir():
        return ImageFolder(p, transform, on_bad_image, classes, allow_empty)
    if p.is_file():
        return ImageList(p, root, transform, on_bad_image, classes)
    raise FFNetError(f"dataset path not found: {p} (expected a class-folder root or a .csv/.txt list)")
