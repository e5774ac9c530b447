"""RunLogger: log.txt lines, tensorboard scalars/images read back from the event file, tqdm progress."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metamixer.train.logger import RunLogger


def _events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_log_txt_scalars_and_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    with RunLogger(run, enabled=True) as logger:
        logger.info("epoch 1 started")
        logger.info("two\nlines")
        logger.scalar("train/loss", 0.5, step=1)
        logger.scalar("train/loss", torch.tensor(0.25), step=2)
        logger.scalars({"psnr": 30.5, "ssim": 0.9}, step=2, prefix="val/")
        logger.image("val/sr_chw", torch.rand(3, 8, 10), step=2)
        logger.image("val/hr_hwc", np.full((6, 4, 3), 200, dtype=np.uint8), step=2)
        logger.image("val/gray", torch.rand(5, 5), step=2)
    lines = (run / "log.txt").read_text().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d epoch 1 started", lines[0])
    assert lines[2].endswith(" lines")
    assert "epoch 1 started" in capsys.readouterr().out

    acc = _events(run)
    loss = acc.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(1, 0.5), (2, 0.25)]
    assert acc.Scalars("val/psnr")[0].value == pytest.approx(30.5)
    assert acc.Scalars("val/ssim")[0].value == pytest.approx(0.9)
    images = set(acc.Tags()["images"])
    assert images == {"val/sr_chw", "val/hr_hwc", "val/gray"}
    chw = acc.Images("val/sr_chw")[0]
    assert (chw.width, chw.height, chw.step) == (10, 8, 2)
    hwc = acc.Images("val/hr_hwc")[0]
    assert (hwc.width, hwc.height) == (4, 6)


def test_appends_across_runs(tmp_path: Path) -> None:
    for msg in ("first", "second"):
        logger = RunLogger(tmp_path, enabled=True, echo=False)
        logger.info(msg)
        logger.close()
        logger.close()  # idempotent
    assert [line.split(" ", 2)[2] for line in (tmp_path / "log.txt").read_text().splitlines()] == ["first", "second"]


def test_disabled_logger_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "rank1"
    logger = RunLogger(run, enabled=False)
    logger.info("hidden")
    logger.scalar("x", 1.0, 0)
    logger.image("img", torch.rand(3, 4, 4), 0)
    assert list(logger.progress(range(5), desc="quiet")) == [0, 1, 2, 3, 4]
    logger.close()
    assert not run.exists()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_yields_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with RunLogger(tmp_path, enabled=True, echo=False) as logger:
        assert sum(logger.progress(iter(range(100)), total=100, desc="train")) == 4950
    assert "train" in capsys.readouterr().err


def test_bad_image_shape(tmp_path: Path) -> None:
    with RunLogger(tmp_path, enabled=True, echo=False) as logger, pytest.raises(ValueError, match="image must be"):
        logger.image("bad", torch.rand(2, 3, 5, 5), 0)


def test_default_enabled_on_single_process(tmp_path: Path) -> None:
    with RunLogger(tmp_path / "main", echo=False) as logger:
        assert logger.enabled
        logger.info("x")
    assert (tmp_path / "main" / "log.txt").exists()
