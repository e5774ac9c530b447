"""The generation console scripts on bad input, each run in a fresh interpreter as a user runs it.

The rule (issue 23): a wrong option or config value gives exit 2 and one ``error:`` line naming it, no
traceback (``--debug`` shows one), and no output folder; a folder of images with bad files in it is read past
them, every bad file gets its own line and the run ends with a summary line. The checkpoint the options are
checked against is an untrained ``u_ffnet_tiny`` saved in ffnet-gen-train's format (no training needed: only
its config and classes matter here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from corpus import BAD_IMAGES, assert_one_line_error, image_corpus, run_cli

pytest.importorskip("ffnet_generation")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gen_cli")


@pytest.fixture(scope="module")
def images(work: Path) -> Path:
    """The shared corpus in one class folder, plus two plain images: the Inception Score takes 10 splits, and the
    corpus has 8 readable files."""
    from PIL import Image

    folder = work / "images"
    image_corpus(folder / "cls")
    for i in range(2):
        Image.fromarray(np.full((30, 20, 3), 60 + 90 * i, np.uint8)).save(folder / "cls" / f"plain{i}.png")
    return folder


@pytest.fixture(scope="module")
def checkpoint(work: Path) -> Path:
    """An untrained u_ffnet_tiny (1x16x16 digits layout, 10 classes) in ffnet-gen-train's checkpoint format."""
    from ffnet_generation.builders import build_model
    from ffnet_generation.config import DataConfig, EvalConfig, GenerationConfig, GenTrainConfig, ModelConfig
    from metamixer.train.checkpoint import save_checkpoint
    from metamixer.train.sections import RunConfig

    cfg = GenerationConfig(run=RunConfig(device="cpu"), data=DataConfig(mode="digits", num_workers=0),
                           model=ModelConfig(name="u_ffnet_tiny", input_size=16, in_channels=1, num_classes=10,
                                             ffnified_kernel=3, rep_ffn=False),
                           train=GenTrainConfig(steps=1),
                           eval=EvalConfig(num_samples=4, steps="ddim2", batch_size=4, labels="all"))
    return save_checkpoint(work / "ckpt" / "tiny.pth", model=build_model(cfg.model), config=cfg, step=0)


def _folder_run_lines(result, folder: Path, code: int) -> list[str]:  # noqa: ANN001
    """A folder run past bad files: exit ``code``, no traceback, one ``error:`` line per bad corpus file (each
    named once), then one summary line."""
    where = f"exit {result.returncode}\nstdout: {result.stdout[-1500:]}\nstderr: {result.stderr[-3000:]}"
    assert result.returncode == code, where
    assert "Traceback" not in result.stderr + result.stdout, where
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == len(BAD_IMAGES) + 1 and all(line.startswith("error: ") for line in lines), where
    for name in BAD_IMAGES:
        assert sum(str(folder / "cls" / name) in line for line in lines[:-1]) == 1, (name, where)
    return lines


def test_eval_scores_an_image_folder_past_its_bad_files(work: Path, images: Path) -> None:
    import torch

    from ffnet_generation.metrics.inception import FIDInceptionV3

    torch.manual_seed(0)
    weights = work / "inception.pth"
    torch.save(FIDInceptionV3().state_dict(), weights)  # random weights: the folder handling is under test
    out = work / "eval_folder" / "results.json"
    result = run_cli("ffnet-gen-eval", "--samples", str(images / "cls"), "--inception", str(weights),
                     "--batch-size", "5", "--output", str(out))
    lines = _folder_run_lines(result, images, code=1)
    assert "5 unreadable image(s) were left out" in lines[-1] and str(out) in lines[-1]
    record = json.loads(out.read_text())
    # grey, RGBA, palette, CMYK, 16-bit, EXIF-rotated and 3x5 files are all read (8 + the 2 plain ones)
    assert record["num_samples"] == 10 and record["metrics"]["inception_score"] >= 1.0
    assert sorted(record["unreadable"]) == sorted(str(images / "cls" / n) for n in BAD_IMAGES)
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.json"]  # no temporaries


def test_pixel_training_lists_every_bad_image_and_starts_nothing(work: Path, images: Path) -> None:
    run = work / "pixel_run"
    result = run_cli("ffnet-gen-train", "cpu_digits_u_ffnet", "data.mode=pixel", f"data.path={images}",
                     "model.in_channels=3", f"run.output_dir={run}")
    lines = _folder_run_lines(result, images, code=2)
    assert "5 of 15 images" in lines[-1] and "training did not start" in lines[-1]
    assert not run.exists()


@pytest.mark.parametrize("option, value", [
    ("--num-samples", "0"), ("--num-samples", "-1"), ("--steps", "0"), ("--batch-size", "0"),
    ("--cfg-scale", "nan"), ("--eta", "-1"), ("--eta", "1.5"),
    ("--labels", "3,10"),  # the checkpoint has classes 0..9
])
def test_sample_refuses_a_bad_option_before_making_its_folder(work: Path, checkpoint: Path, option: str,
                                                              value: str) -> None:
    out = work / f"samples_{option.strip('-')}_{value}"
    result = run_cli("ffnet-gen-sample", "--checkpoint", str(checkpoint), "--output", str(out), "--steps", "ddim2",
                     option, value)
    assert_one_line_error(result, option, "got")
    assert not out.exists()


def test_debug_shows_the_traceback(work: Path, checkpoint: Path) -> None:
    result = run_cli("ffnet-gen-sample", "--checkpoint", str(checkpoint), "--output", str(work / "dbg"),
                     "--num-samples", "0", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr and "FFNetError" in result.stderr
    assert not (work / "dbg").exists()


@pytest.mark.parametrize("recipe, key", [
    ("optim:\n  lr: .nan\n", "optim.lr"),
    ("optim:\n  lr: -1\n", "optim.lr"),
    ("train:\n  batch_size: 0\n", "train.batch_size"),
    ("train:\n  steps: -1\n", "train.steps"),  # once ran no step and reported a checkpoint it never wrote
])
def test_train_refuses_a_bad_yaml_value_naming_the_key(work: Path, recipe: str, key: str) -> None:
    path = work / f"bad_{key.replace('.', '_')}_{len(recipe)}.yaml"
    path.write_text(recipe)
    run = work / f"run_{path.stem}"
    result = run_cli("ffnet-gen-train", str(path), f"run.output_dir={run}")
    assert_one_line_error(result, key, path.name, "must be a finite number")
    assert not run.exists()


def test_eval_checks_the_sampler_against_the_checkpoint_before_sampling(checkpoint: Path) -> None:
    result = run_cli("ffnet-gen-eval", "--checkpoint", str(checkpoint), "eval.labels=3,11")
    assert_one_line_error(result, "eval.labels", "[0, 9]")
    assert not (checkpoint.parent / "eval_tiny").exists()


def test_quickstart_checks_its_options_before_training(work: Path) -> None:
    out = work / "quickstart"
    result = run_cli("ffnet-gen-quickstart", "--output", str(out), "--num-samples", "0")
    assert_one_line_error(result, "--num-samples")
    assert not out.exists()


def test_extract_latents_checks_its_options_before_reading(work: Path, images: Path) -> None:
    out = work / "latents"
    result = run_cli("ffnet-gen-extract-latents", "--images", str(images), "--vae", str(work / "no_vae"),
                     "--output", str(out), "--image-size", "12")
    assert_one_line_error(result, "--image-size", "multiple of 8")
    assert not out.exists() and not (work / ".latents.partial").exists()
