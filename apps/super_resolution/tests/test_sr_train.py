"""Training: exact resume, run-folder contents, CLI errors, and a short real run that beats bicubic on Set5."""

from __future__ import annotations

import json

import pytest
import torch

from ffnet_sr.config import SRConfig
from ffnet_sr.train import cli as train_cli
from ffnet_sr.train import cosine_lr_lambda, train
from metamixer.train.checkpoint import load_checkpoint
from metamixer.train.config import load_config


def _tiny_cfg(out, extra=()):
    return load_config(SRConfig, None, [
        "model.depth=1", "model.scale=2",
        "data.train_dirs=[sr/Set14/HR]", "data.patch_size=16", "data.batch_size=2", "data.num_workers=0",
        "data.val_set=Set5", "data.val_max_images=1",
        "train.total_steps=4", "train.val_every=2", "train.save_every=2", "train.log_every=1",
        "train.device=cpu", "train.ema_decay=0.9", "optim.warmup_steps=1", f"train.output_dir={out}",
        *extra,
    ])


def test_resume_equals_uninterrupted_bit_for_bit(tmp_path, sr_data):
    full = train(_tiny_cfg(tmp_path / "full"))
    assert full["step"] == 4 and not full["stopped_early"]
    part = train(_tiny_cfg(tmp_path / "part", ["train.stop_at=2"]))
    assert part["step"] == 2 and part["stopped_early"]
    resumed = train(_tiny_cfg(tmp_path / "part"), resume=tmp_path / "part" / "last.pth")
    assert resumed["step"] == 4
    a = load_checkpoint(tmp_path / "full" / "last.pth")
    b = load_checkpoint(tmp_path / "part" / "last.pth")
    assert a["step"] == b["step"] == 4
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 4
    # run folder contents
    run = tmp_path / "full"
    assert (run / "config.yaml").is_file() and (run / "best.pth").is_file() and (run / "log.txt").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in run.rglob("*"))
    assert "PSNR-Y" in (run / "log.txt").read_text()


def test_cosine_schedule_endpoints():
    fn = cosine_lr_lambda(100, 1e-3, 1e-5, warmup_steps=10)
    assert fn(0) == pytest.approx(0.1)
    assert fn(10) == pytest.approx(1.0)
    assert fn(100) * 1e-3 == pytest.approx(1e-5)


def test_train_cli_rejects_bad_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train_cli(["model.nmae=ffnetsr", f"train.output_dir={tmp_path}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "model.nmae" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        train_cli(["data.train_dirs=[/no/such/folder]", f"train.output_dir={tmp_path}", "data.val_set=null"])
    assert "/no/such/folder" in capsys.readouterr().err


def test_short_real_training_beats_bicubic_on_set5(tmp_path, sr_data):
    """The quick start at half its size (1 block, 80 steps; the quick start itself: 2 blocks, 100 steps, +0.68 dB):
    reduced FFNetSR-light x2 trained on B100 HR on CPU, then Set5 PSNR-Y/SSIM-Y against MATLAB bicubic."""
    from ffnet_sr.quickstart import run_quickstart

    result = run_quickstart(tmp_path, steps=80, depth=1, threads=2)
    s5 = result["set5_x2"]
    assert s5["bicubic"]["psnr_y"] == pytest.approx(33.674, abs=0.002)  # our protocol's bicubic on Set5 x2
    assert s5["ffnetsr"]["psnr_y"] > s5["bicubic"]["psnr_y"] + 0.2, s5
    assert s5["ffnetsr"]["ssim_y"] > s5["bicubic"]["ssim_y"], s5
    assert json.loads((tmp_path / "summary.json").read_text())["beats_bicubic"] is True
    assert (tmp_path / "butterfly_x2_ffnetsr.png").is_file()
