"""Generate images from a trained network: guidance, sampler choice, latent decoding, batching."""

from __future__ import annotations

from collections.abc import Callable

import torch

from metamixer.train.errors import FFNetError

from .diffusion import GaussianDiffusion, GuidedModel, check_guidance_scale

__all__ = ["generate", "check_labels"]


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Labels must index the model's classes (the null label is reserved for guidance)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise FFNetError(f"class labels must be in [0, {num_classes - 1}] for this checkpoint "
                         f"(model.num_classes={num_classes}), got labels from {int(labels.min())} to "
                         f"{int(labels.max())}")


@torch.no_grad()
def generate(model: torch.nn.Module, diffusion: GaussianDiffusion, labels: torch.Tensor, *, cfg_scale: float = 1.0,
             method: str = "ddpm", eta: float = 0.0, guided_channels: int | None = None,
             generator: torch.Generator | None = None, clip_denoised: bool = False,
             decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
             progress: Callable | None = None) -> torch.Tensor:
    """Sample one image per label; returns images in [-1, 1] (decoded through ``decode`` in latent mode).

    ``clip_denoised`` should be True in pixel mode (data lives in [-1, 1]) and False for latents (DiT's choice).
    Noise comes from ``generator`` so a (seed, labels) pair always gives the same images.
    """
    check_guidance_scale(cfg_scale)
    num_classes, channels, size = model.num_classes, model.in_channels, model.input_size
    check_labels(labels, num_classes)
    device = next(model.parameters()).device
    labels = labels.to(device)
    net: torch.nn.Module = model
    if cfg_scale != 1.0:
        net = GuidedModel(model, cfg_scale, null_label=num_classes, data_channels=channels,
                          guided_channels=guided_channels)
    shape = (labels.shape[0], channels, size, size)
    noise = torch.randn(shape, generator=generator, device=generator.device if generator is not None else "cpu")
    x = diffusion.sample_loop(net, shape, method=method, eta=eta, noise=noise.to(device), generator=generator,
                              clip_denoised=clip_denoised, model_kwargs={"y": labels}, progress=progress)
    if decode is not None:
        x = decode(x)
    if not torch.isfinite(x).all():
        raise FFNetError("sampling produced non-finite values (diverged model or extreme guidance scale)")
    return x.clamp(-1, 1)
