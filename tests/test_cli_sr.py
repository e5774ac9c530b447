"""The super-resolution CLIs on bad input, driven as a user runs them (fresh interpreters): a folder of good and
bad images goes on past the bad ones (exit 1, every bad file named, every good one written, nothing partial),
and each impossible option value stops with one line naming the option before anything is created (exit 2)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from corpus import BAD_IMAGES, assert_folder_run, assert_one_line_error, image_corpus, run_cli
from PIL import Image

pytestmark = pytest.mark.timeout(300)


def _data() -> Path:
    return Path(os.environ.get("FFNET_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return image_corpus(tmp_path_factory.mktemp("sr_images") / "corpus")


def _out_name(name: str) -> str:
    """sr-upscale's output name: ``<stem>_x2.png``, with the extension added for stems two inputs share."""
    stem, ext = name.rsplit(".", 1)
    return f"{stem}_{ext}_x2.png" if stem == "truncated" else f"{stem}_x2.png"


def test_upscale_folder_goes_on_past_bad_files(corpus: dict[str, Path], tmp_path: Path) -> None:
    folder = next(iter(corpus.values())).parent
    out = tmp_path / "out"
    result = run_cli("ffnet-sr-upscale", str(folder), "--bicubic", "--scale", "2", "--output", str(out))
    assert_folder_run(result, {n: corpus[n] for n in BAD_IMAGES}, len(corpus))
    for name in BAD_IMAGES:
        assert not (out / _out_name(name)).exists(), name
    good = sorted(set(corpus) - set(BAD_IMAGES))
    assert sorted(p.name for p in out.iterdir()) == sorted(_out_name(n) for n in good)  # no temporaries left
    for name in good:
        with Image.open(corpus[name]) as src, Image.open(out / _out_name(name)) as up:
            w, h = src.size
            if name == "rotated.jpg":  # EXIF orientation 6: stored landscape, shown (and written) portrait
                w, h = h, w
            assert up.size == (2 * w, 2 * h), name
            assert up.mode == {"grey.png": "L", "grey16.png": "I;16", "rgba.png": "RGBA"}.get(name, "RGB"), name
    rotated = np.asarray(Image.open(out / "rotated_x2.png"), dtype=np.float64)
    plain = np.asarray(Image.open(out / "rgb_x2.png"), dtype=np.float64)  # the same photo, stored upright
    assert np.abs(rotated - np.rot90(plain, -1)).mean() < 4  # turned clockwise (JPEG noise only)


@pytest.fixture(scope="module")
def x2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ffnet_sr import create_model
    from metamixer.train.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("sr_ckpt") / "x2.pth"
    save_checkpoint(path, model=create_model("ffnetsr_light", 2, depth=1, dim=8), step=1)
    return path


UPSCALE_OPTIONS = [
    (["--bicubic", "--scale", "2", "--tile", "0"], "--tile"),
    (["--bicubic", "--scale", "2", "--tile", "-5"], "--tile"),
    (["--bicubic", "--scale", "2", "--tile-pad", "-3"], "--tile-pad"),
    (["--bicubic", "--scale", "-1"], "--scale"),
    (["--checkpoint", "{ckpt}", "--scale", "3"], "--scale 3"),  # the checkpoint's model is x2
    (["--bicubic", "--scale", "2", "--suffix", "a/b"], "--suffix 'a/b'"),  # a suffix is no folder
    (["--bicubic", "--scale", "2", "--ext", "gif"], "--ext"),
    (["--bicubic", "--scale", "2", "--ext", "jpg", "--jpeg-quality", "0"], "--jpeg-quality"),
    (["--bicubic", "--scale", "2", "--jpeg-quality", "101"], "--jpeg-quality"),
]


@pytest.mark.parametrize(("args", "option"), UPSCALE_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_upscale_bad_option_stops_before_the_output_folder(args: list[str], option: str, corpus: dict[str, Path],
                                                           x2_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [a.format(ckpt=x2_checkpoint) for a in args]
    result = run_cli("ffnet-sr-upscale", str(corpus["rgb.png"]), *argv, "--output", str(out))
    assert_one_line_error(result, option)
    assert not out.exists()


EVAL_OPTIONS = [
    (["--tile", "0"], "--tile"),
    (["--scale", "-1"], "--scale"),
    (["--tile-pad", "-3"], "--tile-pad"),
    (["--crop-border", "-1"], "--crop-border"),
    (["--pad-multiple", "0"], "--pad-multiple"),
    (["--metric-channel", "cmyk"], "--metric-channel"),
    (["--ext", "bmp"], "--ext"),
    (["--suffix", "x/y"], "--suffix 'x/y'"),
    (["eval.suffix=x/y"], "eval.suffix 'x/y'"),  # an override: named by its key
    (["--jpeg-quality", "101"], "--jpeg-quality"),
    (["eval.jpeg_quality=0"], "eval.jpeg_quality"),
    (["eval.metric_channel=ycbcr"], "eval.metric_channel"),
]


@pytest.mark.parametrize(("args", "option"), EVAL_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_eval_bad_option_is_one_line(args: list[str], option: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    scale = [] if "--scale" in args else ["--scale", "2"]
    result = run_cli("ffnet-sr-eval", "--bicubic", *scale, *args, "--sets", str(corpus["rgb.png"].parent),
                     "--output", str(out / "r.json"), "--save-images", str(out / "images"))
    assert_one_line_error(result, option)
    assert not out.exists()


def test_eval_set_with_a_tiny_image_says_what_size_is_needed(corpus: dict[str, Path], tmp_path: Path) -> None:
    bench = tmp_path / "MySet" / "HR"
    bench.mkdir(parents=True)
    for name in ("rgb.png", "tiny.png"):
        (bench / name).write_bytes(corpus[name].read_bytes())
    out = tmp_path / "out"
    result = run_cli("ffnet-sr-eval", "--bicubic", "--scale", "2", "--sets", str(bench.parent),
                     "--output", str(out / "r.json"), env={"FFNET_DATA": str(_data())})
    line = assert_one_line_error(result, str(bench / "tiny.png"), "2x4 pixels", "at least 15 pixels")
    assert "crop_border 2" in line
    assert not out.exists()


TRAIN_CONFIGS = [
    (["data.val_set=Set5"], "did you mean 'data.val_sets'"),  # the old key names the new one
    (["data.val_sets=[Set5]", "train.best_metric=Set5/lpips"], "train.best_metric"),
    (["data.val_sets=[Set5]", "train.val_metric_channel=ycbcr"], "train.val_metric_channel"),
    (["data.val_sets=[Set5, Set5]"], "data.val_sets[1]"),
    (["data.val_sets=[{name: Set5, dataroot_gt: x}]"], "data.val_sets[0].dataroot_gt"),
    (["data.val_sets=[NoSuchSet]"], "NoSuchSet"),
]


@pytest.mark.parametrize(("overrides", "needle"), TRAIN_CONFIGS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_train_validation_settings_are_one_line_errors(overrides: list[str], needle: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli("ffnet-sr-train", "cpu_t91_x2", *overrides, f"run.output_dir={run}",
                     env={"FFNET_DATA": str(_data())})
    assert_one_line_error(result, needle)
    assert not run.exists()
