"""torchrun (2 CPU processes, gloo): DDP training runs and sharded sampling equals single-process sampling.

Marked slow (process start-up and gloo dominate); run with ``pytest -m slow apps/generation/tests``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _torchrun(args, cwd):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([torchrun, "--nproc_per_node", "2", "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_ddp_train_and_sharded_sampling(tmp_path):
    run = tmp_path / "run"
    # train.batch_size is per process: 2 x 4 = the global batch of 8 this test always used
    r = _torchrun(["ffnet_generation.train", f"run.output_dir={run}", "run.device=cpu", "data.mode=digits",
                   "data.num_workers=0", "model.name=u_ffnet_tiny", "model.input_size=16", "model.in_channels=1",
                   "model.num_classes=10", "train.batch_size=4", "train.steps=3", "train.log_every=1",
                   "train.save_every=3", "train.val_every=3", "eval.grid_count=2", "eval.grid_steps=ddim2",
                   "train.progress=false"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    log = (run / "log.txt").read_text()
    assert (run / "last.pth").is_file() and "2 process(es)" in log and "batch 4 per process" in log
    assert "validation at step 3" in log and (run / "samples" / "step_0000003.png").is_file()  # rank 0 only
    args = ["--checkpoint", str(run / "last.pth"), "--num-samples", "7", "--batch-size", "3", "--steps", "ddim3",
            "--labels", "all", "--device", "cpu"]
    r = _torchrun(["ffnet_generation.sample", "--output", str(tmp_path / "ddp"), *args], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    single = subprocess.run([sys.executable, "-m", "ffnet_generation.sample", "--output", str(tmp_path / "one"), *args],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = np.load(tmp_path / "ddp" / "samples.npz"), np.load(tmp_path / "one" / "samples.npz")
    assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
