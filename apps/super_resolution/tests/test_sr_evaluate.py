"""The evaluation CLI: paper-style table, results.json (core's shape, the protocol as used), and clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from ffnet_sr import create_model
from ffnet_sr.evaluate import cli as eval_cli
from metamixer.train.checkpoint import save_checkpoint


def test_eval_bicubic_results_json(tmp_path, sr_data, capsys):
    out = tmp_path / "res.json"
    assert eval_cli(["--bicubic", "--scale", "4", "--sets", "Set5", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| Bicubic | x4 | 28.43/0.8111 |" in printed
    data = json.loads(out.read_text())
    assert set(data) >= {"metrics", "data", "checkpoint", "protocol", "versions", "wall_s", "per_image"}
    assert data["metrics"]["Set5"]["psnr"] == pytest.approx(28.430, abs=0.001)
    assert data["protocol"]["crop_border"] == 4 and data["protocol"]["test_y_channel"] is True
    assert "rgb2ycbcr" in data["protocol"]["y_channel"] and data["checkpoint"] is None
    assert data["data"]["num_images"] == {"Set5": 5} and data["method"] == "Bicubic"
    assert set(data["per_image"]["Set5"]) == {"baby", "bird", "butterfly", "head", "woman"}


def test_crop_border_zero_is_used_as_given(tmp_path, sr_data, capsys):
    """``--crop-border 0`` is a real choice (no shave), not "off" falling back to the scale."""
    scored = {}
    for crop in ("0", "4"):
        out = tmp_path / f"res{crop}.json"
        assert eval_cli(["--bicubic", "--scale", "4", "--sets", "Set5", "--crop-border", crop, "--output", str(out)]) == 0
        scored[crop] = json.loads(out.read_text())
    assert scored["0"]["protocol"]["crop_border"] == 0 and scored["4"]["protocol"]["crop_border"] == 4
    for key in ("psnr", "ssim"):  # scored with no shave, not only reported so
        assert scored["0"]["metrics"]["Set5"][key] != scored["4"]["metrics"]["Set5"][key]
    for record in scored.values():  # Y is what was scored, whatever the crop
        assert record["protocol"]["test_y_channel"] is True and "rgb2ycbcr" in record["protocol"]["y_channel"]
    assert "crop 0" in capsys.readouterr().out


def test_eval_checkpoint_with_self_ensemble_overrides_and_errors(tmp_path, sr_data, capsys):
    torch.manual_seed(0)
    model = create_model("ffnetsr_light", 4, depth=1)
    ckpt = tmp_path / "m.pth"
    save_checkpoint(ckpt, model=model)
    out = tmp_path / "r.json"
    assert eval_cli(["--checkpoint", str(ckpt), "--sets", str(sr_data / "Set5"), "--self-ensemble",
                     "eval.tile=64", "run.device=cpu", "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["data"]["scale"] == 4 and res["protocol"]["self_ensemble"] and res["protocol"]["tile"] == 64
    assert 15 < res["metrics"]["Set5"]["psnr"] < 40 and res["checkpoint"] == str(ckpt)
    capsys.readouterr()
    for argv, expected in [
        (["--checkpoint", str(ckpt), "--scale", "2", "--sets", "Set5"], "does not match"),
        (["--bicubic", "--sets", "Set5"], "--scale"),
        (["--bicubic", "--scale", "2", "--sets", "NoSuchSet"], "NoSuchSet"),
        (["--sets", "Set5"], "--checkpoint"),
        (["--bicubic", "--scale", "2", "--tile", "0"], "argument --tile: expected a value >= 1, got '0'"),
        (["--bicubic", "--scale", "2", "eval.tile=0"], "field 'eval.tile'"),  # an override: named by its key
        (["--bicubic", "--scale", "0"], "argument --scale: expected a value >= 1"),
        (["--bicubic", "--scale", "2", "model.depth=3"], "model"),  # only run.* and eval.* are eval settings
        (["--checkpoint", str(ckpt), "--device", "cuda:7"], "run.device"),
    ]:
        with pytest.raises(SystemExit) as exc:
            eval_cli(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)
