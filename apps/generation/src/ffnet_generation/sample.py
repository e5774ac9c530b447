"""Sample images from a trained checkpoint: PNG grid + ADM-compatible ``.npz`` (uint8 NHWC ``arr_0``, labels ``arr_1``).

``ffnet-gen-sample --checkpoint last.pth --output samples/ --num-samples 50000 --steps 250 --cfg-scale 1.5`` (DiT's FID
protocol: 250 DDPM steps, guidance 1.5 on all channels; ``--guided-channels 3`` reproduces DiT's released
sampler). Under ``torchrun`` the work is split by batches across ranks; batch ``b`` always uses the noise
seeded by (seed, b), so the images do not depend on the number of processes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from metamixer.train.device import resolve_device
from metamixer.train.distributed import barrier, cleanup_distributed, init_distributed
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_json

from .builders import build_diffusion, load_trained_model
from .data.images import make_grid, save_png, to_uint8
from .diffusion import check_guidance_scale
from .diffusion.schedules import space_timesteps
from .sampling import check_labels, generate

__all__ = ["sample_to_npz", "parse_labels", "main", "cli"]


def parse_labels(text: str, num: int, num_classes: int, seed: int) -> torch.Tensor:
    """``random`` (uniform, seeded), ``all`` (0,1,2,... cycling) or a comma list (cycled to ``num``)."""
    if num < 1:
        raise FFNetError(f"--num-samples must be >= 1, got {num}")
    if text == "random":
        return torch.randint(0, num_classes, (num,), generator=torch.Generator().manual_seed(seed + 12345))
    if text == "all":
        return torch.arange(num) % num_classes
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FFNetError(f"--labels must be 'random', 'all' or a comma list of integers, got {text!r}") from None
    if not values:
        raise FFNetError("--labels is empty")
    labels = torch.tensor(values * (num // len(values) + 1))[:num]
    check_labels(labels, num_classes)
    return labels


def sample_to_npz(checkpoint: str, output: str | Path, *, num: int = 16, labels: str = "random", seed: int = 0,
                  steps: str = "250", cfg_scale: float = 1.0, eta: float = 0.0, guided_channels: int | None = None,
                  batch_size: int = 64, vae_path: str = "", use_ema: bool = True, device: str = "auto",
                  grid_count: int = 64) -> dict:
    """Generate ``num`` images; rank 0 writes ``samples.npz``, ``grid.png`` and ``sample_info.json``."""
    check_guidance_scale(cfg_scale)
    if batch_size < 1:
        raise FFNetError(f"--batch-size must be >= 1, got {batch_size}")
    if not 0.0 <= eta <= 1.0:
        raise FFNetError(f"--eta must be in [0, 1], got {eta}")
    info = init_distributed(resolve_device(device, key="--device"))
    model, cfg, ckpt = load_trained_model(checkpoint, use_ema=use_ema, device=info.device)
    space_timesteps(cfg.model.diffusion.num_steps, steps)  # validates the step spec before any work
    method = "ddim" if str(steps).startswith("ddim") else "ddpm"
    diffusion = build_diffusion(cfg, steps)
    all_labels = parse_labels(labels, num, cfg.model.num_classes, seed)
    decode = None
    latent = cfg.data.mode == "latent"
    if latent:
        from .data.latents import load_vae

        decode = load_vae(vae_path or cfg.data.vae_path or "", info.device).decode
    out = Path(output)
    shard_dir = out / ".shards"
    if info.is_main:
        shard_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    n_batches = (num + batch_size - 1) // batch_size
    t0 = time.perf_counter()
    for b in range(info.rank, n_batches, info.world_size):
        batch_labels = all_labels[b * batch_size:(b + 1) * batch_size]
        gen = torch.Generator(device=info.device).manual_seed(seed * 1_000_003 + b)
        images = generate(model, diffusion, batch_labels, cfg_scale=cfg_scale, method=method, eta=eta,
                          guided_channels=guided_channels, generator=gen, clip_denoised=not latent, decode=decode)
        np.save(shard_dir / f"batch_{b:06d}.npy", to_uint8(images))
    barrier()
    seconds = time.perf_counter() - t0
    result = {"checkpoint": str(checkpoint), "num": num, "steps": str(steps), "method": method,
              "cfg_scale": cfg_scale, "guided_channels": guided_channels or "all", "eta": eta, "seed": seed,
              "ema": use_ema, "world_size": info.world_size, "seconds": seconds, "train_step": int(ckpt["step"])}
    if info.is_main:
        arr = np.concatenate([np.load(shard_dir / f"batch_{b:06d}.npy") for b in range(n_batches)])
        np.savez(out / "samples.npz", arr_0=arr, arr_1=all_labels.numpy().astype(np.int64))
        # one column per class when sampling every class in turn (labels="all"), else a square grid
        ncols = cfg.model.num_classes if labels == "all" and cfg.model.num_classes <= 16 else None
        save_png(make_grid(arr[:grid_count], ncols=ncols), out / "grid.png")
        for f in shard_dir.glob("batch_*.npy"):
            f.unlink()
        shard_dir.rmdir()
        result.update(npz=str(out / "samples.npz"), grid=str(out / "grid.png"), shape=list(arr.shape),
                      images_per_second=num / seconds)
        write_json(out / "sample_info.json", result)
    cleanup_distributed()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="ffnet-gen-sample", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint written by ffnet-gen-train (EMA weights used)")
    p.add_argument("--output", required=True, help="folder for samples.npz, grid.png, sample_info.json")
    p.add_argument("--num-samples", type=int, default=16, help="number of images")
    p.add_argument("--labels", default="random", help="'random', 'all' or a comma list of class ids")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default="250", help="sampling steps: N (DDPM, respaced) or ddimN")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    p.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--guided-channels", type=int, default=None,
                   help="guide only the first K channels (3 = DiT's released sampler); default all")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--vae", default="", help="latent checkpoints: local AutoencoderKL folder")
    p.add_argument("--no-ema", action="store_true", help="use the raw (non-EMA) weights")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    result = sample_to_npz(a.checkpoint, a.output, num=a.num_samples, labels=a.labels, seed=a.seed, steps=a.steps,
                           cfg_scale=a.cfg_scale, eta=a.eta, guided_channels=a.guided_channels,
                           batch_size=a.batch_size, vae_path=a.vae, use_ema=not a.no_ema, device=a.device)
    if "npz" in result:
        print(json.dumps({k: result[k] for k in ("npz", "grid", "shape", "images_per_second")}))
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
