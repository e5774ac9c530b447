"""Build models / diffusions / datasets from a config, and load a trained model back from a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from metamixer.train.checkpoint import load_checkpoint, load_state_dict_checked
from metamixer.train.config import apply_overrides, config_from_dict
from metamixer.train.errors import FFNetError

from .config import GenerationConfig, ModelConfig
from .diffusion import GaussianDiffusion, create_diffusion
from .models import UShapedDiffusionTransformer, create_model

__all__ = ["build_model", "build_diffusion", "build_dataset", "load_trained_model", "checkpoint_config"]


def build_model(cfg: ModelConfig, learn_sigma: bool = True) -> UShapedDiffusionTransformer:
    overrides: dict = {"class_dropout": cfg.class_dropout, "ffnified_kernel": cfg.ffnified_kernel,
                       "rep_ffn": cfg.rep_ffn, "down_factor": cfg.down_factor,
                       "learn_sigma": learn_sigma}
    for key in ("token_mixers", "channel_mixers"):
        if getattr(cfg, key) is not None:
            overrides[key] = tuple(getattr(cfg, key))
    if cfg.label_init_std is not None:
        overrides["label_init_std"] = cfg.label_init_std
    return create_model(cfg.name, input_size=cfg.input_size, in_channels=cfg.in_channels,
                        num_classes=cfg.num_classes, **overrides)


def build_diffusion(cfg: GenerationConfig, steps: str | int | None = None) -> GaussianDiffusion:
    d = cfg.model.diffusion
    return create_diffusion(steps, schedule=d.schedule, num_steps=d.num_steps, variance_type=d.variance_type,
                            loss_type=d.loss_type)


def _check_folder(path: str, expected: str) -> None:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        found = "is a file" if folder.exists() else "does not exist"
        raise FFNetError(f"data.path={path}: {found}, expected {expected}")


def build_dataset(cfg: GenerationConfig, verify: bool = False):
    """The training dataset of ``cfg.data.mode``, checked against the model's channels / classes / size;
    ``verify`` decodes every image of a pixel-mode folder once (all unreadable files listed, then an error)."""
    from .data.images import DigitsDataset, ImageFolderDataset
    from .data.latents import LatentDataset

    mode, m = cfg.data.mode, cfg.model
    if mode == "digits":
        if m.in_channels != 1 or m.num_classes < 10:
            raise FFNetError("data.mode=digits needs model.in_channels=1 and model.num_classes>=10")
        return DigitsDataset(m.input_size)
    if mode == "pixel":
        if m.in_channels not in (1, 3):
            raise FFNetError(f"pixel mode needs model.in_channels 1 or 3, got {m.in_channels}")
        if not cfg.data.path:
            raise FFNetError("data.mode=pixel needs data.path: a folder of images (class sub-folders = labels)")
        _check_folder(cfg.data.path, "a folder of images (class sub-folders = labels)")
        ds = ImageFolderDataset(cfg.data.path, m.input_size, m.in_channels, hflip=False,
                                num_classes=m.num_classes, max_pixels=cfg.data.max_pixels)
        if verify:
            ds.verify()
        return ds
    if mode == "latent":
        if not cfg.data.path:
            raise FFNetError("data.mode=latent needs data.path: a folder written by ffnet-gen-extract-latents")
        _check_folder(cfg.data.path, "a folder written by ffnet-gen-extract-latents")
        ds = LatentDataset(cfg.data.path, num_classes=m.num_classes)
        shape = ds[0][0].shape
        if shape[0] != m.in_channels or shape[-1] != m.input_size:
            raise FFNetError(f"latents in {cfg.data.path} are {tuple(shape)} but the model expects "
                             f"({m.in_channels}, {m.input_size}, {m.input_size})")
        return ds
    raise FFNetError(f"data.mode must be 'latent', 'pixel' or 'digits', got {mode!r}")


def checkpoint_config(ckpt: dict, path: str | Path, overrides: Sequence[str] = ()) -> GenerationConfig:
    """The training config stored in a checkpoint of ffnet-gen-train, with dotted ``overrides`` applied."""
    stored = ckpt.get("config")
    if not stored or "run" not in stored:
        raise FFNetError(f"{path}: checkpoint has no config of this ffnet-gen-train (written by another app, or "
                         "before the run/data/model/optim/train/eval layout)")
    if overrides:
        stored = apply_overrides(stored, overrides, cls=GenerationConfig)
    return config_from_dict(GenerationConfig, stored, source=f"{path} [config]")


def load_trained_model(path: str | Path, *, use_ema: bool = True, device: torch.device | str = "cpu",
                       fuse: bool = True) -> tuple[UShapedDiffusionTransformer, GenerationConfig, dict]:
    """Model (EMA weights by default, fused for inference), its config and the raw checkpoint."""
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    learn_sigma = cfg.model.diffusion.variance_type == "learned_range"
    model = build_model(cfg.model, learn_sigma=learn_sigma)
    state = ckpt.get("ema") if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    try:
        load_state_dict_checked(model, state, str(path))
    except FFNetError:
        # u_ffnet_* named the literal reading (U-DiT's FFN everywhere) before it became the FFNet-block reading;
        # such a checkpoint's weights say which one it is, so it keeps loading under its stored name
        literal = replace(cfg.model, channel_mixers=["udit"] * 5)
        if not (cfg.model.name.startswith("u_ffnet_") and cfg.model.channel_mixers is None):
            raise
        model = build_model(literal, learn_sigma=learn_sigma)
        try:
            load_state_dict_checked(model, state, str(path))
        except FFNetError:
            model = build_model(cfg.model, learn_sigma=learn_sigma)
            load_state_dict_checked(model, state, str(path))  # the message of the stored architecture
        cfg = replace(cfg, model=literal)
    model = model.to(device).eval()
    return (model.fuse() if fuse else model), cfg, ckpt
