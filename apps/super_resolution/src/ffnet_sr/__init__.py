"""FFNetSR — FFNet for efficient single-image super-resolution.

``create_model("ffnetsr_light", scale=4)`` builds the published models (state_dict keys equal the authors'
BasicSR checkpoints); :func:`imresize` is MATLAB-exact bicubic; :mod:`ffnet_sr.metrics` computes PSNR/SSIM the
way SR papers report them. ``task`` is SR training on core's engine (``train`` is its CLI); ``inference`` and
``scoring`` run and score upscalers (``evaluate`` and ``upscale`` are their CLIs).
"""

from __future__ import annotations

from .imresize import imresize
from .models import FFNetSR, create_model, list_models

__version__ = "0.1.0"

__all__ = ["FFNetSR", "create_model", "list_models", "imresize", "__version__"]
