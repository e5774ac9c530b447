"""FFNet for 3-D semantic segmentation on sparse voxels (``ffnet-pointcloud``)."""

from __future__ import annotations

from .models import create_model, list_models
from .structure import Point

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "Point", "__version__"]
