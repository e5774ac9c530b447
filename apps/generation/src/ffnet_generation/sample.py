"""Sample images from a trained checkpoint: PNG grid + ADM-compatible ``.npz`` (uint8 NHWC ``arr_0``, labels ``arr_1``).

``ffnet-gen-sample --checkpoint last.pth --output samples/ --num-samples 50000 --steps 250 --cfg-scale 1.5`` (DiT's FID
protocol: 250 DDPM steps, guidance 1.5 on all channels; ``--guided-channels 3`` reproduces DiT's released
sampler). Under ``torchrun`` the work is split by batches across ranks; batch ``b`` always uses the noise
seeded by (seed, b), so the images do not depend on the number of processes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from metamixer.train.cli import OverrideParser, build_eval_parser
from metamixer.train.device import resolve_device
from metamixer.train.distributed import barrier, cleanup_distributed, init_distributed
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.outputs import check_output_folder, created_folder
from metamixer.train.results import write_json

from .builders import build_diffusion, load_trained_model
from .data.images import make_grid, save_png, to_uint8
from .files import save_npz
from .sampling import CLI_NAMES, check_labels, check_sampler_options, check_steps, generate, label_values

__all__ = ["sample_to_npz", "parse_labels", "build_parser", "main", "cli"]


def parse_labels(text: str, num: int, num_classes: int, seed: int, names: Mapping[str, str] = CLI_NAMES) -> torch.Tensor:
    """``random`` (uniform, seeded), ``all`` (0,1,2,... cycling) or a comma list (cycled to ``num``)."""
    if num < 1:
        raise FFNetError(f"{names['num']} must be >= 1, got {num}")
    values = label_values(text, names["labels"])
    if text == "random":
        return torch.randint(0, num_classes, (num,), generator=torch.Generator().manual_seed(seed + 12345))
    if values is None:  # all
        return torch.arange(num) % num_classes
    labels = torch.tensor(values * (num // len(values) + 1))[:num]
    check_labels(labels, num_classes, names["labels"])
    return labels


def sample_to_npz(checkpoint: str, output: str | Path, *, num: int = 16, labels: str = "random", seed: int = 0,
                  steps: str = "250", cfg_scale: float = 1.0, eta: float = 0.0, guided_channels: int | None = None,
                  batch_size: int = 64, vae_path: str = "", use_ema: bool = True, device: str = "auto",
                  grid_count: int = 64, names: Mapping[str, str] = CLI_NAMES) -> dict:
    """Generate ``num`` images; rank 0 writes ``samples.npz``, ``grid.png`` and ``sample_info.json``.

    Every setting is checked (``names``: how the messages spell them) before the checkpoint is read, and
    against the checkpoint (classes, steps, channels) before ``output`` is created; each file is written
    atomically and a failure removes the folders this call created, so nothing half-done is left behind."""
    check_sampler_options(num=num, labels=labels, steps=steps, cfg_scale=cfg_scale, eta=eta,
                          guided_channels=guided_channels, batch_size=batch_size, names=names)
    if grid_count < 1:
        raise FFNetError(f"grid_count must be >= 1, got {grid_count}")
    out = check_output_folder(output)
    info = init_distributed(resolve_device(device, key="--device"))
    model, cfg, ckpt = load_trained_model(checkpoint, use_ema=use_ema, device=info.device)
    check_steps(steps, cfg.model.diffusion.num_steps, names["steps"])
    if guided_channels is not None and guided_channels > cfg.model.in_channels:
        raise FFNetError(f"{names['guided_channels']} must be in [1, {cfg.model.in_channels}] for this checkpoint "
                         f"(model.in_channels={cfg.model.in_channels}), got {guided_channels}")
    method = "ddim" if str(steps).startswith("ddim") else "ddpm"
    diffusion = build_diffusion(cfg, steps)
    all_labels = parse_labels(labels, num, cfg.model.num_classes, seed, names)
    decode = None
    latent = cfg.data.mode == "latent"
    if latent:
        from .data.latents import load_vae

        decode = load_vae(vae_path or cfg.data.vae_path or "", info.device).decode
    result = {"checkpoint": str(checkpoint), "num": num, "steps": str(steps), "method": method,
              "cfg_scale": cfg_scale, "guided_channels": guided_channels or "all", "eta": eta, "seed": seed,
              "ema": use_ema, "world_size": info.world_size, "train_step": int(ckpt["step"])}
    try:
        if info.is_main:
            with created_folder(out):
                _draw(model, diffusion, all_labels, out, info, result, method=method, seed=seed, steps=steps,
                      batch_size=batch_size, cfg_scale=cfg_scale, eta=eta, guided_channels=guided_channels,
                      latent=latent, decode=decode, grid_count=grid_count,
                      ncols=cfg.model.num_classes if labels == "all" and cfg.model.num_classes <= 16 else None)
        else:
            _draw(model, diffusion, all_labels, out, info, result, method=method, seed=seed, steps=steps,
                  batch_size=batch_size, cfg_scale=cfg_scale, eta=eta, guided_channels=guided_channels,
                  latent=latent, decode=decode, grid_count=grid_count, ncols=None)
    finally:
        cleanup_distributed()
    return result


def _draw(model, diffusion, all_labels: torch.Tensor, out: Path, info, result: dict, *, method: str, seed: int,
          steps: str, batch_size: int, cfg_scale: float, eta: float, guided_channels: int | None, latent: bool,
          decode, grid_count: int, ncols: int | None) -> None:
    """The sampling work of one rank; batches go to ``out/.shards`` (removed at the end, also on failure), the
    main rank joins them into the final files, each written atomically (``sample_info.json`` last)."""
    num = len(all_labels)
    shard_dir = out / ".shards"
    if info.is_main:
        shard_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    n_batches = (num + batch_size - 1) // batch_size
    t0 = time.perf_counter()
    try:
        for b in range(info.rank, n_batches, info.world_size):
            batch_labels = all_labels[b * batch_size:(b + 1) * batch_size]
            gen = torch.Generator(device=info.device).manual_seed(seed * 1_000_003 + b)
            images = generate(model, diffusion, batch_labels, cfg_scale=cfg_scale, method=method, eta=eta,
                              guided_channels=guided_channels, generator=gen, clip_denoised=not latent,
                              decode=decode)
            np.save(shard_dir / f"batch_{b:06d}.npy", to_uint8(images))
        barrier()
        result["seconds"] = seconds = time.perf_counter() - t0
        if info.is_main:
            arr = np.concatenate([np.load(shard_dir / f"batch_{b:06d}.npy") for b in range(n_batches)])
            save_npz(out / "samples.npz", arr_0=arr, arr_1=all_labels.numpy().astype(np.int64))
            # one column per class when sampling every class in turn (labels="all"), else a square grid
            save_png(make_grid(arr[:grid_count], ncols=ncols), out / "grid.png")
            result.update(npz=str(out / "samples.npz"), grid=str(out / "grid.png"), shape=list(arr.shape),
                          images_per_second=num / seconds)
            write_json(out / "sample_info.json", result)
    finally:
        if info.is_main:
            shutil.rmtree(shard_dir, ignore_errors=True)


def build_parser() -> OverrideParser:
    """Core's ``--checkpoint`` / ``--output`` / ``--debug`` plus the sampler flags (no key=value settings)."""
    p = build_eval_parser("ffnet-gen-sample", __doc__.splitlines()[0], overrides=False)
    p.epilog = None  # the helper's epilog explains key=value overrides, which this command does not take
    for action in p._actions:  # argparse has no public way to re-word an option a helper added
        if action.dest == "checkpoint":
            action.help = "a checkpoint of ffnet-gen-train (last.pth / step_N.pth); EMA weights unless --no-ema"
        elif action.dest == "output":
            action.required, action.metavar = True, "FOLDER"
            action.help = ("folder for samples.npz, grid.png, sample_info.json (created; files written "
                           "atomically, nothing left there if sampling fails)")
    p.add_argument("--num-samples", type=int, default=16, help="number of images (>= 1)")
    p.add_argument("--labels", default="random", help="'random', 'all' or a comma list of class ids")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default="250", help="sampling steps: N (DDPM, respaced) or ddimN")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1] (0 = deterministic)")
    p.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale in [0, 50] (1 = off)")
    p.add_argument("--guided-channels", type=int, default=None,
                   help="guide only the first K channels (3 = DiT's released sampler); default all")
    p.add_argument("--batch-size", type=int, default=64, help="images per sampling batch (>= 1)")
    p.add_argument("--vae", default="", help="latent checkpoints: local AutoencoderKL folder")
    p.add_argument("--no-ema", action="store_true", help="use the raw (non-EMA) weights")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    result = sample_to_npz(a.checkpoint, a.output, num=a.num_samples, labels=a.labels, seed=a.seed, steps=a.steps,
                           cfg_scale=a.cfg_scale, eta=a.eta, guided_channels=a.guided_channels,
                           batch_size=a.batch_size, vae_path=a.vae, use_ema=not a.no_ema, device=a.device)
    if "npz" in result:
        print(json.dumps({k: result[k] for k in ("npz", "grid", "shape", "images_per_second")}))
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
