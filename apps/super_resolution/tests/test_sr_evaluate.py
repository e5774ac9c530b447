"""The evaluation CLI: paper-style table, JSON output, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from ffnet_sr import create_model
from ffnet_sr.evaluate import cli as eval_cli
from metamixer.train.checkpoint import save_checkpoint


def test_eval_bicubic_json(tmp_path, sr_data, capsys):
    out = tmp_path / "res.json"
    assert eval_cli(["--bicubic", "--scale", "4", "--sets", "Set5", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| Bicubic | x4 | 28.43/0.8111 |" in printed
    data = json.loads(out.read_text())
    assert data["crop_border"] == 4 and data["results"]["Set5"]["num_images"] == 5
    assert set(data["results"]["Set5"]["per_image"]) == {"baby", "bird", "butterfly", "head", "woman"}


def test_eval_checkpoint_with_self_ensemble_and_errors(tmp_path, sr_data, capsys):
    torch.manual_seed(0)
    model = create_model("ffnetsr_light", 4, depth=1)
    ckpt = tmp_path / "m.pth"
    save_checkpoint(ckpt, model=model)
    out = tmp_path / "r.json"
    assert eval_cli(["--checkpoint", str(ckpt), "--sets", str(sr_data / "Set5"), "--self-ensemble",
                     "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["scale"] == 4 and res["self_ensemble"] and 15 < res["results"]["Set5"]["psnr"] < 40
    capsys.readouterr()
    for argv, expected in [
        (["--checkpoint", str(ckpt), "--scale", "2", "--sets", "Set5"], "does not match"),
        (["--bicubic", "--sets", "Set5"], "--scale"),
        (["--bicubic", "--scale", "2", "--sets", "NoSuchSet"], "NoSuchSet"),
    ]:
        with pytest.raises(SystemExit) as exc:
            eval_cli(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
