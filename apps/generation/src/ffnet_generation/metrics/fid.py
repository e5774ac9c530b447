"""Fréchet distance, feature statistics and Inception Score (feature-extractor agnostic).

FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}). The trace of the matrix square root is computed from the
eigenvalues of S1^{1/2} S2 S1^{1/2} (symmetric PSD, same spectrum as S1 S2): stable even for rank-deficient
covariances (fewer samples than feature dims), where a general sqrtm returns complex noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metamixer.train.errors import FFNetError

__all__ = ["FeatureStats", "frechet_distance", "trace_sqrt_product", "psd_sqrt", "inception_score",
           "load_reference_stats", "save_stats"]


class FeatureStats:
    """Streaming mean / covariance in float64 (features of 50K images never need to be in memory at once)."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def update(self, features: np.ndarray) -> None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {f.shape}")
        if self.sum is None:
            self.sum, self.outer = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
        self.n += len(f)
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (np.cov's N-1 normalisation, as every FID implementation uses)."""
        if self.n < 2:
            raise FFNetError(f"need at least 2 images for feature statistics, got {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues clipped)."""
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^{1/2}) for PSD S1, S2."""
    root1 = psd_sqrt(sigma1)
    vals = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    return float(np.sqrt(np.clip(vals, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, S1) and N(mu2, S2)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise FFNetError(f"statistics have different dimensions: {mu1.shape} vs {mu2.shape} (were they computed "
                         "with the same feature extractor?)")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) averaged over ``splits`` equal chunks (the published protocol); mean, std."""
    logits = np.asarray(logits, dtype=np.float64)
    if len(logits) < splits:
        raise FFNetError(f"Inception Score with {splits} splits needs at least {splits} images, got {len(logits)}")
    logits = logits - logits.max(1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    scores = []
    for chunk in np.array_split(log_p, splits):
        log_py = np.log(np.exp(chunk).mean(0, keepdims=True))
        scores.append(np.exp((np.exp(chunk) * (chunk - log_py)).sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def load_reference_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from a precomputed ``.npz`` (keys ``mu``/``sigma``, as in ADM's reference batches and
    pytorch-fid's ``--save-stats`` files)."""
    try:
        with np.load(path) as data:
            if "mu" not in data or "sigma" not in data:
                raise FFNetError(f"{path}: a statistics file needs 'mu' and 'sigma' arrays, found {list(data.keys())}")
            return data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except (OSError, ValueError) as exc:
        raise FFNetError(f"cannot read statistics file {path}: {exc}") from None


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **extra) -> Path:
    """``mu`` / ``sigma`` (+ ``extra``) as ``.npz`` (suffix added if missing, as ``np.savez`` does), atomically."""
    from ..files import save_npz

    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    return save_npz(path, mu=mu, sigma=sigma, **extra)
