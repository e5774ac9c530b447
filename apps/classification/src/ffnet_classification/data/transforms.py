"""Train / eval transforms (timm/DeiT recipe) without torchvision.

Geometry (random-resized crop, resize + center crop) is done in PIL on the uint8 image, because resampling
the decoded image once, straight to the output size, is both the cheapest and the most accurate way
(``Image.resize(box=...)`` crops and resamples in one pass). Photometric/geometric RandAugment ops and random
erasing come from kornia, applied per sample on the small cropped tensor so every image gets its own ops
(kornia's RandAugment draws one op sequence per call).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

_INTERP = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}


def _interp(name: str) -> int:
    try:
        return _INTERP[name]
    except KeyError:
        raise ValueError(f"interpolation must be one of {sorted(_INTERP)}, got {name!r}") from None


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float CHW tensor in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], gen: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """Inception-style crop box (left, top, right, bottom): area fraction in ``scale``, log-uniform aspect."""
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=gen))
        aspect = math.exp(float(torch.empty(1).uniform_(log_r[0], log_r[1], generator=gen)))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            return left, top, left + w, top + h
    # fallback: central crop with the aspect clamped into range
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


@dataclass
class EvalTransform:
    """Resize the short side to ``size / crop_pct`` then center-crop ``size`` (timm ``crop_mode='center'``)."""

    size: int = 256
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        scale_size = math.floor(self.size / self.crop_pct)
        w, h = img.size
        if w <= h:
            nw, nh = scale_size, max(1, int(round(h * scale_size / w)))
        else:
            nh, nw = scale_size, max(1, int(round(w * scale_size / h)))
        img = img.resize((nw, nh), _interp(self.interpolation))
        left, top = int(round((nw - self.size) / 2.0)), int(round((nh - self.size) / 2.0))
        img = img.crop((left, top, left + self.size, top + self.size))
        return normalize(pil_to_tensor(img), self.mean, self.std)


class TrainTransform:
    """RandomResizedCrop + horizontal flip (PIL) -> RandAugment -> normalize -> RandomErasing (kornia).

    ``rand_m`` / ``rand_mstd`` use timm's 0..10 magnitude scale (``rand-m9-mstd0.5``); kornia's RandAugment
    uses 0..30, so the magnitude is multiplied by 3 and drawn per image from N(m, mstd) like timm does.
    """

    def __init__(
        self,
        size: int = 256,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        interpolation: str = "bicubic",
        rand_n: int = 2,
        rand_m: float = 9.0,
        rand_mstd: float = 0.5,
        reprob: float = 0.25,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.hflip = hflip
        self.interpolation = _interp(interpolation)
        self.rand_n = rand_n
        self.rand_m = rand_m
        self.rand_mstd = rand_mstd
        self.reprob = reprob
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._randaug: dict[int, torch.nn.Module] = {}
        self._erase: torch.nn.Module | None = None

    def _rand_augment(self, level: int) -> torch.nn.Module:
        if level not in self._randaug:
            from kornia.augmentation.auto import RandAugment

            self._randaug[level] = RandAugment(n=self.rand_n, m=level)
        return self._randaug[level]

    def _eraser(self) -> torch.nn.Module:
        if self._erase is None:
            from kornia.augmentation import RandomErasing

            self._erase = RandomErasing(p=self.reprob, scale=(0.02, 1 / 3), ratio=(0.3, 3.3), value=0.0)
        return self._erase

    def __call__(self, img: Image.Image) -> torch.Tensor:
        box = random_resized_crop_box(img.width, img.height, self.scale, self.ratio)
        img = img.resize((self.size, self.size), self.interpolation, box=box)
        if self.hflip > 0 and float(torch.rand(1)) < self.hflip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = pil_to_tensor(img)
        if self.rand_n > 0 and self.rand_m > 0:
            m = self.rand_m + (float(torch.randn(1)) * self.rand_mstd if self.rand_mstd > 0 else 0.0)
            level = int(min(29, max(1, round(3 * m))))
            with torch.no_grad():
                x = self._rand_augment(level)(x[None]).clamp_(0, 1)[0]
        x = normalize(x, self.mean, self.std)
        if self.reprob > 0:
            with torch.no_grad():
                x = self._eraser()(x[None])[0]
        return x


def build_transforms(
    is_training: bool,
    input_size: int,
    crop_pct: float,
    interpolation: str = "bicubic",
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    rand_n: int = 2,
    rand_m: float = 9.0,
    rand_mstd: float = 0.5,
    reprob: float = 0.25,
) -> TrainTransform | EvalTransform:
    if is_training:
        return TrainTransform(input_size, scale, (3 / 4, 4 / 3), hflip, interpolation, rand_n, rand_m, rand_mstd,
                              reprob, mean, std)
    return EvalTransform(input_size, crop_pct, interpolation, mean, std)
