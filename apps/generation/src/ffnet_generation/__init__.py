"""ffnet_generation — U-FFNet: class-conditional diffusion with hybrid MetaMixer blocks (FFNet paper §4.4)."""

from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]
