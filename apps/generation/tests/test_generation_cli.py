"""The config schema (every shipped recipe loads; core's bounds apply) and the console scripts in a fresh
interpreter: ``ffnet-gen-train RECIPE k=v ...`` then ``ffnet-gen-eval --checkpoint ... --output ...``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ffnet_generation.config import GenerationConfig
from ffnet_generation.train import RECIPES
from ffnet_generation.train import cli as train_cli
from metamixer.train.config import ConfigError, load_config

SHIPPED = sorted(RECIPES.glob("*.yaml")) if RECIPES is not None else []


def test_every_shipped_recipe_loads_with_the_migrated_values():
    assert len(SHIPPED) == 8
    cfgs = {p.stem: load_config(GenerationConfig, p) for p in SHIPPED}  # unknown keys would raise
    b = cfgs["u_ffnet_b_imagenet256"]
    assert (b.run.precision, b.run.output_dir, b.run.seed) == ("bf16", "runs/u_ffnet_b_imagenet256", 0)
    assert (b.optim.name, b.optim.lr, b.optim.weight_decay, b.optim.schedule) == ("adamw", 1e-4, 0.0, "constant")
    assert (b.train.steps, b.train.batch_size, b.train.ema_decay) == (400_000, 32, 0.9999)  # 8 GPUs x 32 = 256
    assert (b.train.val_every, b.train.save_every, b.train.keep_every, b.train.log_every) == (10_000, 50_000,
                                                                                               50_000, 100)
    assert (b.eval.grid_count, b.eval.grid_steps, b.eval.grid_cfg_scale) == (16, "ddim50", 4.0)
    assert b.data.mode == "latent" and b.data.vae_path is None and b.model.diffusion.loss_type == "hybrid"
    d = cfgs["cpu_digits_u_dit"]
    assert (d.model.name, d.run.device, d.optim.lr, d.train.batch_size, d.train.steps) == ("u_dit_tiny", "cpu",
                                                                                        1e-3, 64, 1500)
    assert d.train.ema_warmup and d.train.ema_decay == 0.999 and d.eval.grid_count == 20
    assert all(c.train.eval_weights == "ema" for c in cfgs.values())


@pytest.mark.parametrize("override, message", [
    ("train.steps=-1", "'train.steps' must be a finite number >= 1"),  # once ran 0 steps, reported a last.pth
    ("train.batch_size=0", "'train.batch_size' must be a finite number >= 1"),
    ("optim.lr=0", "'optim.lr' must be a finite number > 0"),
    ("train.lr=1e-3", "lr"),  # the old key: now optim.lr
    ("train.keep_every=0", "'train.keep_every' must be a finite number >= 1"),
])
def test_bad_config_values_are_rejected_before_training(tmp_path, capsys, override, message):
    with pytest.raises(SystemExit) as exc:
        train_cli(["cpu_digits_u_ffnet", f"run.output_dir={tmp_path / 'run'}", override])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not (tmp_path / "run" / "last.pth").exists()
    with pytest.raises(ConfigError):
        load_config(GenerationConfig, SHIPPED[0], [override])


def _script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


ENV = dict(os.environ, OMP_NUM_THREADS="1")  # one thread: the test machines are shared (see conftest.py)


def test_train_and_eval_console_scripts(tmp_path):
    run = tmp_path / "run"
    train = subprocess.run([_script("ffnet-gen-train"), "cpu_digits_u_ffnet", f"run.output_dir={run}",
                            "train.steps=2", "train.batch_size=4", "train.val_every=1", "train.keep_every=null",
                            "train.progress=false", "model.rep_ffn=false", "eval.grid_count=2",
                            "eval.grid_steps=ddim2"], capture_output=True, text=True, timeout=600, env=ENV)
    assert train.returncode == 0, train.stderr[-2000:]
    assert (run / "last.pth").is_file() and (run / "samples" / "step_0000002.png").is_file()
    out = tmp_path / "res" / "results.json"
    ev = subprocess.run([_script("ffnet-gen-eval"), "--checkpoint", str(run / "last.pth"), "--output", str(out),
                         "eval.num_samples=20", "eval.steps=ddim2", "eval.batch_size=20"],
                        capture_output=True, text=True, timeout=600, env=ENV)
    assert ev.returncode == 0, ev.stderr[-2000:]
    record = json.loads(out.read_text())
    assert set(record["metrics"]) == {"digits_fid", "class_accuracy"} and record["metrics"]["digits_fid"] > 0
    assert record["checkpoint"] == str(run / "last.pth") and record["train_step"] == 2
    assert record["protocol"]["sampler"] == "ddim2" and record["protocol"]["weights"] == "ema"
    assert (tmp_path / "res" / "samples" / "samples.npz").is_file() and "digits_fid:" in ev.stdout
