"""FFNet classification models (official key layout, train and fused forms)."""
from .ffnet import IMAGENET_MEAN, IMAGENET_STD, FFNet, FFNetFeatures, FFNetSpec, PatchMerging, PretrainedCfg
from .registry import (
    PRETRAINED_CFGS,
    SPECS,
    check_spec_overrides,
    create_model,
    get_spec,
    is_fused_state_dict,
    list_models,
    load_pretrained,
    read_checkpoint_file,
    state_dict_from,
)

__all__ = [
    "FFNet",
    "FFNetFeatures",
    "FFNetSpec",
    "PatchMerging",
    "PretrainedCfg",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPECS",
    "PRETRAINED_CFGS",
    "check_spec_overrides",
    "create_model",
    "get_spec",
    "list_models",
    "load_pretrained",
    "read_checkpoint_file",
    "state_dict_from",
    "is_fused_state_dict",
]
