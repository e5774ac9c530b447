"""Model names, default configs and ``create_model`` (timm-compatible signature), incl. checkpoint loading.

Checkpoints accepted by ``pretrained=<path>``:

* the authors' ``.pth.tar`` (timm trainer): ``{"state_dict": ..., "state_dict_ema": ..., "args": Namespace}``,
  possibly with ``module.`` prefixes (DDP) — train form or fused (deploy) form;
* our own ``metamixer.train.checkpoint`` files (``model`` / ``ema``);
* a bare state_dict.

The form (train vs fused) is detected from the keys, so a deploy-form checkpoint yields a fused model.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from metamixer.train.checkpoint import extract_state_dict, load_state_dict_checked, load_weights_file
from metamixer.train.errors import FFNetError

from .ffnet import FFNet, FFNetFeatures, FFNetSpec, PretrainedCfg

_BASE = FFNetSpec()

#: the official factory defaults (official_architecture.md §1.1)
SPECS: dict[str, FFNetSpec] = {
    "ffnet_1": replace(_BASE, widths=(80, 160, 320, 640), depths=(2, 2, 8, 2), channel_kernels=(3, 3, 3, 3),
                       drop_path_rate=0.1),
    "ffnet_2": replace(_BASE, widths=(88, 176, 352, 704), depths=(3, 3, 15, 3), channel_kernels=(7, 7, 7, 7),
                       drop_path_rate=0.15),
    "ffnet_3": replace(_BASE, widths=(96, 192, 384, 768), depths=(4, 4, 22, 5), channel_kernels=(7, 7, 7, 7),
                       layer_scale_init=1e-6, drop_path_rate=0.35),
    "ffnet_4": replace(_BASE, widths=(128, 256, 512, 1024), depths=(4, 4, 27, 3), channel_kernels=(7, 7, 7, 7),
                       layer_scale_init=1e-6, drop_path_rate=0.4),
}
# 384 fine-tune configs (README: FFNet-3/4 at 384, drop-path 0.4 / 0.5); same weights layout as the 256 models.
SPECS["ffnet_3_384"] = replace(SPECS["ffnet_3"], drop_path_rate=0.4)
SPECS["ffnet_4_384"] = replace(SPECS["ffnet_4"], drop_path_rate=0.5)

PRETRAINED_CFGS: dict[str, PretrainedCfg] = {
    "ffnet_1": PretrainedCfg(crop_pct=0.9),
    "ffnet_2": PretrainedCfg(crop_pct=0.9),
    "ffnet_3": PretrainedCfg(crop_pct=0.95),
    "ffnet_4": PretrainedCfg(crop_pct=0.95),
    "ffnet_3_384": PretrainedCfg(input_size=(3, 384, 384), crop_pct=1.0),
    "ffnet_4_384": PretrainedCfg(input_size=(3, 384, 384), crop_pct=1.0),
}

_SPEC_KEYS = set(FFNetSpec.__dataclass_fields__)


def list_models() -> list[str]:
    """All registered model names."""
    return sorted(SPECS)


def get_spec(name: str) -> FFNetSpec:
    if name not in SPECS:
        raise FFNetError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return SPECS[name]


def create_model(
    name: str,
    num_classes: int = 1000,
    pretrained: str | os.PathLike | bool | None = None,
    *,
    in_chans: int = 3,
    drop_path_rate: float | None = None,
    drop_rate: float = 0.0,
    features_only: bool = False,
    out_indices: tuple[int, ...] = (0, 1, 2, 3),
    fused: bool | None = None,
    prefer_ema: bool = False,
    ignore_head: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build ``ffnet_1`` .. ``ffnet_4`` (``_384`` variants too), optionally loading a checkpoint.

    Args:
        name: model name (see :func:`list_models`).
        num_classes: classifier size; ``0`` for a pooled-feature backbone.
        pretrained: path to a checkpoint (official ``.pth.tar`` or ours). ``True`` is rejected because no
            weights are downloadable (the official ``url`` is empty).
        fused: ``None`` = follow the checkpoint's form; ``True``/``False`` force the returned form.
        prefer_ema: take ``state_dict_ema`` / ``ema`` when the file has both.
        ignore_head: load everything but ``head.*`` (fine-tuning to another ``num_classes``).
        **kwargs: any :class:`FFNetSpec` field (``widths``, ``depths``, ``layer_scale_init`` ...) to derive a
            custom size, e.g. the tiny models of the tests and the quick start.
    """
    spec = get_spec(name)
    unknown = set(kwargs) - _SPEC_KEYS
    if unknown:
        raise FFNetError(f"create_model({name!r}): unknown argument(s) {sorted(unknown)}")
    check_spec_overrides(kwargs)
    spec = replace(spec, **{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    cfg = replace(PRETRAINED_CFGS.get(name, PretrainedCfg()), num_classes=num_classes)
    if pretrained is True:
        raise FFNetError(
            f"{name}: no downloadable weights (the official url is empty); pass pretrained=<path to .pth.tar>"
        )
    common = dict(in_chans=in_chans, drop_path_rate=drop_path_rate, drop_rate=drop_rate, pretrained_cfg=cfg)
    try:
        if features_only:
            model: FFNet = FFNetFeatures(spec, out_indices=out_indices, **common)
        else:
            model = FFNet(spec, num_classes=num_classes, **common)
    except ValueError as exc:  # per-stage lists of different lengths, mixed kernel kinds
        raise FFNetError(f"model.spec of {name}: {exc}") from None
    model.model_name = name  # type: ignore[assignment]
    if pretrained:
        model = load_pretrained(model, pretrained, prefer_ema=prefer_ema, ignore_head=ignore_head)
    if fused is True and not model.is_fused:
        model = model.fuse()
    elif fused is False and model.is_fused:
        raise FFNetError(f"{pretrained}: holds a fused (deploy) model; it cannot be turned back into the train form")
    return model


_PER_STAGE = ("widths", "depths", "token_kernels1", "token_kernels2", "channel_kernels")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_spec_overrides(spec: Mapping[str, Any]) -> None:
    """Reject impossible ``model.spec`` values (zero widths, even kernels, ...) with one line naming the key,
    before torch fails deep inside a layer constructor."""
    unknown = sorted(set(spec) - _SPEC_KEYS - {"drop_path_rate"})
    if unknown:
        hint = " (drop-path has its own key: model.drop_path_rate)" if "drop_path_rate" in unknown else ""
        raise FFNetError(f"model.spec: unknown key(s) {', '.join(unknown)}{hint}; valid: "
                         f"{', '.join(sorted(_SPEC_KEYS - {'drop_path_rate'}))}")
    for key, value in spec.items():
        where = f"model.spec.{key}"
        if key in _PER_STAGE:
            odd = "kernel" in key
            least = 0 if key == "depths" else 1
            ok = (isinstance(value, (list, tuple)) and len(value) > 0
                  and all(_is_int(v) and v >= least and (not odd or v % 2 == 1) for v in value))
            if not ok:
                want = "odd integers >= 1" if odd else f"integers >= {least}"
                raise FFNetError(f"{where} must be a list of {want} (one per stage), got {value!r}")
        elif key in ("stem_dim", "expansion", "small_kernel"):
            if not (_is_int(value) and value >= 1):
                raise FFNetError(f"{where} must be an integer >= 1, got {value!r}")
        elif key == "layer_scale_init":
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          and 0 < value < float("inf")):
                raise FFNetError(f"{where} must be a number > 0 or null, got {value!r}")
        elif key == "act" and not isinstance(value, str):
            raise FFNetError(f"{where} must be an activation name, got {value!r}")


def read_checkpoint_file(path: str | os.PathLike) -> Any:
    """Any weights file (ours or the authors' ``.pth.tar`` with its pickled ``args``), ``weights_only=True``."""
    return load_weights_file(path)


def state_dict_from(obj: Any, source: str, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights inside any supported checkpoint object, with ``module.`` prefixes stripped."""
    sd = extract_state_dict(obj, prefer_ema=prefer_ema)
    if not sd:
        raise FFNetError(f"{source}: the checkpoint holds an empty state_dict")
    return dict(sd)


def is_fused_state_dict(sd: Mapping[str, Any]) -> bool:
    """Deploy checkpoints have ``patch_embed.0.weight``; train-form ones ``patch_embed.0.c.weight``."""
    return "patch_embed.0.weight" in sd and "patch_embed.0.c.weight" not in sd


def load_pretrained(
    model: FFNet,
    path: str | os.PathLike,
    prefer_ema: bool = False,
    ignore_head: bool = False,
) -> FFNet:
    """Load a checkpoint strictly into ``model`` (fusing the model first if the checkpoint is fused)."""
    source = str(path)
    sd = state_dict_from(read_checkpoint_file(path), source, prefer_ema=prefer_ema)
    if is_fused_state_dict(sd) and not model.is_fused:
        model = model.fuse()
    if isinstance(model, FFNetFeatures):
        sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "norm."))}
        sd = {k: v for k, v in sd.items() if not k.startswith("stages.") or int(k.split(".")[1]) < len(model.stages)}
    if ignore_head:
        own = model.state_dict()
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        sd.update({k: v for k, v in own.items() if k.startswith("head.")})
    else:
        head_w = sd.get("head.weight")
        if head_w is not None and isinstance(model.head, nn.Linear) and head_w.shape[0] != model.num_classes:
            raise FFNetError(
                f"{source}: checkpoint has {head_w.shape[0]} classes but the model was built with "
                f"num_classes={model.num_classes}; pass num_classes={head_w.shape[0]} or ignore_head=True to fine-tune"
            )
    try:
        load_state_dict_checked(model, sd, source)
    except FFNetError as exc:
        guess = guess_variant(sd)
        if guess and guess != getattr(model, "model_name", None):
            raise FFNetError(f"{exc} (the checkpoint looks like {guess})") from None
        raise
    return model


def guess_variant(sd: Mapping[str, Any]) -> str | None:
    """Which registered variant a state_dict belongs to, judged by stem width and block count."""
    stem = sd.get("patch_embed.2.c.weight", sd.get("patch_embed.2.weight"))
    if stem is None:
        return None
    blocks = {k.split(".")[1] + "." + k.split(".")[2] for k in sd if k.startswith("stages.") and ".token_mixer." in k}
    for name in ("ffnet_1", "ffnet_2", "ffnet_3", "ffnet_4"):
        spec = SPECS[name]
        if spec.widths[0] == stem.shape[0] and sum(spec.depths) == len(blocks):
            return name
    return None


#: the top-level modules of every FFNet state_dict (train and fused form)
_FFNET_PREFIXES = ("patch_embed.", "stages.", "norm.", "head.")


def _looks_like_ffnet(sd: Mapping[str, Any]) -> bool:
    return all(k.startswith(_FFNET_PREFIXES) for k in sd) and any(k.startswith("patch_embed.2.") for k in sd)


def _size_of(sd: Mapping[str, Any]) -> tuple[int | None, int]:
    """(stem output width, number of blocks) of an FFNet-style state_dict."""
    stem = sd.get("patch_embed.2.c.weight", sd.get("patch_embed.2.weight"))
    blocks = {".".join(k.split(".")[1:3]) for k in sd if k.startswith("stages.") and ".token_mixer." in k}
    return (int(stem.shape[0]) if stem is not None else None), len(blocks)


def _what_the_weights_are(sd: Mapping[str, Any], expected: str | None) -> str:
    """A clause for a load failure: which variant the weights look like, or that they are no FFNet's."""
    if not _looks_like_ffnet(sd):
        return " (these are not FFNet weights at all)"
    guess = guess_variant(sd)
    return f" (the weights look like {guess}: pass --model {guess})" if guess and guess != expected else ""


def unrecorded_architecture_message(sd: Mapping[str, Any], source: str) -> str:
    """Why a weights file without a recorded architecture cannot be loaded, and what would load it.

    ``--model`` is suggested only where it helps: for FFNet weights of a registered variant. A custom-size FFNet
    or another network's weights say what was found instead (a flag cannot fix those).
    """
    keys = list(sd)
    if _looks_like_ffnet(sd):
        guess = guess_variant(sd)
        if guess:
            alt = f" (or {guess}_384 for the 384 px fine-tune)" if f"{guess}_384" in SPECS else ""
            return (f"{source}: FFNet weights that do not record their variant (an official or bare state_dict "
                    f"file); they look like {guess}: pass --model {guess}{alt}")
        width, blocks = _size_of(sd)
        known = ", ".join(f"{n} {SPECS[n].widths[0]}/{sum(SPECS[n].depths)}" for n in
                          ("ffnet_1", "ffnet_2", "ffnet_3", "ffnet_4"))
        return (f"{source}: FFNet weights of a size no registered variant has (stem width {width}, {blocks} "
                f"blocks; registered width/blocks: {known}); a custom size can only be rebuilt from the run "
                "checkpoint (best.pth / last.pth) of ffnet-cls-train, which records model.spec")
    foreign = [k for k in keys if not k.startswith(_FFNET_PREFIXES)]
    return (f"{source}: not FFNet weights: {len(foreign)} of its {len(keys)} weight keys are no FFNet key "
            f"(first: {', '.join(foreign[:4])}); expected a run checkpoint of ffnet-cls-train (best.pth / "
            "last.pth) or FFNet weights (an official .pth.tar, or a state_dict of patch_embed.*, stages.*, "
            "norm.*, head.*)")


class LoadedModel:
    """A model rebuilt from a checkpoint plus what the checkpoint knows about it (class names, config)."""

    def __init__(self, model: nn.Module, classes: list[str] | None, source: str, config: dict | None,
                 used_ema: bool) -> None:
        self.model = model
        self.classes = classes
        self.source = source
        self.config = config
        self.used_ema = used_ema


def load_model(
    path: str | os.PathLike,
    model_name: str | None = None,
    use_ema: bool = False,
    fused: bool | None = None,
) -> LoadedModel:
    """Rebuild a model from one of our run checkpoints (architecture from its config) or an official file.

    Official files carry no architecture, so ``model_name`` is required for them; the class count is read
    from ``head.weight``. ``use_ema`` picks the EMA weights (an error if the file has none).
    """
    source = str(path)
    obj = read_checkpoint_file(path)
    config = None
    classes = None
    if isinstance(obj, Mapping) and obj.get("format") == "ffnet-checkpoint":
        config = obj.get("config") or {}
        mcfg = dict(config.get("model", {}))
        extra = dict(obj.get("extra") or {})
        extra.update(extra.get("task") or {})  # the engine stores the task's state (class names) under "task"
        classes = list(extra["classes"]) if extra.get("classes") else None
        # the recorded architecture wins: a run checkpoint knows what it is (model_name is for foreign files)
        name = mcfg.get("name") or extra.get("model_name") or model_name
        spec_kwargs = dict(mcfg.get("spec") or {})
        if use_ema and not obj.get("ema"):
            raise FFNetError(f"{source}: has no EMA weights (trained with train.ema_decay=null); drop --ema")
        sd = dict(obj["ema"] if use_ema else obj["model"])
    else:
        sd = state_dict_from(obj, source, prefer_ema=use_ema)
        if model_name is None:
            raise FFNetError(unrecorded_architecture_message(sd, source))
        name, spec_kwargs = model_name, {}
        if use_ema and not any(k in obj for k in ("state_dict_ema", "model_ema", "params_ema")):
            raise FFNetError(f"{source}: has no EMA weights (no state_dict_ema); drop --ema")
    if name is None:
        raise FFNetError(f"{source}: the checkpoint does not record its model name; pass --model")
    head = sd.get("head.weight")
    num_classes = int(head.shape[0]) if head is not None else 0
    model: nn.Module = create_model(name, num_classes=num_classes, **spec_kwargs)
    if is_fused_state_dict(sd):
        model = model.fuse()
    try:
        load_state_dict_checked(model, sd, source + (" [ema]" if use_ema else ""))
    except FFNetError as exc:
        raise FFNetError(f"{exc}{_what_the_weights_are(sd, name)}") from None
    model.eval()
    if fused and not model.is_fused:
        model = model.fuse()
    if classes is not None and len(classes) != num_classes:
        raise FFNetError(f"{source}: {len(classes)} class names but a {num_classes}-way head")
    return LoadedModel(model, classes, source, config, use_ema)
