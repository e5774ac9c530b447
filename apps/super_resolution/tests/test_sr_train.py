"""Training on core's engine: exact resume, run-folder contents, loader determinism, CLI errors, and a short real
run (trained on T91) that beats bicubic on Set5."""

from __future__ import annotations

import json

import pytest
import torch

from ffnet_sr.config import SRConfig
from ffnet_sr.task import SRTask
from ffnet_sr.train import cli as train_cli
from ffnet_sr.train import train
from metamixer.train.checkpoint import load_checkpoint
from metamixer.train.config import load_config
from metamixer.train.loop import prepare_run


def _tiny_cfg(out, train_dir, extra=()):
    # 5 T91 images in batches of 2: 3 batches per epoch, so 4 steps cross an epoch and max_steps=2 stops mid-epoch
    return load_config(SRConfig, None, [
        "model.depth=1", "model.scale=2",
        f"data.train_dirs=[{train_dir}]", "data.patch_size=16", "data.num_workers=0",
        "data.val_sets=[Set5]", "data.val_max_images=1",
        "train.steps=4", "train.batch_size=2", "train.val_every=2", "train.save_every=2", "train.log_every=1",
        "train.ema_decay=0.9", "train.eval_weights=ema", "train.progress=false", "optim.name=adam",
        "optim.warmup_steps=1", "run.device=cpu", f"run.output_dir={out}",
        *extra,
    ])


def test_resume_equals_uninterrupted_bit_for_bit(tmp_path, sr_data, t91_five):
    full = train(_tiny_cfg(tmp_path / "full", t91_five), quiet=True)
    assert full.step == 4 and full.stopped == "completed" and full.epoch == 1
    part = train(_tiny_cfg(tmp_path / "part", t91_five, ["run.max_steps=2"]), quiet=True)
    assert part.step == 2 and part.stopped == "max_steps"
    assert load_checkpoint(tmp_path / "part" / "last.pth")["extra"]["loop"]["batch"] == 2  # mid-epoch
    resumed = train(_tiny_cfg(tmp_path / "part", t91_five), resume=tmp_path / "part" / "last.pth", quiet=True)
    assert resumed.step == 4 and resumed.history == full.history
    a = load_checkpoint(tmp_path / "full" / "last.pth")
    b = load_checkpoint(tmp_path / "part" / "last.pth")
    assert a["step"] == b["step"] == 4
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    # run folder contents: best.pth by validation PSNR-Y, the preview image in tensorboard
    run = tmp_path / "full"
    assert (run / "config.yaml").is_file() and (run / "best.pth").is_file() and (run / "log.txt").is_file()
    assert full.best is not None and [h["step"] for h in full.history] == [2, 4]
    assert any(p.name.startswith("events.out.tfevents") for p in run.rglob("*"))
    log = (run / "log.txt").read_text()
    assert "validation set Set5 x2 (1 images" in log and "bicubic psnr" in log and "validation at step 4" in log
    assert "Set5/psnr" in log and "Set5/ssim" in log and "best.pth by Set5/psnr" in log


def test_loader_workers_and_positions_give_the_same_batches(tmp_path, sr_data, t91_five):
    """One persistent loader serves every epoch from any start; worker processes change nothing."""
    def batches(workers, positions):
        cfg = _tiny_cfg(tmp_path / f"w{workers}", t91_five, [f"data.num_workers={workers}", "data.val_sets=[]"])
        task = SRTask(cfg, prepare_run(cfg.run, cfg, quiet=True))
        out = []
        for epoch, start in positions:  # taken as the trainer does: exactly the epoch's batches, no StopIteration
            it = iter(task.train_batches(epoch, start))
            out.append([next(it)[0] for _ in range(task.steps_per_epoch() - start)])
        return out

    in_process = batches(0, [(0, 0), (1, 0)])
    with_worker = batches(1, [(1, 1), (0, 0), (1, 0)])
    assert len(in_process[0]) == 3 and len(with_worker[0]) == 2
    for got, want in [(with_worker[0], in_process[1][1:]), (with_worker[1], in_process[0]),
                      (with_worker[2], in_process[1])]:
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert not torch.equal(in_process[0][0], in_process[1][0])


def test_train_cli_rejects_bad_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train_cli(["model.nmae=ffnetsr", f"run.output_dir={tmp_path}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "model.nmae" in err and "Traceback" not in err
    for argv, expected in [
        (["data.train_dirs=[/no/such/folder]", f"run.output_dir={tmp_path}", "data.val_sets=[]"], "/no/such/folder"),
        (["no_such_recipe"], "cpu_t91_x2"),  # the error lists the shipped recipes
        (["train.batch_size=0"], "train.batch_size"),
        (["train.epochs=3"], "train.steps"),  # exactly one of epochs / steps
    ]:
        with pytest.raises(SystemExit):
            train_cli(argv)
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)


def test_short_real_training_beats_bicubic_on_set5(tmp_path, sr_data, t91):
    """The quick start at half its size (1 block, 80 steps; the quick start itself: 2 blocks, 100 steps): reduced
    FFNetSR-light x2 trained on T91 on CPU, then PSNR-Y/SSIM-Y against MATLAB bicubic on Set5 and Set14 (the
    quick start adds B100, 100 more images: left out here for time)."""
    from ffnet_sr.quickstart import run_quickstart

    result = run_quickstart(tmp_path, steps=80, depth=1, threads=2, eval_sets=("Set5", "Set14"))
    ours, bic = result["metrics"]["set5_x2"], result["metrics"]["set5_x2_bicubic"]
    ours14, bic14 = result["metrics"]["set14_x2"], result["metrics"]["set14_x2_bicubic"]
    assert bic["psnr"] == pytest.approx(33.674, abs=0.002)  # our protocol's bicubic on Set5 x2
    assert ours["psnr"] > bic["psnr"] + 0.2, result
    assert ours["ssim"] > bic["ssim"], result
    assert bic14["psnr"] == pytest.approx(30.232, abs=0.002) and ours14["psnr"] > bic14["psnr"], result
    assert result["data"]["num_images"] == {"Set5": 5, "Set14": 14} and "T91" in result["data"]["train"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["beats_bicubic"] is True and saved["metrics"] == result["metrics"]
    assert saved["protocol"]["crop_border"] == 2 and saved["protocol"]["test_y_channel"] is True
    assert saved["checkpoint"].endswith("last.pth") and "torch" in saved["versions"]
    assert (tmp_path / "butterfly_x2_ffnetsr.png").is_file()


def test_bad_training_data_stops_before_the_run_folder_exists(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((5, 3, 3), np.uint8)).save(images / "tiny.png")
    run = tmp_path / "run"
    for extra, expected in [([f"data.train_dirs=[{images}]", "data.val_sets=[]"], "tiny.png: 3x5 pixels"),
                            (["data.val_sets=[NoSuchSet]"], "NoSuchSet")]:
        with pytest.raises(SystemExit) as exc:
            train_cli(["cpu_t91_x2", "data.patch_size=16", f"run.output_dir={run}", *extra])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and expected in err and err.count("\n") == 1, err
        assert not run.exists()
