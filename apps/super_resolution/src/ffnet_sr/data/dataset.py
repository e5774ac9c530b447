"""Paired SR data: random training patches and whole-image benchmark pairs.

Training folder layouts (one entry of ``data.train_dirs`` each; ``<stem>x<s>.png`` LR names, as in EDSR/BasicSR):

- HR only, e.g. T91 (``T91/HR/t1.bmp``) or any folder of images: LR generated with the MATLAB-exact bicubic
  from the mod-``s`` crop of each HR image; a folder that has no images but an ``HR/`` subfolder means that
  subfolder (``sr/T91`` = ``sr/T91/HR``);
- EDSR style: ``<set>/HR/<name>.png`` + ``<set>/LR_bicubic/X<s>/<name>x<s>.png``;
- DIV2K: ``DIV2K_train_HR/0001.png`` + ``DIV2K_train_LR_bicubic/X<s>/0001x<s>.png``;
- Flickr2K: ``Flickr2K_HR/…`` + ``Flickr2K_LR_bicubic/X<s>/…``; DF2K = both folders listed together (or one
  merged ``DF2K_HR`` + ``DF2K_LR_bicubic/X<s>``: any ``<name>_HR`` folder pairs with ``<name>_LR_bicubic``).

With ``lr_source="auto"`` the sibling LR folder is used when it exists, else the LR is generated; the two give
the same patches bit for bit when the LR files are MATLAB downscales (tested on files made with our imresize
and on the benchmark copies' MATLAB files).

On-the-fly LR is EXACT, not an approximation: a training patch is cut from the LR image that
``imresize(HR mod-crop, 1/s)`` would give, by downscaling only an HR window a few LR pixels wider than the patch
(the bicubic kernel reaches 2 LR pixels; windows are clipped at the true image border, where the edge clamp
then behaves as on the full image). So ``lr_source`` choices give identical pixels where provided LR files are
MATLAB downscales, and training costs one small resize per patch instead of a full-image resize.

Determinism: sample ``k`` of the run (global index, see :func:`sample_indices`) picks its image from a
permutation of all images seeded by ``(seed, k // images)`` and its crop/augmentation from a generator seeded by
``(seed, k)``. Batches therefore depend only on (seed, epoch, batch of the epoch), never on worker count or on
whether the run was resumed, which is what makes resume == uninterrupted (:class:`EpochBatchSampler`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from metamixer.train.errors import FFNetError
from metamixer.train.images import image_size

from ..imresize import imresize
from .io import list_images, read_rgb_or_grey

__all__ = [
    "find_lr_dir",
    "hr_folder",
    "mod_crop",
    "to_rgb",
    "SRTrainDataset",
    "EpochBatchSampler",
    "epoch_steps",
    "sample_indices",
    "BenchmarkPair",
    "load_benchmark",
    "resolve_set_dir",
    "augment_pair",
    "uint8_to_tensor",
]

#: LR margin (in LR pixels) of the HR window used for exact on-the-fly downscaling; the cubic kernel needs 2.
_LR_MARGIN = 3


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Top-left crop to a multiple of ``scale`` (how every benchmark's LR files were made)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_rgb(img: np.ndarray) -> np.ndarray:
    """Grey ``HW`` -> ``HWC`` with the value replicated (the network is RGB-in/RGB-out)."""
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return img


def uint8_to_tensor(img: np.ndarray) -> torch.Tensor:
    """``HWC`` uint8 -> ``CHW`` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


def find_lr_dir(hr_dir: Path, scale: int) -> Path | None:
    """Sibling LR folder of an HR folder in the EDSR / DIV2K / Flickr2K layouts, or None if absent."""
    hr_dir = Path(hr_dir)
    candidates = []
    if hr_dir.name == "HR":
        candidates.append(hr_dir.parent / "LR_bicubic" / f"X{scale}")
    if hr_dir.name.endswith("_HR"):
        candidates.append(hr_dir.parent / f"{hr_dir.name[:-3]}_LR_bicubic" / f"X{scale}")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def hr_folder(folder: Path) -> Path:
    """The folder of HR images a training entry means: itself, or its ``HR/`` subfolder when it holds no images
    but has one (a set root such as ``sr/T91``)."""
    if not folder.is_dir():
        raise FFNetError(f"training HR folder not found: {folder}")
    if not list_images(folder) and (folder / "HR").is_dir():
        return folder / "HR"
    return folder


def _lr_path(lr_dir: Path, stem: str, scale: int) -> Path:
    for ext in (".png", ".bmp", ".jpg"):
        p = lr_dir / f"{stem}x{scale}{ext}"
        if p.is_file():
            return p
    raise FFNetError(f"LR file for {stem!r} not found in {lr_dir} (expected {stem}x{scale}.png)")


def augment_pair(
    lr: np.ndarray, hr: np.ndarray, hflip: bool, vflip: bool, transpose: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the same flip/transpose to both (the 8 dihedral transforms = flips + 90° rotations)."""
    if hflip:
        lr, hr = lr[:, ::-1], hr[:, ::-1]
    if vflip:
        lr, hr = lr[::-1], hr[::-1]
    if transpose:
        lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
    return lr, hr


class SRTrainDataset(Dataset):
    """Random ``patch_size`` LR patches (and ``patch_size·s`` HR patches) from one or more HR folders.

    Args:
        hr_dirs: folders of HR images (several = e.g. DF2K).
        scale: SR factor.
        patch_size: LR patch side (64 in the paper, 96 in the official configs).
        lr_source: ``"auto"`` (provided LR folder when it exists, else generate), ``"folder"`` (require it),
            ``"generate"`` (always MATLAB-bicubic on the fly).
        augment: random flips and 90° rotations.
        cache_images: keep decoded images in memory (fast for small sets; DIV2K needs ~5 GB).
        seed: base seed of the deterministic sampling scheme (module docstring).
    """

    def __init__(
        self,
        hr_dirs: Sequence[str | Path],
        scale: int,
        patch_size: int = 64,
        lr_source: str = "auto",
        augment: bool = True,
        cache_images: bool = False,
        seed: int = 0,
    ) -> None:
        if lr_source not in ("auto", "folder", "generate"):
            raise FFNetError(f"data.lr_source must be 'auto', 'folder' or 'generate', got {lr_source!r}")
        self.scale = int(scale)
        self.patch_size = int(patch_size)
        self.augment = augment
        self.cache_images = cache_images
        self.seed = int(seed)
        self.items: list[tuple[Path, Path | None]] = []
        #: messages for the run log (e.g. the benchmark guard's findings of an allowed run)
        self.notes: list[str] = []
        for d in hr_dirs:
            d = hr_folder(Path(d))
            lr_dir = find_lr_dir(d, self.scale) if lr_source != "generate" else None
            if lr_source == "folder" and lr_dir is None:
                raise FFNetError(f"no LR_bicubic/X{self.scale} folder next to {d} (data.lr_source=folder)")
            files = list_images(d)
            if not files:
                raise FFNetError(f"no images found in training folder {d}")
            for f in files:
                lr_file = _lr_path(lr_dir, f.stem, self.scale) if lr_dir else None
                self._check_sizes(f, lr_file)
                self.items.append((f, lr_file))
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def _check_sizes(self, hr_path: Path, lr_path: Path | None) -> None:
        """Header-only check of every training image before the run starts (pixel guard, unreadable headers,
        too small for a patch, LR of the wrong size): found later, in a loader worker, the same problem would
        stop the run mid-way with the worker's traceback folded into the message."""
        s, p = self.scale, self.patch_size
        w, h = image_size(hr_path)
        if min(h // s, w // s) < p:
            raise FFNetError(
                f"{hr_path}: {w}x{h} pixels is too small for LR patches of {p} at x{s} (LR side "
                f"{min(h // s, w // s)}); training images need at least {p * s}x{p * s} pixels: lower "
                "data.patch_size or remove the image"
            )
        if lr_path is not None and image_size(lr_path) != (w // s, h // s):
            lw, lh = image_size(lr_path)
            raise FFNetError(f"LR file {lr_path} is {lw}x{lh} pixels, expected {w // s}x{h // s} (its HR file "
                             f"{hr_path.name} is {w}x{h}, cropped to a multiple of {s}, divided by {s})")

    @property
    def num_images(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if i in self._cache:
            return self._cache[i]
        hr_path, lr_path = self.items[i]
        hr = mod_crop(to_rgb(read_rgb_or_grey(hr_path)), self.scale)
        lr = to_rgb(read_rgb_or_grey(lr_path)) if lr_path is not None else None
        min_side = min(hr.shape[:2]) // self.scale
        if min_side < self.patch_size:
            raise FFNetError(
                f"image {hr_path} is too small for LR patches of {self.patch_size} at x{self.scale} "
                f"(LR side {min_side}); lower data.patch_size"
            )
        if lr is not None and lr.shape[:2] != (hr.shape[0] // self.scale, hr.shape[1] // self.scale):
            raise FFNetError(f"LR file {lr_path} has size {lr.shape[:2]}, expected HR mod-crop / {self.scale}")
        if self.cache_images:
            self._cache[i] = (hr, lr)
        return hr, lr

    def image_index(self, k: int) -> int:
        """Which image global sample ``k`` uses: a fresh permutation of all images every epoch."""
        n = len(self.items)
        epoch, pos = divmod(int(k), n)
        perm = np.random.default_rng([self.seed, epoch, 0x5E]).permutation(n)
        return int(perm[pos])

    def lr_patch_generated(self, hr: np.ndarray, top: int, left: int) -> np.ndarray:
        """The ``patch_size`` LR patch at LR ``(top, left)`` of ``imresize(hr, 1/s)``, computed from a window."""
        s, p, m = self.scale, self.patch_size, _LR_MARGIN
        h_lr, w_lr = hr.shape[0] // s, hr.shape[1] // s
        t0, l0 = max(top - m, 0), max(left - m, 0)
        t1, l1 = min(top + p + m, h_lr), min(left + p + m, w_lr)
        window = imresize(hr[t0 * s : t1 * s, l0 * s : l1 * s], 1.0 / s)
        return window[top - t0 : top - t0 + p, left - l0 : left - l0 + p]

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        hr, lr = self._load(self.image_index(k))
        rng = np.random.default_rng([self.seed, int(k), 0xC0])
        s, p = self.scale, self.patch_size
        h_lr, w_lr = hr.shape[0] // s, hr.shape[1] // s
        top = int(rng.integers(0, h_lr - p + 1))
        left = int(rng.integers(0, w_lr - p + 1))
        hr_patch = hr[top * s : (top + p) * s, left * s : (left + p) * s]
        if lr is not None:
            lr_patch = lr[top : top + p, left : left + p]
        else:
            lr_patch = self.lr_patch_generated(hr, top, left)
        if self.augment:
            flips = rng.integers(0, 2, size=3)
            lr_patch, hr_patch = augment_pair(lr_patch, hr_patch, bool(flips[0]), bool(flips[1]), bool(flips[2]))
        return uint8_to_tensor(lr_patch), uint8_to_tensor(hr_patch)


def epoch_steps(num_images: int, batch_size: int, world_size: int = 1, enlarge_ratio: int = 1) -> int:
    """Micro-batches per epoch and process: one epoch is ``enlarge_ratio`` passes' worth of patches over the
    training images (BasicSR's epoch), rounded up so that every epoch has at least one batch."""
    return max(1, math.ceil(num_images * enlarge_ratio / (batch_size * world_size)))


def sample_indices(batch: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Global sample indices of micro-batch ``batch`` (counted over the whole run) on ``rank`` of ``world_size``:
    ``(batch·world + rank)·B .. +B-1``, disjoint between ranks and the same for any number of loader workers."""
    first = (batch * world_size + rank) * batch_size
    return list(range(first, first + batch_size))


class EpochBatchSampler(Sampler[list[int]]):
    """The micro-batches ``start .. steps_per_epoch-1`` of one epoch on one rank.

    Micro-batch ``i`` of epoch ``e`` is run-wide micro-batch ``e·steps_per_epoch + i`` (:func:`sample_indices`),
    so the epochs are consecutive pieces of one sample stream: which batch a step gets depends only on (seed,
    epoch, i), not on where a run was resumed, and not on ``steps_per_epoch`` at all for a given step.
    :meth:`set_position` moves it before each pass, so one DataLoader (persistent workers) serves all epochs.
    """

    def __init__(self, batch_size: int, steps_per_epoch: int, rank: int = 0, world_size: int = 1) -> None:
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        first = self.epoch * self.steps_per_epoch
        for i in range(self.start, self.steps_per_epoch):
            yield sample_indices(first + i, self.batch_size, self.rank, self.world_size)


@dataclass
class BenchmarkPair:
    """One evaluation image: ``hr`` mod-cropped (grey ``HW`` kept grey), ``lr`` as provided or generated;
    ``name`` the file's stem (``sub/stem`` in a recursive set: its path relative to the HR folder, no extension);
    ``path`` (the HR file) names it in messages."""

    name: str
    hr: np.ndarray
    lr: np.ndarray
    path: Path | None = None


def resolve_set_dir(name_or_path: str | Path) -> Path:
    """A benchmark set given as a path, or as a name under ``<data_root>/sr`` (``Set5``, ``B100``, ...)."""
    from metamixer.train.datadir import data_root

    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    candidate = data_root() / "sr" / str(name_or_path)
    if candidate.is_dir():
        return candidate
    raise FFNetError(
        f"benchmark set {str(name_or_path)!r} not found (neither a folder nor {candidate}); "
        "set FFNET_DATA or give the folder path"
    )


def load_benchmark(
    set_dir: str | Path, scale: int, lr_source: str = "auto", max_images: int | None = None, recursive: bool = False
) -> list[BenchmarkPair]:
    """Load a benchmark set (``<set>/HR`` + optional ``<set>/LR_bicubic/X<s>``, or a plain folder of HR images).

    With ``lr_source="auto"`` the provided LR files are used when present, else MATLAB-bicubic LR is generated
    from the mod-crop (identical pixels for the sets shipped here, see ``docs/super_resolution.md``).
    ``recursive`` takes the HR folder's whole tree; an HR image ``HR/sub/a.png`` is then named ``sub/a`` and
    paired with the LR file of the same relative path, ``LR_bicubic/X<s>/sub/ax<s>.png``. Two images of one
    folder with the same stem (``a.png``, ``a.jpg``) are refused: their scores would share one name.
    """
    set_dir = resolve_set_dir(set_dir)
    hr_dir = set_dir / "HR" if (set_dir / "HR").is_dir() else set_dir
    lr_dir = find_lr_dir(hr_dir, scale) if lr_source != "generate" else None
    if lr_source == "folder" and lr_dir is None:
        raise FFNetError(f"no LR_bicubic/X{scale} folder in {set_dir}")
    files = list_images(hr_dir, recursive)
    if not files:
        raise FFNetError(f"no images found in {hr_dir}{' or its sub-folders' if recursive else ''}")
    if max_images is not None:
        files = files[:max_images]
    pairs: list[BenchmarkPair] = []
    seen: dict[str, Path] = {}
    for f in files:
        rel = f.relative_to(hr_dir)
        name = rel.with_suffix("").as_posix()
        if name in seen:
            raise FFNetError(f"{f} and {seen[name]} are both named {name!r} in set {set_dir}; rename one of them")
        seen[name] = f
        hr = mod_crop(read_rgb_or_grey(f), scale)
        lr = read_rgb_or_grey(_lr_path(lr_dir / rel.parent, f.stem, scale)) if lr_dir else imresize(hr, 1.0 / scale)
        if lr.shape[:2] != (hr.shape[0] // scale, hr.shape[1] // scale):
            raise FFNetError(f"LR image for {rel} has size {lr.shape[:2]}, expected HR mod-crop / {scale}")
        pairs.append(BenchmarkPair(name, hr, lr, f))
    return pairs
