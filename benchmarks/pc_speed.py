"""FFNet 3D forward+backward time and peak memory per 100k points (CPU threads 1 and 2; CUDA when present).

    python benchmarks/pc_speed.py                       # all models x threads, each in a fresh subprocess
    python benchmarks/pc_speed.py --model ffnet3d --threads 1 --single   # one measurement in this process
    python benchmarks/pc_speed.py --model ffnet3d --threads 2 --summary s.json  # + speed summary (speed_table.py)

One synthetic room is voxelized at 2 cm and sphere-cropped to exactly ``--points`` points (default 100,000),
then ``--reps`` timed training steps (forward, CE loss, backward) follow one warm-up step. Peak memory is the
process's peak RSS growth over the import baseline (CPU) or ``torch.cuda.max_memory_allocated`` (GPU).
Note: spconv's CPU kernels always run single-threaded (metamixer.nn.sparse guards them; they race with more
threads), so the thread count only speeds up the dense parts (Linear, LayerNorm, BN, GELU).
No peer network is timed here (there is no PTv3 / sparse U-Net baseline in this repository yet), so the speed
summary (``--summary``, core's ``metamixer.bench`` contract) carries our time with ``peer: null``: the speed table
shows it without a ratio rather than a ratio against nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(model_name: str, threads: int, points: int, reps: int, device: str) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from ffnet_pointcloud import create_model
    from ffnet_pointcloud.data.collate import collate_scenes
    from ffnet_pointcloud.data.synthetic import make_scene
    from ffnet_pointcloud.data.transforms import build_transforms

    pipe = build_transforms(
        [
            {"type": "CenterShift", "apply_z": True},
            {"type": "GridSample", "grid_size": 0.02, "mode": "train"},
            {"type": "SphereCrop", "point_max": points, "mode": "center"},
            {"type": "CenterShift", "apply_z": False},
            {"type": "NormalizeColor"},
        ]
    )
    pipe.transforms[1].rng = np.random.default_rng(0)
    data = pipe(make_scene(1, density=2400))
    n = len(data["coord"])
    if n < points:
        raise SystemExit(f"scene has only {n} voxels, fewer than --points {points}")
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=20).to(device)
    base = _rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        point = collate_scenes([data])
        point = type(point)(
            {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in point.items()}
        )
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = model(point)
        loss = torch.nn.functional.cross_entropy(logits, point["segment"])
        model.zero_grad(set_to_none=True)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    step()  # warm-up (index-pair caches are per batch anyway)
    times = [step() for _ in range(reps)]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _rss_mib() - base
    sec = float(np.median(times))
    return {
        "model": model_name,
        "device": device,
        "threads": threads,
        "points": n,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "fwd_bwd_s": round(sec, 3),
        "s_per_100k_points": round(sec * 100_000 / n, 3),
        "peak_mem_MiB": round(peak, 1),
        "reps": reps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", default=["ffnet3d_tiny", "ffnet3d_paper", "ffnet3d"])
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--single", action="store_true", help="measure in this process (used by the driver)")
    parser.add_argument("--json", default=None, help="append results (JSON lines) here")
    parser.add_argument("--summary", default=None, help="speed-summary JSON (metamixer.bench) of the measured rows")
    args = parser.parse_args()
    if args.single:
        print(json.dumps(measure(args.model[0], args.threads[0], args.points, args.reps, args.device)))
        return
    rows, failed = [], False
    for model in args.model:
        for threads in args.threads if args.device == "cpu" else [1]:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            cmd = [
                sys.executable,
                __file__,
                "--single",
                "--model",
                model,
                "--threads",
                str(threads),
                "--points",
                str(args.points),
                "--reps",
                str(args.reps),
                "--device",
                args.device,
            ]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                failed = True
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print("\n| model | device | threads | points | params (M) | fwd+bwd s / 100k pts | peak mem (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['device']} | {r['threads']} | {r['points']} | {r['params_M']} | "
            f"{r['s_per_100k_points']} | {r['peak_mem_MiB']} |"
        )
    if args.summary:
        write_pc_summary(args.summary, rows, args.device)
    if failed:
        sys.exit(1)


def write_pc_summary(path: str, rows: list[dict], device: str) -> None:
    """One speed-summary row per measurement: our training-step time per 100k points, no same-run peer."""
    from metamixer.bench import machine, summary_entry, write_summary

    entries = [summary_entry(
        "pointcloud", f"{r['model']} training step (forward + CE + backward), {r['points']:,} points, "
                      f"{r['device']}, {r['threads']} thread{'s' if r['threads'] > 1 else ''}",
        (f"{r['model']} ({r['params_M']} M params, spconv)", r["s_per_100k_points"]), None,
        "s / 100k points", higher_is_better=False) for r in rows]
    if not entries:
        sys.exit("error: no measurement succeeded, so there is no speed summary to write")
    write_summary(path, entries, machine(threads=max(r["threads"] for r in rows), device=device))


if __name__ == "__main__":
    main()
