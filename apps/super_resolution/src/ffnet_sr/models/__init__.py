"""Model registry: ``create_model(name, scale)`` for the published FFNetSR variants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metamixer.train.errors import FFNetError

from .ffnetsr import FFNetSR, ffnetsr_block

__all__ = ["FFNetSR", "ffnetsr_block", "create_model", "list_models", "model_from_state_dict", "MODEL_DEFAULTS", "load_pretrained", "read_weights"]

#: Published variants (paper Tab. 4 / official configs): both 96 channels, FFN expansion 2, 3x3 depthwise convs.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "ffnetsr_light": {"dim": 96, "depth": 36, "expansion": 2.0},
    "ffnetsr": {"dim": 96, "depth": 48, "expansion": 2.0},
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODEL_DEFAULTS)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The FFNetSR weights in an FFNet checkpoint or an authors' BasicSR file (weights under ``params``).

    Both the checkpoints written by ``ffnet-sr-train`` (``model``/``ema``) and the authors' release
    (``params`` / ``params_ema``) are accepted; EMA weights are preferred when present, as BasicSR does at test time.
    """
    from metamixer.train.checkpoint import CHECKPOINT_FORMAT, extract_state_dict, load_weights_file

    obj = load_weights_file(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return extract_state_dict(obj, prefer_ema=True)
    # BasicSR release: the official test configs read ``params``
    return extract_state_dict(obj, keys=("params", "params_ema", "state_dict", "model"), prefer_ema=False)


def load_pretrained(model: torch.nn.Module, path: str | Path) -> None:
    """Strictly load :func:`read_weights` of ``path`` into ``model`` (mismatches are named in the error)."""
    from metamixer.train.checkpoint import load_state_dict_checked

    load_state_dict_checked(model, read_weights(path), str(path))


def model_from_state_dict(sd: dict[str, Any], source: str | Path | None = None) -> FFNetSR:
    """Rebuild the architecture (scale, width, depth, expansion) from a state_dict's shapes alone.

    Lets the upscaler and evaluator load any FFNetSR weights, including the authors' files that carry no config.
    ``source`` (the weights file) is named in the error, so a user who passed the wrong file sees which one.
    """
    where = f"{source}: " if source is not None else ""
    try:
        dim = int(sd["proj.weight"].shape[0])
        in_chans = int(sd["proj.weight"].shape[1])
        out_ch = int(sd["conv_bef_up.weight"].shape[0])
        depth = len({k.split(".")[1] for k in sd if k.startswith("body.")})
        hidden = int(sd["body.0.channel_mixer.1.weight"].shape[0]) if depth else 2 * dim
    except (KeyError, IndexError, AttributeError, TypeError):
        keys = ", ".join(list(sd)[:3]) if isinstance(sd, dict) else type(sd).__name__
        raise FFNetError(f"{where}weights are not FFNetSR weights (no proj / conv_bef_up / body.* keys; found "
                         f"{keys}{', ...' if isinstance(sd, dict) and len(sd) > 3 else ''}); expected a checkpoint "
                         "of ffnet-sr-train or the authors' FFNetSR release") from None
    scale = round((out_ch / in_chans) ** 0.5)
    if scale < 1 or scale * scale * in_chans != out_ch:
        raise FFNetError(f"{where}conv_bef_up has {out_ch} output channels, not {in_chans}·s² for an integer "
                         "scale s (not FFNetSR weights?)")
    return FFNetSR(scale=scale, dim=dim, depth=depth, expansion=hidden / dim, in_chans=in_chans)


def create_model(name: str, scale: int = 2, pretrained: str | Path | None = None, **overrides: Any) -> FFNetSR:
    """Build ``ffnetsr_light`` or ``ffnetsr`` for ``scale`` (2/3/4); ``overrides`` change e.g. ``depth``.

    ``pretrained`` loads a checkpoint strictly (missing/unexpected/mis-shaped keys are an error naming the file).
    """
    if name not in MODEL_DEFAULTS:
        raise FFNetError(f"unknown model {name!r}; expected one of {list_models()}")
    kwargs = {**MODEL_DEFAULTS[name], **overrides}
    model = FFNetSR(scale=scale, **kwargs)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


