"""A training folder that is an evaluation set is refused (path, name or pixel content), unless
``data.allow_benchmark_training`` says it is deliberate. This is the only test file that trains on a benchmark
on purpose (test_sr_no_benchmark_training.py checks that)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ffnet_sr.config import SRConfig
from ffnet_sr.data.benchmark_guard import benchmark_by_name, check_training_dirs, find_benchmark
from ffnet_sr.data.io import read_rgb_or_grey
from ffnet_sr.task import build_dataset
from ffnet_sr.train import cli as train_cli
from metamixer.train.config import load_config
from metamixer.train.errors import FFNetError


def _cfg(tmp_path: Path, train_dir: str | Path, *extra: str) -> SRConfig:
    return load_config(SRConfig, None, [f"data.train_dirs=[{train_dir}]", "model.scale=2", "data.patch_size=16",
                                        "data.val_sets=[]", f"run.output_dir={tmp_path / 'run'}", *extra])


def test_benchmark_folder_is_refused_with_one_line_naming_it(tmp_path, sr_data, capsys):
    with pytest.raises(FFNetError) as info:
        build_dataset(_cfg(tmp_path, "sr/Set5/HR"))
    msg = str(info.value)
    assert "\n" not in msg and str(sr_data / "Set5" / "HR") in msg and "Set5 benchmark" in msg
    assert "data.allow_benchmark_training=true" in msg
    # the command: exit 2, that one line, no traceback, no run folder
    run = tmp_path / "cli_run"
    with pytest.raises(SystemExit) as exc:
        train_cli(["cpu_t91_x2", "data.train_dirs=[sr/B100/HR]", f"run.output_dir={run}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "B100 benchmark" in err and "Traceback" not in err
    assert str(sr_data / "B100" / "HR") in err and not run.exists()


def test_allow_benchmark_training_lets_it_run_and_logs_it(tmp_path, sr_data):
    ds = build_dataset(_cfg(tmp_path, "sr/Set5/HR", "data.allow_benchmark_training=true"))
    assert len(ds) == 5 and len(ds.notes) == 1 and "Set5 benchmark" in ds.notes[0]
    from ffnet_sr.train import train

    cfg = _cfg(tmp_path, "sr/Set5/HR", "data.allow_benchmark_training=true", "model.depth=1", "train.steps=1",
               "train.batch_size=1", "train.progress=false", "data.num_workers=0", "run.device=cpu")
    assert train(cfg, quiet=True).step == 1
    assert "warning: training on an evaluation set" in (tmp_path / "run" / "log.txt").read_text()


def test_refused_by_path_inside_a_set_and_through_a_symlink(tmp_path, sr_data):
    assert "inside" in find_benchmark(sr_data / "Set14")  # the set root, not only its HR/ folder
    assert "inside" in find_benchmark(sr_data / "B100" / "LR_bicubic" / "X2")
    link = tmp_path / "my_training_images"
    link.symlink_to(sr_data / "Set5" / "HR")
    with pytest.raises(FFNetError, match=r"my_training_images is the Set5 benchmark \(it is inside"):
        check_training_dirs([link])


def test_refused_by_name(tmp_path):
    """Urban100 and Manga109 are not shipped here: a folder named after them is refused by its name alone."""
    for parts in (("Urban100", "HR"), ("benchmark", "manga109_HR"), ("BSD100",)):
        folder = tmp_path.joinpath(*parts)
        folder.mkdir(parents=True)
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "x.png")
        with pytest.raises(FFNetError, match="benchmark \\(its path names it\\)"):
            check_training_dirs([folder])
    assert [benchmark_by_name(p) for p in ("a/Set5", "SET14_x2", "b/urban100-hr", "Manga109")] == \
           ["Set5", "Set14", "Urban100", "Manga109"]
    # training sets and look-alikes are not benchmarks
    for name in ("T91/HR", "DIV2K/DIV2K_train_HR", "Flickr2K_HR", "BSDS300/train", "BSDS500", "Set50", "myset5"):
        assert benchmark_by_name(name) is None, name


def test_refused_by_content_for_a_renamed_reencoded_copy(tmp_path, sr_data):
    """A benchmark image saved under another name and format in an innocent-looking folder."""
    mine = tmp_path / "holiday_photos"
    mine.mkdir()
    Image.fromarray(np.full((50, 60, 3), 90, np.uint8)).save(mine / "beach.png")
    Image.fromarray(read_rgb_or_grey(sr_data / "Set14" / "HR" / "bridge.png")).save(mine / "IMG_0042.bmp")
    with pytest.raises(FFNetError, match=r"holiday_photos is a copy of the Set14 benchmark \(IMG_0042\.bmp has the "
                                         r"pixels of Set14/bridge\)"):
        check_training_dirs([mine])
    (mine / "IMG_0042.bmp").unlink()
    assert check_training_dirs([mine]) == []


def test_a_folder_used_for_validation_is_refused_for_training(tmp_path):
    """Any evaluation folder of the same config counts as a known benchmark (here a custom hold-out set)."""
    holdout = tmp_path / "holdout"
    holdout.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(holdout / "x.png")
    cfg = _cfg(tmp_path, holdout, f"data.val_sets=[{holdout}]")
    with pytest.raises(FFNetError, match=r"holdout is the holdout benchmark \(it is inside"):
        build_dataset(cfg)
    assert len(build_dataset(_cfg(tmp_path, holdout))) == 1  # not an evaluation folder of this run: fine


def test_training_sets_pass(t91):
    assert check_training_dirs([t91, t91.parent]) == []  # T91 by path, name and pixel content
