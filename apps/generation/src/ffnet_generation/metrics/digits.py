"""A small CNN trained on scikit-learn digits, used as the feature extractor of the quick start's "digits-FID".

digits-FID = Fréchet distance of this CNN's penultimate (64-d) features between generated and real digits.
It measures the same thing as FID (distribution match in a learned feature space) on data where Inception is
meaningless (8x8 grayscale strokes). Its values are NOT comparable to ImageNet FID, to other digits-FID runs
with a differently trained extractor, or across image sizes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DigitsCNN", "DigitsReference", "train_digits_classifier", "extract_features"]


class DigitsCNN(nn.Module):
    """conv 32 -> conv 64 /2 -> conv 64 /2 -> global pool -> fc 64 (features) -> fc 10."""

    def __init__(self, channels: int = 1, num_classes: int = 10, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


def train_digits_classifier(images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0, epochs: int = 15,
                            batch_size: int = 64, val_fraction: float = 0.2) -> tuple[DigitsCNN, float]:
    """Train on images in [-1, 1] (NCHW); returns the model and its held-out accuracy."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    perm = torch.randperm(len(images), generator=g)
    n_val = int(len(images) * val_fraction)
    val, tr = perm[:n_val], perm[n_val:]
    model = DigitsCNN(images.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        order = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(images[idx])[1], labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(images[val])[1].argmax(1) == labels[val]).float().mean().item() if n_val else float("nan")
    return model, acc


@torch.no_grad()
def extract_features(model: DigitsCNN, images: torch.Tensor, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, 64], logits [N, 10]) for images in [-1, 1]."""
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f, lg = model(images[i:i + batch_size])
        feats.append(f.numpy())
        logits.append(lg.numpy())
    return np.concatenate(feats), np.concatenate(logits)


class DigitsReference:
    """The digits-FID yardstick: a CNN trained on all real digits at ``image_size`` and their feature statistics.

    Built the same way by the quick start and by ``ffnet-gen-eval --checkpoint`` on a digits model, so a
    (seed, image size) pair always gives the same extractor and the two report comparable numbers.
    """

    def __init__(self, image_size: int = 16, seed: int = 0) -> None:
        from ..data.images import digits_arrays
        from .fid import FeatureStats

        images_u8, labels = digits_arrays(image_size)
        real = torch.from_numpy(images_u8).float()[:, None] / 127.5 - 1.0
        self.classifier, self.classifier_accuracy = train_digits_classifier(real, torch.from_numpy(labels), seed=seed)
        self.features, _ = extract_features(self.classifier, real)
        stats = FeatureStats()
        stats.update(self.features)
        self.mu, self.sigma = stats.mean_cov()
        self.image_size, self.seed = image_size, seed

    def score(self, images_u8: np.ndarray, labels: np.ndarray) -> dict:
        """digits-FID of uint8 NHWC samples against all real digits, and the CNN's accuracy w.r.t. the labels the
        samples were conditioned on: overall and per class (``class_accuracy_per_class[c]``: the fraction of the
        samples of label c that the CNN reads as c; None for a class with no samples)."""
        from .fid import FeatureStats, frechet_distance

        images = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        feats, logits = extract_features(self.classifier, images)
        stats = FeatureStats()
        stats.update(feats)
        mu, sigma = stats.mean_cov()
        labels = np.asarray(labels)
        hit = logits.argmax(1) == labels
        per_class = [float(hit[labels == c].mean()) if (labels == c).any() else None for c in range(logits.shape[1])]
        return {"digits_fid": frechet_distance(mu, sigma, self.mu, self.sigma),
                "class_accuracy": float(hit.mean()), "class_accuracy_per_class": per_class}

    def real_half_vs_half(self) -> float:
        """The metric's floor: digits-FID between two disjoint halves of the real digits."""
        from .fid import FeatureStats, frechet_distance

        half = len(self.features) // 2
        a, b = FeatureStats(), FeatureStats()
        a.update(self.features[:half])
        b.update(self.features[half:])
        return frechet_distance(*a.mean_cov(), *b.mean_cov())
