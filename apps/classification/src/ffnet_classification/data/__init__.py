"""Datasets (ImageFolder, CSV/txt lists), transforms, Mixup/CutMix and the resumable epoch sampler."""
from .dataset import (
    BAD_IMAGE_POLICIES,
    IMAGE_EXTENSIONS,
    BadImageError,
    ClassificationDataset,
    ImageFolder,
    ImageList,
    ReportBadImages,
    bad_reason,
    build_dataset,
    collate_reporting,
    describe_bad_images,
    is_image_file,
    load_rgb,
    to_rgb,
)
from .mixup import Mixup, one_hot_smooth
from .sampler import EpochSampler, SeededSamples
from .transforms import EvalTransform, TrainTransform, build_transforms, pil_to_tensor

__all__ = [
    "BAD_IMAGE_POLICIES",
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "ClassificationDataset",
    "ImageFolder",
    "ImageList",
    "ReportBadImages",
    "bad_reason",
    "build_dataset",
    "collate_reporting",
    "describe_bad_images",
    "is_image_file",
    "load_rgb",
    "to_rgb",
    "Mixup",
    "EpochSampler",
    "SeededSamples",
    "one_hot_smooth",
    "EvalTransform",
    "TrainTransform",
    "build_transforms",
    "pil_to_tensor",
]
