"""Training on real data (scikit-learn digits written as PNG files): learning, exact mid-epoch resume, DDP,
the console scripts in a fresh interpreter, CLI errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ffnet_classification.config import ClsConfig
from ffnet_classification.train import run
from metamixer.train.config import apply_overrides, config_from_dict

pytest.importorskip("sklearn")

TINY = {"widths": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "stem_dim": 8}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ffnet_classification.digits import write_digits_imagefolder

    root = tmp_path_factory.mktemp("digits")
    write_digits_imagefolder(root, size=16)
    return root


def tiny_recipe(digits: Path, out: Path) -> dict:
    """A 0.2M-param model on 16 px digits: the whole recipe machinery at CPU-test size."""
    return {
        "run": {"output_dir": str(out), "threads": 1, "seed": 42},
        "model": {"spec": dict(TINY)},
        "data": {"train": str(digits / "train"), "val": str(digits / "val"), "input_size": 16, "crop_pct": 1.0,
                 "workers": 0, "hflip": 0.0},
        "optim": {"lr_base_batch": 64, "base_lr": 3e-3, "warmup_epochs": 0.5, "weight_decay": 0.05,
                  "warmup_lr": 1e-6, "min_lr": 1e-5},
        "train": {"epochs": 1, "batch_size": 64, "log_every": 1000, "progress": False},
    }


def cfg_for(digits: Path, out: Path, *overrides: str) -> ClsConfig:
    return config_from_dict(ClsConfig, apply_overrides(tiny_recipe(digits, out), overrides, cls=ClsConfig))


def test_short_training_learns_digits(digits: Path, tmp_path: Path) -> None:
    cfg = cfg_for(digits, tmp_path / "run", "train.epochs=3", "data.rand_n=0", "data.reprob=0.0", "data.mixup=0.0",
                  "data.cutmix=0.0", "model.drop_path_rate=0.0", "train.ema_decay=0.99", "train.ema_warmup=true",
                  "data.scale=[0.7, 1.0]")
    summary = run(cfg, quiet=True)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped"] == "completed"
    history = summary["history"]
    # chance is 10%: demand a wide margin after ~66 steps of a 0.2M-param model
    assert len(history) == 3 and history[-1]["top1"] > 70.0, history
    assert history[-1]["loss"] < history[0]["loss"], history
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert ckpt["extra"]["task"]["classes"] == [str(i) for i in range(10)] and ckpt["step"] == 3 * 22
    assert ckpt["ema_updates"] == 66
    assert (tmp_path / "run" / "best.pth").is_file() and (tmp_path / "run" / "config.yaml").is_file()
    assert summary["best_top1"] >= history[-1]["top1"] and summary["lr"] == pytest.approx(3e-3)


def test_resume_mid_epoch_equals_uninterrupted(digits: Path, tmp_path: Path) -> None:
    """Full recipe (RandAugment, erasing, mixup/cutmix, drop-path, EMA, clipping): 2 epochs uninterrupted ==
    stopped in the middle of epoch 2 (run.max_steps) + --resume, bit for bit."""
    common = ("data.val=null", "train.batch_size=128", "train.epochs=2", "model.drop_path_rate=0.1",
              "data.reprob=0.5", "data.rand_n=2", "optim.clip_grad=1.0", "train.ema_decay=0.9")
    run(cfg_for(digits, tmp_path / "full", *common), quiet=True)  # 11 steps per epoch
    part = run(cfg_for(digits, tmp_path / "part", *common, "run.max_steps=15"), quiet=True)
    assert part["stopped"] == "max_steps" and part["step"] == 15
    loop = torch.load(tmp_path / "part" / "last.pth", weights_only=True)["extra"]["loop"]
    assert (loop["epoch"], loop["batch"]) == (1, 4)
    run(cfg_for(digits, tmp_path / "part", *common), resume=str(tmp_path / "part" / "last.pth"), quiet=True)
    a = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.pth", weights_only=True)
    assert a["step"] == b["step"] == 22 and a["epoch"] == b["epoch"] == 2
    for part_name in ("model", "ema"):
        assert a[part_name].keys() == b[part_name].keys()
        for k in a[part_name]:
            assert torch.equal(a[part_name][k], b[part_name][k]), f"{part_name}.{k} differs after resume"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_epoch_batches_do_not_depend_on_workers_or_the_start(digits: Path) -> None:
    """What makes mid-epoch resume exact: batches from k on equal the uninterrupted epoch's, with any workers."""
    from ffnet_classification.data import EpochSampler, SeededSamples, build_dataset, build_transforms

    tf = build_transforms(True, 16, 1.0, rand_n=2, reprob=0.5)
    ds = SeededSamples(build_dataset(str(digits / "train"), tf))

    def batches(start: int, workers: int) -> list[torch.Tensor]:
        sampler = EpochSampler(len(ds), 32, seed=5, rank=1, world_size=2)
        sampler.set_epoch(3, start)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers)
        return [x for x, _ in loader]

    full, tail, tail_workers = batches(0, 0), batches(19, 0), batches(19, 2)
    assert len(full) == 1437 // 2 // 32 == 22 and len(tail) == 3
    assert all(torch.equal(x, y) for x, y in zip(full[19:], tail, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(tail, tail_workers, strict=True))


def test_ddp_two_cpu_processes(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(digits, out)))
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "ffnet_classification.train", str(recipe), "train.epochs=null", "train.steps=2",
            "train.val_every=2", "train.batch_size=16", "run.device=cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True and summary["step"] == 2
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["config"]["train"]["batch_size"] == 16
    assert "global batch 32" in (out / "log.txt").read_text()
    # the val set is sharded without padding and summed: every image counted exactly once
    assert summary["last"]["top1"] >= 0.0 and summary["history"][0]["step"] == 2


def test_train_and_eval_console_scripts_in_a_fresh_interpreter(digits: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(digits, tmp_path / "run")))
    bin_dir = Path(sys.executable)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    train = subprocess.run([str(bin_dir.with_name("ffnet-cls-train")), str(recipe), "train.epochs=null",
                            "train.steps=3", "train.val_every=3", "run.device=cpu"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    assert json.loads(train.stdout.strip().splitlines()[-1])["stopped"] == "completed"
    best = tmp_path / "run" / "best.pth"
    assert best.is_file()
    evaluate = subprocess.run([str(bin_dir.with_name("ffnet-cls-eval")), "--checkpoint", str(best), "--data",
                               str(digits / "val"), "--workers", "0", "--device", "cpu"],
                              capture_output=True, text=True, timeout=300, env=env)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert "top-1" in evaluate.stdout
    record = json.loads((tmp_path / "run" / "results.json").read_text())  # default: beside the checkpoint
    assert set(record["metrics"]) == {"top1", "top5", "loss"} and 0.0 <= record["metrics"]["top1"] <= 100.0
    assert record["protocol"]["fused"] is True and record["protocol"]["samples"] == 359
    assert record["checkpoint"] == str(best) and "torch" in record["versions"]


def test_cli_errors_are_one_line(digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ffnet_classification.train import cli

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(digits, tmp_path / "o")))
    with pytest.raises(SystemExit) as e:
        cli([str(recipe), "data.train=" + str(tmp_path / "nope")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "\n" not in err
    assert not (tmp_path / "o").exists()  # the data is checked before the run folder is made
    with pytest.raises(SystemExit):
        cli(["cpu_digits", "model.nmae=ffnet_1"])  # a shipped recipe by name
    assert "nmae" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli([])
    err = capsys.readouterr().err
    assert "give a recipe" in err and "cpu_digits" in err


def test_class_count_mismatch(digits: Path, tmp_path: Path) -> None:
    from metamixer.train.errors import FFNetError

    with pytest.raises(FFNetError, match="num_classes=5 but .* has 10 classes"):
        run(cfg_for(digits, tmp_path / "x", "model.num_classes=5"), quiet=True)
    assert not (tmp_path / "x").exists()


def test_bad_training_images_stop_with_one_line_or_are_skipped_and_listed(digits: Path, tmp_path: Path) -> None:
    """Both policies through DataLoader workers: ``error`` names the file in one clean line (not the worker's
    traceback text), ``skip`` trains on and lists every skipped train and val file in summary.json."""
    from metamixer.train.errors import FFNetError

    data = tmp_path / "data"
    for split, digit, n in (("train", "0", 24), ("train", "1", 23), ("val", "0", 6), ("val", "1", 6)):
        (data / split / digit).mkdir(parents=True)
        for src in sorted((digits / split / digit).glob("*.png"))[:n]:
            (data / split / digit / src.name).write_bytes(src.read_bytes())
    bad_train = data / "train" / "1" / "broken.png"  # 47 readable + 1: the one batch of 48 holds it
    bad_train.write_text("not an image")
    bad_val = data / "val" / "0" / "empty.png"
    bad_val.write_bytes(b"")
    overrides = (f"data.train={data / 'train'}", f"data.val={data / 'val'}", "data.workers=1", "train.batch_size=48")
    with pytest.raises(FFNetError) as err:
        run(cfg_for(digits, tmp_path / "stop", *overrides), quiet=True)
    msg = str(err.value)
    assert str(bad_train) in msg and "data.on_bad_image=skip" in msg
    assert "Traceback" not in msg and "\n" not in msg
    summary = run(cfg_for(digits, tmp_path / "skip", *overrides, "data.on_bad_image=skip"), quiet=True)
    assert [s["path"] for s in summary["skipped_images"]["train"]] == [str(bad_train)]
    assert [s["path"] for s in summary["skipped_images"]["val"]] == [str(bad_val)]
    assert summary["skipped_images"]["val"][0]["reason"] == "empty file, not an image"
    assert json.loads((tmp_path / "skip" / "summary.json").read_text())["skipped_images"] == summary["skipped_images"]
    with pytest.raises(FFNetError, match=r"train.batch_size=47: Mixup/CutMix .* need an even batch size"):
        run(cfg_for(digits, tmp_path / "odd", *overrides, "train.batch_size=47"), quiet=True)
    assert not (tmp_path / "odd").exists()
