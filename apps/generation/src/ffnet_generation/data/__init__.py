"""Data: pixel-mode image folders and digits, latent-mode VAE and pre-extracted latent shards."""

from .images import DigitsDataset, ImageFolderDataset, make_grid, save_png, to_uint8
from .latents import SD_VAE_SCALE, LatentDataset, load_vae

__all__ = ["DigitsDataset", "ImageFolderDataset", "LatentDataset", "load_vae", "SD_VAE_SCALE", "make_grid",
           "save_png", "to_uint8"]
