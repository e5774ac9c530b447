"""Configuration of the generation app: the sections ``run`` / ``data`` / ``model`` / ``optim`` / ``train`` / ``eval``.

``run``, ``optim`` and ``train`` are core's shared sections (one name per knob across all apps); ``train`` adds
only what is specific to diffusion training here (EMA warm-up, channels-last, kept snapshots). The diffusion
process is part of ``model`` (``model.diffusion``): it fixes the network's output (learned variance) and so must
travel with the weights into sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from metamixer.train.config import bounded
from metamixer.train.images import DEFAULT_MAX_PIXELS
from metamixer.train.sections import OptimConfig, RunConfig, TrainConfig

__all__ = ["DiffusionConfig", "ModelConfig", "DataConfig", "GenOptimConfig", "GenTrainConfig", "EvalConfig", "GenerationConfig"]


@dataclass
class DiffusionConfig:
    schedule: str = "linear"  # linear | cosine beta schedule
    num_steps: int = bounded(1000, ge=1)  # diffusion timesteps T of training
    variance_type: str = "learned_range"  # learned_range (network predicts sigma) | fixed_small | fixed_large
    loss_type: str = "hybrid"  # hybrid (mse + L_vb) | rescaled_hybrid | mse


@dataclass
class ModelConfig:
    #: u_ffnet_{s,b,l,tiny} (FFNet blocks in the encoder/decoder, attention in the bottleneck),
    #: u_ffnet_{s,b,l,tiny}_literal (only the attention replaced) or u_dit_{s,b,l,tiny} (all-attention baseline)
    name: str = "u_ffnet_b"
    #: latent (or pixel) side length: 32 for 256x256 images through the SD VAE (8x downsampling)
    input_size: int = bounded(32, ge=1)
    #: 4 for VAE latents, 1 or 3 in pixel mode
    in_channels: int = bounded(4, ge=1)
    num_classes: int = bounded(1000, ge=1)
    #: probability of the null label in training (classifier-free guidance)
    class_dropout: float = bounded(0.1, ge=0, le=1)
    #: std of the class-embedding tables' init; null = the name's default (DiT / U-DiT's 0.02 for s/b/l, 1.0 for
    #: the CPU-sized tiny models: short runs, docs/generation.md §4)
    label_init_std: float | None = bounded(None, gt=0)
    #: per level (enc1, enc2, bottleneck, dec2, dec1) "ffnified" or "attention"; null = the name's default
    token_mixers: list[str] | None = None
    #: per level "convnext" (FFNet's channel mixer) or "udit" (U-DiT's FFN); null = the name's default
    channel_mixers: list[str] | None = None
    #: depthwise kernel of the FFNet mixers (FFNified attention and FFNet's channel mixer)
    ffnified_kernel: int = bounded(7, ge=1)
    #: re-parameterizable training form of the channel mixers (U-DiT's FFN; the 3x3 branch of FFNet's), fused
    #: for sampling; false = plain (faster on CPU)
    rep_ffn: bool = True
    #: U-DiT token down-sampling inside attention (1 = global attention)
    down_factor: int = bounded(2, ge=1)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


@dataclass
class DataConfig:
    #: "latent" (folder written by ffnet-gen-extract-latents), "pixel" (class-folder images) or "digits"
    mode: Literal["latent", "pixel", "digits"] = "latent"
    #: latent folder or image folder (unused for digits); null = none
    path: str | None = None
    #: pixel mode: random horizontal flips (images are centre-cropped/resized to model.input_size)
    hflip: bool = True
    #: threads loading batches ahead (latent / pixel modes); 0 = load in the training thread
    num_workers: int = bounded(4, ge=0)
    #: latent mode: local diffusers AutoencoderKL folder decoding the sample grids and samples; null = none
    vae_path: str | None = None
    #: pixel mode: images with more pixels are refused (decompression-bomb guard); null = no limit
    max_pixels: int | None = bounded(DEFAULT_MAX_PIXELS, ge=1)


@dataclass
class GenOptimConfig(OptimConfig):
    """Core's optimizer section with DiT / U-DiT's defaults (AdamW, lr 1e-4, no weight decay, constant lr); a
    subclass, not a default instance, so a partial ``optim:`` section keeps these defaults. No fields added."""

    lr: float = bounded(1e-4, gt=0)
    schedule: str = "constant"


@dataclass
class GenTrainConfig(TrainConfig):
    """Core's training loop settings plus the diffusion-specific ones. Defaults are U-DiT's (a step run);
    ``batch_size`` is per process like everywhere (U-DiT's global 256 = 8 GPUs x 32)."""

    steps: int | None = bounded(400_000, ge=1)
    batch_size: int = bounded(32, ge=1)
    ema_decay: float | None = bounded(0.9999, ge=0, le=1)
    #: sampling grids and ffnet-gen-eval use the EMA weights
    eval_weights: Literal["model", "ema"] = "ema"
    #: steps between validations (EMA sample grid + window train loss); null = never
    val_every: int | None = bounded(10_000, ge=1)
    save_every: int | None = bounded(50_000, ge=1)
    log_every: int = bounded(100, ge=1)
    #: channels-last tensors: ~2-4x faster depthwise-conv backward on CPU (oneDNN), also good on GPU
    channels_last: bool = True


@dataclass
class EvalConfig:
    """How images are drawn: the EMA grids at each validation in training (``grid_*``) and the samples that
    ``ffnet-gen-eval --checkpoint`` scores (the rest; defaults are DiT's FID-50K protocol)."""

    #: images in the sample grid at each validation; null = no grids
    grid_count: int | None = bounded(16, ge=1)
    grid_steps: str = "ddim50"
    grid_cfg_scale: float = bounded(4.0, ge=0, le=50)
    num_samples: int = bounded(50_000, ge=1)
    #: sampler: N (DDPM respaced to N steps) or ddimN
    steps: str = "250"
    cfg_scale: float = bounded(1.5, ge=0, le=50)  # classifier-free guidance (1 = off)
    #: guide only the first K channels (3 = DiT's released sampler); null = all
    guided_channels: int | None = bounded(None, ge=1)
    eta: float = bounded(0.0, ge=0, le=1)  # DDIM eta (0 = deterministic)
    labels: str = "random"  # random | all (0, 1, 2, ... cycling) | a comma list of class ids
    batch_size: int = bounded(64, ge=1)
    seed: int = 0


@dataclass
class GenerationConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: GenOptimConfig = field(default_factory=GenOptimConfig)
    train: GenTrainConfig = field(default_factory=GenTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
