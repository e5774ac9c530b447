"""Model names, default configs and ``create_model`` (timm-compatible signature), incl. checkpoint loading.

Checkpoints accepted by ``pretrained=<path>``:

* the authors' ``.pth.tar`` (timm trainer): ``{"state_dict": ..., "state_dict_ema": ..., "args": Namespace}``,
  possibly with ``module.`` prefixes (DDP) — train form or fused (deploy) form;
* our own ``metamixer.train.checkpoint`` files (``model`` / ``ema``);
* a bare state_dict.

The form (train vs fused) is detected from the keys, so a deploy-form checkpoint yields a fused model.
"""
from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from metamixer.train.checkpoint import extract_state_dict, load_state_dict_checked, load_weights_file
from metamixer.train.errors import FFNetError

from .backbone import FEATURE_CLS, FFNetFeatures, FFNetFeaturesDict
from .ffnet import FIRST_CONV, FFNet, FFNetSpec, PretrainedCfg
from .pretrained import (
    DEFAULT_CFGS,
    adapt_input_conv,
    default_tag,
    resolve_pretrained_cfg,
    split_model_name_tag,
    weights_source,
)

_BASE = FFNetSpec()

#: the official factory architectures (official_architecture.md §1.1). Drop-path is 0, timm's default for
#: every model; the paper's rates are in PAPER_DROP_PATH and the training recipes set them explicitly.
SPECS: dict[str, FFNetSpec] = {
    "ffnet_1": replace(_BASE, widths=(80, 160, 320, 640), depths=(2, 2, 8, 2), channel_kernels=(3, 3, 3, 3)),
    "ffnet_2": replace(_BASE, widths=(88, 176, 352, 704), depths=(3, 3, 15, 3), channel_kernels=(7, 7, 7, 7)),
    "ffnet_3": replace(_BASE, widths=(96, 192, 384, 768), depths=(4, 4, 22, 5), channel_kernels=(7, 7, 7, 7),
                       layer_scale_init=1e-6),
    "ffnet_4": replace(_BASE, widths=(128, 256, 512, 1024), depths=(4, 4, 27, 3), channel_kernels=(7, 7, 7, 7),
                       layer_scale_init=1e-6),
}
# 384 fine-tune configs: same weights layout as the 256 models.
SPECS["ffnet_3_384"] = SPECS["ffnet_3"]
SPECS["ffnet_4_384"] = SPECS["ffnet_4"]

#: the paper's / official recipes' drop-path rates (ImageNet training from scratch; the 384 px fine-tunes),
#: which ``recipes/*.yaml`` set as ``model.drop_path_rate`` (KD recipes: 0.02 / 0.08 / 0.2)
PAPER_DROP_PATH: dict[str, float] = {"ffnet_1": 0.1, "ffnet_2": 0.15, "ffnet_3": 0.35, "ffnet_4": 0.4,
                                     "ffnet_3_384": 0.4, "ffnet_4_384": 0.5}

#: each model's default pretrained cfg (its first registered tag), as a PretrainedCfg
PRETRAINED_CFGS: dict[str, PretrainedCfg] = {name: DEFAULT_CFGS[f"{name}.{default_tag(name)}"] for name in SPECS}

_SPEC_KEYS = set(FFNetSpec.__dataclass_fields__)
#: timm ``create_model`` arguments that select timm's layer variants; FFNet is always scriptable / exportable
_TIMM_LAYER_FLAGS = ("scriptable", "exportable", "no_jit")
#: ``feature_cfg`` keys (timm's builder): flatten_sequential only rewrites timm's wrappers and changes nothing here
_FEATURE_CFG_KEYS = ("out_indices", "feature_cls", "output_fmt", "flatten_sequential")


def list_models() -> list[str]:
    """All registered model names."""
    return sorted(SPECS)


def get_spec(name: str) -> FFNetSpec:
    name = split_model_name_tag(name)[0]
    if name not in SPECS:
        raise FFNetError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return SPECS[name]


def create_model(
    name: str,
    pretrained: bool | str | os.PathLike | None = False,
    pretrained_cfg: str | Mapping[str, Any] | Any | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    drop_path_rate: float | None = None,
    drop_rate: float = 0.0,
    global_pool: str | None = None,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    feature_cls: str | Callable[..., nn.Module] | None = None,
    feature_cfg: Mapping[str, Any] | None = None,
    fused: bool | None = None,
    prefer_ema: bool | None = None,
    ignore_head: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build ``ffnet_1`` .. ``ffnet_4`` (``_384`` variants too) with timm's ``create_model`` semantics.

    Args:
        name: model name, optionally with a pretrained tag (``"ffnet_1.in1k_dist"``; see :func:`list_models`).
        pretrained: ``True`` loads the weights the pretrained cfg points at (``file`` / ``state_dict``, set
            with ``pretrained_cfg_overlay``) and raises when it points at none; a path loads that file
            (official ``.pth.tar``, our checkpoints, timm exports); ``False`` / ``None``: random init.
        pretrained_cfg: a tag (``"in1k"``) or a cfg dict replacing the registered one (timm semantics).
        pretrained_cfg_overlay: cfg fields to replace (``file=...``).
        num_classes: classifier size (default: the cfg's 1000; ``0`` = pooled features). When it differs from
            the pretrained head, the head is dropped and initialized afresh (timm's fine-tuning rule).
        in_chans: input channels (default 3); a pretrained first conv is adapted (timm's ``adapt_input_conv``).
        drop_path_rate: stochastic depth (default 0, as timm's models; the recipes set the paper's rates).
        global_pool: ``avg`` (default), ``max``, ``avgmax``, ``catavgmax`` or ``''`` (no pooling, needs
            ``num_classes=0``).
        features_only / out_indices / feature_cls / feature_cfg: a feature backbone as timm builds one;
            ``out_indices`` an int (last n stages) or indices; ``feature_cls`` ``list`` (default), ``dict``,
            ``getter``, ``hook``, ``fx`` (all but ``dict`` return a list) or a wrapper class called as
            ``feature_cls(classifier, out_indices=...)``.
        fused: ``None`` = follow the checkpoint's form; ``True``/``False`` force the returned form.
        prefer_ema: take ``state_dict_ema`` / ``ema`` when the file has both; default ``True`` for
            ``pretrained=True`` (timm's loader prefers EMA weights) and ``False`` for a path.
        ignore_head: drop the checkpoint's ``head.*`` even when its size fits.
        **kwargs: any :class:`FFNetSpec` field (``widths``, ``depths``, ``layer_scale_init`` ...) to derive a
            custom size, e.g. the tiny models of the tests and the quick start; timm's ``scriptable`` /
            ``exportable`` / ``no_jit`` are accepted and change nothing (FFNet is always both).
    """
    model_name, tag = split_model_name_tag(name)
    spec = get_spec(model_name)
    for flag in _TIMM_LAYER_FLAGS:
        kwargs.pop(flag, None)
    unknown = set(kwargs) - _SPEC_KEYS
    if unknown:
        raise FFNetError(f"create_model({name!r}): unknown argument(s) {sorted(unknown)}")
    check_spec_overrides(kwargs)
    spec = replace(spec, **{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    if pretrained is not None and not isinstance(pretrained, (bool, str, os.PathLike)):
        raise FFNetError(f"create_model({name!r}): pretrained must be True/False or a checkpoint path, "
                         f"got {pretrained!r} (num_classes is a keyword argument)")
    cfg = resolve_pretrained_cfg(model_name, tag, pretrained_cfg, pretrained_cfg_overlay)
    source: Any = None
    if pretrained is True:
        kind, source = weights_source(cfg)
        prefer_ema = True if prefer_ema is None else prefer_ema
    elif pretrained:
        source = pretrained
    cfg.pop("state_dict", None)  # the model keeps no reference to in-memory weights
    num_classes = cfg.get("num_classes", 1000) if num_classes is None else num_classes
    in_chans = cfg["input_size"][0] if in_chans is None else in_chans
    feats = _feature_args(features_only, out_indices, feature_cls, feature_cfg)
    common = dict(in_chans=in_chans, drop_path_rate=drop_path_rate, drop_rate=drop_rate, pretrained_cfg=cfg)
    try:
        if feats is not None and isinstance(feats["feature_cls"], str):
            cls = FFNetFeaturesDict if feats["feature_cls"] == "dict" else FFNetFeatures
            model: FFNet = cls(spec, out_indices=feats["out_indices"], output_fmt=feats["output_fmt"], **common)
        else:
            model = FFNet(spec, num_classes=num_classes, global_pool="avg" if global_pool is None else global_pool,
                          **common)
    except ValueError as exc:  # per-stage lists of different lengths, mixed kernel kinds, pooling, indices
        raise FFNetError(f"create_model({name!r}): {exc}") from None
    model.model_name = model_name  # type: ignore[assignment]
    if source is not None:
        model = load_pretrained(model, source, prefer_ema=bool(prefer_ema), ignore_head=ignore_head)
    if fused is True and not model.is_fused:
        model = model.fuse()
    elif fused is False and model.is_fused:
        raise FFNetError(f"{pretrained}: holds a fused (deploy) model; it cannot be turned back into the train form")
    if feats is not None and not isinstance(feats["feature_cls"], str):
        wrapper = _wrap_features(model, feats)
        wrapper.pretrained_cfg = wrapper.default_cfg = features_cfg(model.pretrained_cfg)
        return wrapper
    if isinstance(model, FFNetFeatures):
        model.pretrained_cfg = model.default_cfg = features_cfg(model.pretrained_cfg)
    return model


def _wrap_features(model: nn.Module, feats: Mapping[str, Any]) -> nn.Module:
    """``feature_cls`` given as a class (e.g. timm's ``FeatureListNet``): called as timm's builder calls it.
    timm's module-walking wrappers reach ``stages.i`` only with ``flatten_sequential`` (the nn.Sequential of
    stages flattened), which timm's own 4-stage models set in their feature_cfg, so it defaults to True here."""
    cls = feats["feature_cls"]
    kwargs: dict[str, Any] = {"out_indices": feats["out_indices"]}
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    if "flatten_sequential" in params:
        kwargs["flatten_sequential"] = feats.get("flatten_sequential", True)
    if "output_fmt" in params and feats.get("output_fmt", "NCHW") != "NCHW":
        kwargs["output_fmt"] = feats["output_fmt"]
    return cls(model, **kwargs)


def features_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The cfg of a features_only model: timm drops the classifier fields (``num_classes``, ``classifier``)."""
    return {k: v for k, v in cfg.items() if k not in ("num_classes", "classifier", "global_pool")}


def _feature_args(features_only: bool, out_indices: Any, feature_cls: Any,
                  feature_cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """timm's precedence: ``feature_cfg`` first, the ``out_indices`` / ``feature_cls`` keywords over it."""
    cfg = dict(feature_cfg or {})
    unknown = sorted(set(cfg) - set(_FEATURE_CFG_KEYS))
    if unknown:
        raise FFNetError(f"feature_cfg: unknown key(s) {', '.join(unknown)}; valid: {', '.join(_FEATURE_CFG_KEYS)}")
    if not features_only:
        if out_indices is not None or feature_cls is not None or feature_cfg:
            raise FFNetError("out_indices / feature_cls / feature_cfg need features_only=True")
        return None
    out = {"out_indices": (0, 1, 2, 3), "feature_cls": "list", "output_fmt": "NCHW"}
    out.update(cfg)
    if out_indices is not None:
        out["out_indices"] = out_indices
    if feature_cls is not None:
        out["feature_cls"] = feature_cls
    kind = out["feature_cls"]
    if isinstance(kind, str):
        out["feature_cls"] = kind = kind.lower()
        if kind not in FEATURE_CLS:
            raise FFNetError(f"feature_cls={kind!r}: expected one of {', '.join(FEATURE_CLS)} or a wrapper class")
    elif not callable(kind):
        raise FFNetError(f"feature_cls must be a name ({', '.join(FEATURE_CLS)}) or a class, got {kind!r}")
    return out


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
    path: str | os.PathLike | Mapping[str, Any],
    prefer_ema: bool = False,
    ignore_head: bool = False,
) -> FFNet:
    """Load a checkpoint (a file, or an in-memory state_dict) into ``model``, adapting it as timm does.

    The model is fused first when the checkpoint is. timm's fine-tuning rules: a head of another size (class
    count, or ``catavgmax`` pooling) or none in the model is dropped and the model's fresh head kept, and so is
    one under ``ignore_head``; a first conv trained on RGB is adapted to the model's ``in_chans``
    (:func:`adapt_input_conv`). Everything else must match (missing / unexpected / wrongly shaped keys are
    listed, with the variant the weights look like).
    """
    if isinstance(path, Mapping):
        source = "pretrained_cfg state_dict"
        sd = state_dict_from(path, source, prefer_ema=prefer_ema)
    else:
        source = str(path)
        sd = state_dict_from(read_checkpoint_file(path), source, prefer_ema=prefer_ema)
    if is_fused_state_dict(sd) and not model.is_fused:
        model = model.fuse()
    own = model.state_dict()
    if isinstance(model, FFNetFeatures):
        sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "norm."))}
        sd = {k: v for k, v in sd.items() if not k.startswith("stages.") or int(k.split(".")[1]) < len(model.stages)}
    else:
        heads = [k for k in own if k.startswith("head.")]
        keep = not ignore_head and all(k in sd and sd[k].shape == own[k].shape for k in heads) and (
            heads or not any(k.startswith("head.") for k in sd))
        if not keep:  # another class count / pooling, a backbone (num_classes=0), or ignore_head
            sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
            sd.update({k: own[k] for k in heads})
    conv = f"{model.pretrained_cfg.get('first_conv') or FIRST_CONV[model.is_fused]}.weight"
    if conv in sd and conv in own and sd[conv].shape[1] != own[conv].shape[1]:
        try:
            sd[conv] = adapt_input_conv(own[conv].shape[1], sd[conv])
        except NotImplementedError as exc:
            warnings.warn(f"{source}: {exc}; {conv} keeps its random init", stacklevel=2)
            sd[conv] = own[conv]
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
        spec_kwargs = {}
        if isinstance(obj, Mapping) and obj.get("format") == "ffnet-timm-weights":  # ffnet-cls-export --formats timm
            model_name = model_name or obj.get("arch")
            spec_kwargs = dict(obj.get("model_kwargs") or {})
            classes = list(obj["classes"]) if obj.get("classes") else None
        if model_name is None:
            raise FFNetError(unrecorded_architecture_message(sd, source))
        name = model_name
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
