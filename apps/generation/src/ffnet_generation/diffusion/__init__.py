"""Gaussian diffusion (schedules, posterior, hybrid loss, DDPM/DDIM samplers, respacing, guidance)."""

from .gaussian import LOSS_TYPES, VARIANCE_TYPES, GaussianDiffusion, create_diffusion
from .guidance import GuidedModel, check_guidance_scale, mix_guidance
from .schedules import get_named_beta_schedule, respaced_betas, space_timesteps

__all__ = ["GaussianDiffusion", "create_diffusion", "LOSS_TYPES", "VARIANCE_TYPES", "GuidedModel",
           "mix_guidance", "check_guidance_scale", "get_named_beta_schedule", "space_timesteps", "respaced_betas"]
