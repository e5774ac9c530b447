"""The console scripts as a user runs them: fresh interpreters, a shipped recipe by name, exit codes, results.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def test_train_then_eval_console_scripts(tmp_path, sr_data, t91_five):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    train = subprocess.run(
        [_script("ffnet-sr-train"), "cpu_t91_x2", "model.depth=1", f"data.train_dirs=[{t91_five}]",
         "data.patch_size=16", "data.val_max_images=1", "train.steps=2", "train.batch_size=2", "train.val_every=2",
         "train.save_every=2", "train.progress=false", "run.threads=1", f"run.output_dir={run}"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert train.returncode == 0, train.stderr
    assert "done: step 2 of 2 (completed)" in train.stdout and (run / "best.pth").is_file()
    out = tmp_path / "results.json"
    ev = subprocess.run(
        [_script("ffnet-sr-eval"), "--checkpoint", str(run / "best.pth"), "--sets", "Set5", "--output", str(out),
         "run.threads=1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert ev.returncode == 0, ev.stderr
    res = json.loads(out.read_text())
    assert 20 < res["metrics"]["Set5"]["psnr"] < 45 and 0 < res["metrics"]["Set5"]["ssim"] <= 1
    assert res["protocol"]["crop_border"] == 2 and res["checkpoint"] == str(run / "best.pth")
    assert res["data"]["sets"] == ["Set5"] and "ffnet-sr" in res["versions"]
