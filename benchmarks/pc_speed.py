"""FFNet 3D vs a PTv3-style attention peer: training-step and inference time, peak memory, per 100k points.

    python benchmarks/pc_speed.py                       # all models x threads, each in a fresh subprocess
    python benchmarks/pc_speed.py --model ffnet3d --threads 1 --single   # one measurement in this process
    python benchmarks/pc_speed.py --model ffnet3d --threads 2 --summary s.json  # + speed summary (speed_table.py)
    python benchmarks/pc_speed.py --model ffnet3d --single --peer ptv3_style     # ours and the peer, one process

One synthetic room is voxelized at 2 cm and sphere-cropped to exactly ``--points`` points (default 100,000).
Each model first runs once on a 4,096-point slice of the scene (one-off kernel/library set-up), then one warm-up
training step on the full scene, during which its peak memory is taken; then ``--reps`` timed training steps
(forward, CE loss, backward), then, in eval mode under ``torch.no_grad``, one warm-up and ``--reps`` timed
inference forwards. With a peer (``--peer ptv3_style``: ``ffnet_pointcloud.models.ptv3_peer``, the PTv3-style
serialized-patch-attention U-Net FFNet3D's convolutional token mixer replaces) both models are built in the same
process and every phase alternates ours, peer, ours, peer ... on the same batch, so drifting machine load hits
both; the median of the reps is reported. ``--peer`` defaults to ``ptv3_style`` with ``--summary`` and to
``none`` otherwise.

Peak memory is the growth of memory during that one warm-up step, measured by core's
``metamixer.bench.peak_memory_mib`` (CPU: resident memory sampled every 2 ms after glibc's ``malloc_trim`` hands
freed heap back, so the second model is not flattered by the first's freed pages; GPU: the allocator's peak).
Note: spconv's CPU kernels always run single-threaded (metamixer.nn.sparse guards them; they race with more
threads), so the thread count only speeds up the dense parts (Linear, LayerNorm, BN, GELU, attention).

Prints one JSON line per measurement (ours' fields ``model, device, threads, points, params_M, fwd_bwd_s,
s_per_100k_points, infer_s, infer_s_per_100k_points, peak_mem_MiB, reps`` and ``peer``: the same fields of the
peer, or null) and, without ``--single``, a markdown table. ``--summary`` writes core's speed-summary
(``metamixer.bench``) with two rows per measurement, training step and inference forward, ours vs the peer in
s / 100k points (lower is better; ``peer: null`` with ``--peer none``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

PEERS = ("ptv3_style", "none")
PRIME_POINTS = 4096


def _scene(points: int) -> dict:
    import numpy as np

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
        from metamixer.train.errors import FFNetError

        raise FFNetError(f"--points {points}: the synthetic scene has only {n} voxels at 2 cm")
    return data


def _slice(data: dict, count: int) -> dict:
    n = len(data["coord"])
    return {k: (v[:count] if hasattr(v, "__len__") and not isinstance(v, str) and len(v) == n else v)
            for k, v in data.items()}


def measure(model_name: str, threads: int, points: int, reps: int, device: str, peer: str = "none") -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from ffnet_pointcloud import create_model
    from ffnet_pointcloud.data.collate import collate_scenes
    from metamixer.bench import peak_memory_mib

    data = _scene(points)
    n = len(data["coord"])
    prime = _slice(data, min(n, PRIME_POINTS))
    names = [model_name] + ([peer] if peer != "none" else [])
    models = []
    for name in names:
        torch.manual_seed(0)
        models.append(create_model(name, num_classes=20).to(device))

    def batch(scene: dict) -> Any:
        point = collate_scenes([scene])
        return type(point)({k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in point.items()})

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step(model: torch.nn.Module, scene: dict) -> float:
        point = batch(scene)
        sync()
        t0 = time.perf_counter()
        logits = model(point)
        loss = torch.nn.functional.cross_entropy(logits, point["segment"])
        model.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        return time.perf_counter() - t0

    @torch.no_grad()
    def infer_step(model: torch.nn.Module, scene: dict) -> float:
        point = batch(scene)
        sync()
        t0 = time.perf_counter()
        model(point)
        sync()
        return time.perf_counter() - t0

    for m in models:
        m.train()
        train_step(m, prime)  # one-off set-up (spconv, SDPA kernels, thread pools) out of both measurements
    peaks = [peak_memory_mib(lambda m=m: train_step(m, data), device)[1] for m in models]  # also the warm-up
    train = [[] for _ in models]
    for _ in range(reps):
        for i, m in enumerate(models):
            train[i].append(train_step(m, data))
        for m in models:
            m.zero_grad(set_to_none=True)
    for m in models:
        m.eval()
    peaks_infer = [peak_memory_mib(lambda m=m: infer_step(m, data), device)[1] for m in models]
    infer = [[] for _ in models]
    for _ in range(reps):
        for i, m in enumerate(models):
            infer[i].append(infer_step(m, data))

    def fields(i: int) -> dict:
        sec, isec = float(np.median(train[i])), float(np.median(infer[i]))
        return {
            "model": names[i],
            "params_M": round(sum(p.numel() for p in models[i].parameters()) / 1e6, 2),
            "fwd_bwd_s": round(sec, 3),
            "s_per_100k_points": round(sec * 100_000 / n, 3),
            "infer_s": round(isec, 3),
            "infer_s_per_100k_points": round(isec * 100_000 / n, 3),
            "peak_mem_MiB": round(peaks[i], 1),
            "peak_mem_infer_MiB": round(peaks_infer[i], 1),
        }

    ours = fields(0)
    row = {"model": ours.pop("model"), "device": device, "threads": threads, "points": n, **ours, "reps": reps}
    row["peer"] = fields(1) if len(models) > 1 else None
    return row


def main(argv: list[str] | None = None) -> None:
    from metamixer.train.cli import OverrideParser, positive_int

    # core's parser: a bad argument is one ``error:`` line, exit 2
    parser = OverrideParser(prog="pc_speed.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", default=["ffnet3d_tiny", "ffnet3d_paper", "ffnet3d"])
    parser.add_argument("--threads", nargs="*", type=positive_int, default=[1, 2])
    parser.add_argument("--points", type=positive_int, default=100_000)
    parser.add_argument("--reps", type=positive_int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peer", choices=PEERS, default=None,
                        help="same-process peer timed against each model (default: ptv3_style with --summary, "
                             "else none)")
    parser.add_argument("--single", action="store_true", help="measure in this process (used by the driver)")
    parser.add_argument("--json", default=None, help="append results (JSON lines) here")
    parser.add_argument("--summary", default=None, help="speed-summary JSON (metamixer.bench) of the measured rows")
    args = parser.parse_args(argv)
    peer = args.peer or ("ptv3_style" if args.summary else "none")
    if args.single:
        row = measure(args.model[0], args.threads[0], args.points, args.reps, args.device, peer)
        print(json.dumps(row), flush=True)
        if args.summary:
            write_pc_summary(args.summary, [row], args.device)
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
                "--peer",
                peer,
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
    print("\n| model | device | threads | points | params (M) | fwd+bwd s / 100k pts | infer s / 100k pts | "
          "peak mem (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for side, label in ((r, r["model"]), (r.get("peer"), f"{(r.get('peer') or {}).get('model')} (peer)")):
            if side:
                print(f"| {label} | {r['device']} | {r['threads']} | {r['points']} | {side['params_M']} | "
                      f"{side['s_per_100k_points']} | {side['infer_s_per_100k_points']} | {side['peak_mem_MiB']} |")
    if args.summary:
        write_pc_summary(args.summary, rows, args.device)
    if failed:
        sys.exit(1)


def write_pc_summary(path: str, rows: list[dict], device: str) -> None:
    """Two speed-summary rows per measurement (training step, inference forward): ours vs the same-process peer
    in s / 100k points, or ``peer: null`` when it ran without one."""
    from metamixer.bench import machine, summary_entry, write_summary

    entries = []
    for r in rows:
        peer = r.get("peer")
        where = f"{r['points']:,} points, {r['device']}, {r['threads']} thread{'s' if r['threads'] > 1 else ''}"
        vs = f" vs {peer['model']}" if peer else ""
        for what, key, mem in (("training step (forward + CE + backward)", "s_per_100k_points", "peak_mem_MiB"),
                               ("inference forward (eval, no_grad)", "infer_s_per_100k_points",
                                "peak_mem_infer_MiB")):
            entries.append(summary_entry(
                "pointcloud", f"{r['model']}{vs} {what}, {where}",
                (f"{r['model']} ({r['params_M']} M params, spconv)", r[key]),
                None if not peer else (f"{peer['model']}: PTv3-style serialized patch attention "
                                       f"({peer['params_M']} M params, same process, interleaved)", peer[key]),
                "s / 100k points", higher_is_better=False,
                peak_mib=(max(0.0, r[mem]), max(0.0, peer[mem]) if peer else None)))
    if not entries:
        sys.exit("error: no measurement succeeded, so there is no speed summary to write")
    write_summary(path, entries, machine(threads=max(r["threads"] for r in rows), device=device))


if __name__ == "__main__":
    from metamixer.train.errors import run_cli

    run_cli(main)()  # an FFNetError (unknown --model, ...) is one ``error:`` line, exit 2
