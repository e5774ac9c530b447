"""FFNet image classification: FFNet-1..4 (official checkpoint layout), training, evaluation, export, benchmark.

Quick use::

    from ffnet_classification import create_model
    model = create_model("ffnet_1", pretrained="ffnet_1.pth.tar")   # official or our checkpoints
    deploy = model.fuse()                                            # re-parameterized inference form
"""
from .models import FFNet, FFNetSpec, create_model, list_models
from .timm_registry import maybe_register_timm, register_timm

__version__ = "0.1.0"
__all__ = ["FFNet", "FFNetSpec", "create_model", "list_models", "register_timm", "__version__"]

maybe_register_timm()
