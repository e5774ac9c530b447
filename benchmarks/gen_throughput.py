"""U-FFNet vs the all-attention U-DiT baseline of the same size: training step time and sampling throughput.

    python benchmarks/gen_throughput.py --size s --device cpu --threads 2 [--literal]
    python benchmarks/gen_throughput.py --size b --device cuda --precision bf16 --batch 64

Both models are built from the same registry and measured in the same process, interleaved (A, B, A, B ...)
so that drifting machine load hits both equally; the median of the repeats is reported. Sampling throughput is
the deploy (fused) model's forward pass in images/s at the given batch (one denoising step; a 250-step sampler
is 250x slower, 2x more with guidance), which is how the FFNet paper (Tab. 7) and U-DiT compare throughput.
Results are written as a results.json (``--output``, core's write_results) and printed as a markdown table for docs/generation.md.
``--summary PATH`` writes U-FFNet vs U-DiT (sampling forward and training step, img/s) in core's speed-summary
form (``metamixer.bench``) for ``scripts/speed_table.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from ffnet_generation import create_model
from ffnet_generation.diffusion import create_diffusion
from ffnet_generation.evaluate import model_info
from metamixer.train.amp import autocast
from metamixer.train.device import resolve_device
from metamixer.train.results import write_results


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_train_step(model, diffusion, batch, device, precision, channels_last) -> float:
    x, y = batch
    t = torch.randint(0, 1000, (x.shape[0],), device=device)
    opt = model._bench_opt
    _sync(device)
    start = time.perf_counter()
    with autocast(device, precision):
        loss = diffusion.training_losses(model, x, t, model_kwargs={"y": y})["loss"].mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    _sync(device)
    return time.perf_counter() - start


@torch.no_grad()
def time_forward(model, batch, device, precision) -> float:
    x, y = batch
    t = torch.randint(0, 1000, (x.shape[0],), device=device)
    _sync(device)
    start = time.perf_counter()
    with autocast(device, precision):
        model(x, t, y)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="s", choices=["tiny", "s", "b", "l"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch", type=int, default=4, help="training batch")
    p.add_argument("--sample-batch", type=int, default=16, help="forward (sampling) batch")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels-last", action="store_true", default=True)
    p.add_argument("--output", default=None)
    p.add_argument("--summary", default=None, help="speed-summary JSON (metamixer.bench) for scripts/speed_table.py")
    p.add_argument("--literal", action="store_true",
                   help="also time u_ffnet_<size>_literal (only the attention replaced; docs/generation.md §1)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device, key="--device")
    names = [f"u_ffnet_{a.size}"] + ([f"u_ffnet_{a.size}_literal"] if a.literal else []) + [f"u_dit_{a.size}"]
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    diffusion = create_diffusion()
    models, fused, info = {}, {}, {}
    for name in names:
        m = create_model(name, input_size=a.input_size).to(device).to(memory_format=fmt).train()
        m._bench_opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        models[name] = m
        fused[name] = m.fuse().eval()
        # MACs on the meta device: there torch's FlopCounterMode also sees the attention matmuls, which the
        # fused CPU attention kernel hides from it on real tensors
        row = model_info([name], a.input_size)[0]
        info[name] = {"params_M": row["params_M"], "params_deploy_M": row["params_deploy_M"],
                      "gmacs_deploy": row["gmacs_deploy"]}
    g = torch.Generator().manual_seed(0)

    def batch(n):
        return (torch.randn(n, 4, a.input_size, a.input_size, generator=g).to(device).contiguous(memory_format=fmt),
                torch.randint(0, 1000, (n,), generator=g).to(device))

    train_b, fwd_b = batch(a.batch), batch(a.sample_batch)
    times = {n: {"train": [], "fwd": []} for n in names}
    for name in names:  # warm-up (allocator, oneDNN/cuDNN kernel selection)
        time_train_step(models[name], diffusion, train_b, device, a.precision, a.channels_last)
        time_forward(fused[name], fwd_b, device, a.precision)
    for _ in range(a.repeats):
        for name in names:
            times[name]["train"].append(time_train_step(models[name], diffusion, train_b, device, a.precision,
                                                        a.channels_last))
            times[name]["fwd"].append(time_forward(fused[name], fwd_b, device, a.precision))
    rows = []
    for name in names:
        tr, fw = statistics.median(times[name]["train"]), statistics.median(times[name]["fwd"])
        rows.append({"model": name, **info[name], "train_step_s": tr, "train_img_per_s": a.batch / tr,
                     "sample_fwd_img_per_s": a.sample_batch / fw})
    base = rows[-1]  # the U-DiT baseline
    for r in rows:
        r["train_speedup_vs_u_dit"] = r["train_img_per_s"] / base["train_img_per_s"]
        r["sample_speedup_vs_u_dit"] = r["sample_fwd_img_per_s"] / base["sample_fwd_img_per_s"]
    meta = {"device": str(device), "cpu": platform.processor() or platform.machine(), "threads": a.threads,
            "precision": a.precision, "train_batch": a.batch, "sample_batch": a.sample_batch,
            "input": f"4x{a.input_size}x{a.input_size}", "repeats": a.repeats, "torch": torch.__version__}
    print(json.dumps(meta))
    print("| model | params (M, deploy) | GMACs (deploy) | train step (s) | train img/s | sampling fwd img/s | "
          "speed-up train / sample |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params_deploy_M']:.1f} | {r['gmacs_deploy']:.2f} | {r['train_step_s']:.3f} | "
              f"{r['train_img_per_s']:.2f} | {r['sample_fwd_img_per_s']:.2f} | "
              f"{r['train_speedup_vs_u_dit']:.2f}x / {r['sample_speedup_vs_u_dit']:.2f}x |")
    if a.summary:
        write_gen_summary(a.summary, rows[0], base, meta)
    if a.output:
        write_results(a.output, metrics={r["model"]: r for r in rows}, data=f"random {meta['input']} latents",
                      protocol=meta)


def write_gen_summary(path: str, ours: dict, peer: dict, meta: dict) -> None:
    """Two speed-summary rows, U-FFNet vs the same-size U-DiT: sampling (one forward of the deploy model) and
    training (one AdamW step of the training form), both in img/s (higher is better)."""
    from metamixer.bench import machine, summary_entry, write_summary

    on = (torch.cuda.get_device_name(torch.device(meta["device"])) if meta["device"].startswith("cuda") else
          f"{meta['device']}, {meta['threads']} thread{'s' if meta['threads'] > 1 else ''}")
    where = f"{meta['input']} latent, {meta['precision']}, {on}"
    entries = [
        summary_entry("generation", f"sampling: one denoiser forward (deploy form), batch {meta['sample_batch']}, "
                      f"{where}", (ours["model"], ours["sample_fwd_img_per_s"]),
                      (peer["model"], peer["sample_fwd_img_per_s"]), "img/s", higher_is_better=True),
        summary_entry("generation", f"training: one AdamW step (training form), batch {meta['train_batch']}, {where}",
                      (ours["model"], ours["train_img_per_s"]), (peer["model"], peer["train_img_per_s"]), "img/s",
                      higher_is_better=True),
    ]
    write_summary(path, entries, machine(threads=meta["threads"], device=meta["device"]))


if __name__ == "__main__":
    main()
