"""FFNet classification models (official key layout, train and fused forms)."""
from .backbone import FFNetFeatures, FFNetFeaturesDict
from .features import FeatureInfo
from .ffnet import IMAGENET_MEAN, IMAGENET_STD, FFNet, FFNetSpec, PatchMerging, PretrainedCfg
from .pretrained import DEFAULT_CFGS, adapt_input_conv, resolve_pretrained_cfg
from .registry import (
    PAPER_DROP_PATH,
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
    "FFNetFeaturesDict",
    "FFNetSpec",
    "FeatureInfo",
    "PatchMerging",
    "PretrainedCfg",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPECS",
    "DEFAULT_CFGS",
    "PAPER_DROP_PATH",
    "PRETRAINED_CFGS",
    "adapt_input_conv",
    "check_spec_overrides",
    "create_model",
    "get_spec",
    "list_models",
    "load_pretrained",
    "read_checkpoint_file",
    "resolve_pretrained_cfg",
    "state_dict_from",
    "is_fused_state_dict",
]
