"""Configuration dataclasses of the generation app (YAML recipes + dotted overrides via ``metamixer.train.config``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ModelConfig", "DataConfig", "DiffusionConfig", "TrainConfig", "GenerationConfig"]


@dataclass
class ModelConfig:
    #: u_ffnet_{s,b,l,tiny} (hybrid) or u_dit_{s,b,l,tiny} (all-attention baseline)
    name: str = "u_ffnet_b"
    #: latent (or pixel) side length: 32 for 256x256 images through the SD VAE (8x downsampling)
    input_size: int = 32
    #: 4 for VAE latents, 1 or 3 in pixel mode
    in_channels: int = 4
    num_classes: int = 1000
    #: probability of the null label in training (classifier-free guidance)
    class_dropout: float = 0.1
    #: per level (enc1, enc2, bottleneck, dec2, dec1) "ffnified" or "attention"; null = the name's default
    token_mixers: list[str] | None = None
    #: FFNified attention depthwise kernel
    ffnified_kernel: int = 7
    #: U-DiT's re-parameterizable FFN in training (fused for sampling); false = plain FFN (faster on CPU)
    rep_ffn: bool = True
    #: U-DiT token down-sampling inside attention (1 = global attention)
    down_factor: int = 2


@dataclass
class DataConfig:
    #: "latent" (folder written by ffnet-gen-extract-latents), "pixel" (class-folder images) or "digits"
    mode: str = "latent"
    #: latent folder or image folder (unused for digits)
    path: str = ""
    #: pixel mode: images are centre-cropped/resized to model.input_size
    hflip: bool = True
    num_workers: int = 4


@dataclass
class DiffusionConfig:
    schedule: str = "linear"
    num_steps: int = 1000
    variance_type: str = "learned_range"
    loss_type: str = "hybrid"


@dataclass
class TrainConfig:
    #: global batch (split over DDP ranks)
    batch_size: int = 256
    steps: int = 400_000
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    ema_decay: float = 0.9999
    #: EMA decay warm-up min(decay, (1+n)/(10+n)): useful for short (CPU) runs only
    ema_warmup: bool = False
    #: fp32, bf16 or fp16 (autocast; fp16 uses a grad scaler on CUDA)
    precision: str = "fp32"
    #: channels-last tensors: ~2-4x faster depthwise-conv backward on CPU (oneDNN), also good on GPU
    channels_last: bool = True
    log_every: int = 100
    ckpt_every: int = 50_000
    #: also keep step_XXXXXXX.pth copies at each ckpt_every (last.pth is always written)
    keep_checkpoints: bool = True
    #: EMA sample grid to tensorboard + PNG every N steps (0 = never)
    sample_every: int = 10_000
    sample_count: int = 16
    sample_steps: str = "ddim50"
    sample_cfg_scale: float = 4.0


@dataclass
class GenerationConfig:
    output_dir: str = "runs/u_ffnet_b"
    seed: int = 0
    #: "auto" (cuda if available), "cpu", "cuda"
    device: str = "auto"
    #: latent mode: local diffusers AutoencoderKL folder used to decode the sample grids (optional in training)
    vae_path: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
