"""Generate images from a trained network: guidance, sampler choice, latent decoding, batching.

The option checks live here too, because three commands draw samples (``ffnet-gen-sample`` from flags,
``ffnet-gen-eval`` and the training grids from the config's ``eval`` section): each check names the setting the
way its command spells it (``--steps`` or ``eval.steps``), and runs before any model is loaded or folder made.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import torch

from metamixer.train.errors import FFNetError

from .diffusion import GaussianDiffusion, GuidedModel, check_guidance_scale
from .diffusion.guidance import MAX_GUIDANCE_SCALE
from .diffusion.schedules import space_timesteps

__all__ = ["generate", "check_labels", "check_sampler_options", "check_steps", "label_values", "CLI_NAMES",
           "EVAL_NAMES"]

#: how ffnet-gen-sample's flags and the config's eval section name each sampler setting (for the messages)
CLI_NAMES: Mapping[str, str] = {"num": "--num-samples", "labels": "--labels", "steps": "--steps",
                                "cfg_scale": "--cfg-scale", "eta": "--eta", "guided_channels": "--guided-channels",
                                "batch_size": "--batch-size"}
EVAL_NAMES: Mapping[str, str] = {"num": "eval.num_samples", "labels": "eval.labels", "steps": "eval.steps",
                                 "cfg_scale": "eval.cfg_scale", "eta": "eval.eta",
                                 "guided_channels": "eval.guided_channels", "batch_size": "eval.batch_size"}

_STEPS = re.compile(r"ddim[1-9]\d*|[1-9]\d*(,[1-9]\d*)*")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def label_values(text: str, key: str = "--labels") -> list[int] | None:
    """The class ids of a comma list, None for ``random`` / ``all``; anything else is an FFNetError naming ``key``."""
    if text in ("random", "all"):
        return None
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise FFNetError(f"{key} must be 'random', 'all' or a comma list of class ids, got {text!r}") from None
    if not values:
        raise FFNetError(f"{key} is empty: expected 'random', 'all' or a comma list of class ids")
    if min(values) < 0:
        raise FFNetError(f"{key}: class ids are >= 0, got {min(values)}")
    return values


def check_sampler_options(*, num: int, labels: str, steps: str | int, cfg_scale: float, eta: float,
                          guided_channels: int | None, batch_size: int,
                          names: Mapping[str, str] = CLI_NAMES) -> None:
    """Every sampler setting that can be judged without the checkpoint (ranges, NaN, the step syntax)."""
    for key, value in (("num", num), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FFNetError(f"{names[key]} must be an integer >= 1, got {value!r}")
    if guided_channels is not None and (isinstance(guided_channels, bool) or not isinstance(guided_channels, int)
                                        or guided_channels < 1):
        raise FFNetError(f"{names['guided_channels']} must be an integer >= 1 (or left out: all channels), "
                         f"got {guided_channels!r}")
    if not (_finite(cfg_scale) and 0.0 <= cfg_scale <= MAX_GUIDANCE_SCALE):
        raise FFNetError(f"{names['cfg_scale']} must be a number in [0, {MAX_GUIDANCE_SCALE:g}] (1 = no guidance, "
                         f"DiT uses 1.5 for FID), got {cfg_scale!r}")
    if not (_finite(eta) and 0.0 <= eta <= 1.0):
        raise FFNetError(f"{names['eta']} (DDIM eta) must be a number in [0, 1], got {eta!r}")
    if not _STEPS.fullmatch(str(steps).strip()):
        raise FFNetError(f"{names['steps']} must be N (DDPM respaced to N steps, N >= 1), ddimN or a comma list of "
                         f"section counts, got {steps!r}")
    label_values(labels, names["labels"])


def check_steps(steps: str | int, num_steps: int, key: str = "--steps") -> None:
    """The step spec against the model's diffusion length (``model.diffusion.num_steps`` of the checkpoint)."""
    try:
        space_timesteps(num_steps, str(steps))
    except FFNetError as exc:
        raise FFNetError(f"{key}={steps}: {exc}") from None


def check_labels(labels: torch.Tensor, num_classes: int, key: str = "--labels") -> None:
    """Labels must index the model's classes (the null label is reserved for guidance)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise FFNetError(f"{key}: class labels must be in [0, {num_classes - 1}] for this checkpoint "
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
