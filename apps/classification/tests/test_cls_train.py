"""Training on real data (scikit-learn digits written as PNG files): learning, exact resume, DDP, CLI errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ffnet_classification.config import TrainConfig
from ffnet_classification.train import main, run
from metamixer.train.config import load_config

pytest.importorskip("sklearn")

TINY = ["model.spec={widths: [16, 32, 64, 128], depths: [1, 1, 1, 1], stem_dim: 8}"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ffnet_classification.digits import write_digits_imagefolder

    root = tmp_path_factory.mktemp("digits")
    write_digits_imagefolder(root, size=16)
    return root


def cfg_for(digits: Path, out: Path, *extra: str) -> TrainConfig:
    overrides = TINY + [
        f"data.train={digits / 'train'}", f"data.val={digits / 'val'}", "data.input_size=16", "data.crop_pct=1.0",
        "data.workers=0", "data.hflip=0.0", f"output_dir={out}", "threads=1", "log_interval=1000",
        "optim.lr_base_batch=64", "optim.base_lr=3e-3", "optim.warmup_epochs=0.5", "batch_size=64",
    ]
    return load_config(TrainConfig, None, overrides + list(extra))


def test_short_training_learns_digits(digits: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = cfg_for(digits, tmp_path / "run", "epochs=3", "data.rand_n=0", "data.reprob=0.0", "data.mixup=0.0",
                  "data.cutmix=0.0", "model.drop_path_rate=0.0", "ema=true", "ema_warmup=true", "ema_decay=0.99",
                  "data.scale=[0.7, 1.0]")
    summary = run(cfg)
    hist = summary and json.loads((tmp_path / "run" / "summary.json").read_text())
    last = hist["last"]
    # chance is 10%: demand a wide margin after ~66 steps of a 0.2M-param model
    assert last["val_top1"] > 70.0, last
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    losses = [h["train_loss"] for h in ckpt["extra"]["history"]]
    assert losses[-1] < losses[0] * 0.7, losses
    assert ckpt["extra"]["classes"] == [str(i) for i in range(10)]
    assert (tmp_path / "run" / "best.pth").is_file() and (tmp_path / "run" / "config.yaml").is_file()
    assert summary["best_top1"] >= last["val_top1"]


def test_resume_equals_uninterrupted(digits: Path, tmp_path: Path) -> None:
    """Full recipe (RandAugment, erasing, mixup/cutmix, drop-path, EMA): 2 epochs == 1 epoch + resume."""
    common = ("data.val=null", "max_steps_per_epoch=3", "model.drop_path_rate=0.1", "data.reprob=0.5",
              "data.rand_n=2", "optim.clip_grad=1.0")
    run(cfg_for(digits, tmp_path / "full", "epochs=2", *common))
    run(cfg_for(digits, tmp_path / "part", "epochs=2", "stop_after_epochs=1", *common))
    assert torch.load(tmp_path / "part" / "last.pth", weights_only=True)["epoch"] == 1
    run(cfg_for(digits, tmp_path / "part", "epochs=2", *common), resume=str(tmp_path / "part" / "last.pth"))
    a = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6


def test_ddp_two_cpu_processes(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "ffnet_classification.train", *TINY, f"data.train={digits / 'train'}",
            f"data.val={digits / 'val'}", "data.input_size=16", "data.workers=0", "data.crop_pct=1.0",
            "epochs=1", "max_steps_per_epoch=2", "batch_size=16", "threads=1", "device=cpu", f"output_dir={out}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["config"]["batch_size"] == 16
    assert "global batch 32" in (out / "log.txt").read_text()
    # the val set is sharded without padding and summed: every image counted exactly once
    assert summary["last"]["val_top1"] >= 0.0


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ffnet_classification.train import cli

    with pytest.raises(SystemExit) as e:
        cli(["data.train=" + str(tmp_path / "nope"), f"output_dir={tmp_path / 'o'}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "\n" not in err
    with pytest.raises(SystemExit):
        cli(["model.nmae=ffnet_1"])
    assert "nmae" in capsys.readouterr().err
    assert main is not None


def test_class_count_mismatch(digits: Path, tmp_path: Path) -> None:
    from metamixer.train.errors import FFNetError

    with pytest.raises(FFNetError, match="num_classes=5 but .* has 10 classes"):
        run(cfg_for(digits, tmp_path / "x", "model.num_classes=5"))
