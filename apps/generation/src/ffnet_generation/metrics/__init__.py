"""Sample-quality metrics: FID / IS with the standard FID InceptionV3, and the quick start's digits-FID."""

from .fid import (
           FeatureStats,
           frechet_distance,
           inception_score,
           load_reference_stats,
           psd_sqrt,
           trace_sqrt_product,
)
from .inception import FID_WEIGHTS_NAME, FID_WEIGHTS_URL, FIDInceptionV3, load_fid_inception

__all__ = ["FeatureStats", "frechet_distance", "inception_score", "load_reference_stats", "psd_sqrt",
           "trace_sqrt_product", "FIDInceptionV3", "load_fid_inception", "FID_WEIGHTS_NAME", "FID_WEIGHTS_URL"]
