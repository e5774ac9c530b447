"""The classification CLIs on bad input, driven as a user runs them (fresh interpreters): a folder of good and bad
images goes on past the bad ones (exit 1, every bad file named, every good one predicted, a phone photo classified
upright), an evaluation lists every unreadable image (error policy: exit 2, nothing written; skip policy: scored
without them, listed in results.json), and each impossible option or config value stops with one line naming it
before anything is created (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from corpus import (
    BAD_IMAGES,
    assert_folder_run,
    assert_one_line_error,
    checkpoint_corpus,
    image_corpus,
    run_cli,
)
from PIL import Image

pytestmark = pytest.mark.timeout(300)

TINY = {"widths": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "stem_dim": 8}
CLASSES = ["circle", "square", "stripe"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run checkpoint as ffnet-cls-train writes it (config, class names), of a tiny untrained FFNet at 32 px.

    Its BatchNorm statistics are measured on random images (at init they are 0/1, and the signal fades to ~1e-6
    by the head), so that different pixels give clearly different probabilities."""
    from ffnet_classification import create_model
    from ffnet_classification.config import ClsConfig
    from metamixer.train.checkpoint import save_checkpoint
    from metamixer.train.config import config_from_dict

    cfg = config_from_dict(ClsConfig, {"model": {"name": "ffnet_1", "spec": TINY},
                                       "data": {"input_size": 32, "crop_pct": 1.0}, "train": {"epochs": 1}})
    torch.manual_seed(0)
    model = create_model("ffnet_1", num_classes=len(CLASSES), **TINY)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        model.train()(torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
        model.head.weight.mul_(4.0)
    model.eval()
    extra = {"task": {"classes": CLASSES, "model_name": "ffnet_1", "num_classes": len(CLASSES)}}
    return save_checkpoint(tmp_path_factory.mktemp("cls_ckpt") / "best.pth", model=model, epoch=1, config=cfg,
                           extra=extra)


def _phone_photo_pair(folder: Path) -> dict[str, Path]:
    """``phone.jpg``: stored sideways with EXIF orientation 6 (a portrait phone photo); ``upright.png``: the same
    decoded pixels turned the way the tag says (done here, not by the code under test); ``sideways.png``: the
    pixels as stored (what a reader that ignores EXIF would classify)."""
    import numpy as np

    y, x = np.mgrid[0:48, 0:32]
    upright = np.stack([x * 8 % 256, y * 5 % 256, ((x // 8 + y // 12) % 2) * 255], -1).astype(np.uint8)
    stored = Image.fromarray(upright, "RGB").transpose(Image.Transpose.ROTATE_90)  # 48 wide, 32 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    files = {"phone.jpg": folder / "phone.jpg", "upright.png": folder / "upright.png",
             "sideways.png": folder / "sideways.png"}
    stored.save(files["phone.jpg"], quality=95, exif=exif.tobytes())
    with Image.open(files["phone.jpg"]) as raw:
        decoded = raw.convert("RGB")  # no EXIF applied: the stored, sideways pixels
    decoded.save(files["sideways.png"])
    decoded.transpose(Image.Transpose.ROTATE_270).save(files["upright.png"])  # 90 degrees clockwise
    return files


def test_predict_folder_goes_on_past_bad_files_and_reads_phone_photos_upright(ckpt: Path, tmp_path: Path) -> None:
    files = image_corpus(tmp_path / "images")
    files.update(_phone_photo_pair(tmp_path / "images"))
    out = tmp_path / "out" / "predictions.json"
    result = run_cli("ffnet-cls-predict", "--checkpoint", str(ckpt), "--device", "cpu", "--topk", "3",
                     "--output", str(out), str(tmp_path / "images"))
    where = f"exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}"
    errors = assert_folder_run(result, {n: files[n] for n in BAD_IMAGES}, len(files))
    assert "100000x100000" in next(line for line in errors if "bomb.png" in line)  # refused by its header
    predicted = {Path(r["image"]).name: r["top"] for r in map(json.loads, result.stdout.splitlines())}
    assert sorted(predicted) == sorted(set(files) - set(BAD_IMAGES)), where
    for top in predicted.values():
        assert [t["class"] for t in top] and {t["class"] for t in top} <= set(CLASSES)
        assert [t["prob"] for t in top] == sorted((t["prob"] for t in top), reverse=True)
    phone, upright, sideways = predicted["phone.jpg"], predicted["upright.png"], predicted["sideways.png"]
    assert [t["index"] for t in phone] == [t["index"] for t in upright]
    assert [t["prob"] for t in phone] == pytest.approx([t["prob"] for t in upright], abs=1e-5)
    # the check can fail: the stored (sideways) pixels are classified differently
    diff = max(abs(a["prob"] - b["prob"]) for a in sorted(upright, key=lambda t: t["index"])
               for b in sorted(sideways, key=lambda t: t["index"]) if a["index"] == b["index"])
    assert diff > 1e-3, (upright, sideways)
    record = json.loads(out.read_text())  # --output is still written: the good images were all predicted
    assert record["metrics"] == {"images": len(predicted), "failed": len(BAD_IMAGES)}
    assert sorted(Path(f["path"]).name for f in record["failed"]) == sorted(BAD_IMAGES)
    assert [p.name for p in out.parent.iterdir()] == ["predictions.json"]  # no temporaries left


@pytest.fixture(scope="module")
def val_with_bad_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], int]:
    """An ImageFolder with 2 good images per class and the corpus's bad files spread over the classes."""
    root = tmp_path_factory.mktemp("cls_val")
    corpus = image_corpus(root / "corpus")
    val = root / "val"
    bad = []
    for ci, cls in enumerate(CLASSES):
        (val / cls).mkdir(parents=True)
        for j, name in enumerate(("rgb.png", "grey.png")):
            Image.open(corpus[name]).rotate(90 * ci + 45 * j).save(val / cls / f"good{j}.png")
    for i, name in enumerate(BAD_IMAGES):
        target = val / CLASSES[i % len(CLASSES)] / f"bad_{name}"
        target.write_bytes(corpus[name].read_bytes())
        bad.append(target)
    return val, bad, 2 * len(CLASSES)


def test_eval_error_policy_lists_every_bad_image_and_writes_nothing(ckpt: Path, val_with_bad_files, tmp_path: Path) -> None:
    val, bad, _ = val_with_bad_files
    out = tmp_path / "out" / "results.json"
    result = run_cli("ffnet-cls-eval", "--checkpoint", str(ckpt), "--data", str(val), "--workers", "0",
                     "--device", "cpu", "--output", str(out))
    line = assert_one_line_error(result, *map(str, bad), f"{len(bad)} of {len(bad) + 6} images are unreadable",
                                 "--on-bad-image skip")
    assert "100000x100000" in line
    assert not out.parent.exists()


def test_eval_skip_policy_scores_the_rest_and_records_the_skipped(ckpt: Path, val_with_bad_files, tmp_path: Path) -> None:
    val, bad, good = val_with_bad_files
    out = tmp_path / "results.json"
    result = run_cli("ffnet-cls-eval", "--checkpoint", str(ckpt), "--data", str(val), "--workers", "1",
                     "--device", "cpu", "--on-bad-image", "skip", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["protocol"]["samples"] == good and record["protocol"]["skipped"] == len(bad)
    assert record["protocol"]["on_bad_image"] == "skip"
    assert sorted(s["path"] for s in record["skipped_images"]) == sorted(map(str, bad))
    assert all(s["reason"] for s in record["skipped_images"])
    assert f"{len(bad)} unreadable images, not scored" in result.stdout


def test_checkpoint_of_another_network_says_what_it_holds(tmp_path: Path) -> None:
    wrong = checkpoint_corpus(tmp_path / "ckpt")["wrong_architecture.pth"]
    image = image_corpus(tmp_path / "images")["rgb.png"]
    line = assert_one_line_error(run_cli("ffnet-cls-predict", "--checkpoint", str(wrong), str(image)), str(wrong),
                                 "not FFNet weights", "4 of its 4 weight keys", "0.weight")
    assert "--model" not in line  # a flag cannot turn another network's weights into an FFNet


#: (script, arguments, what the one line must name); {ckpt} checkpoint, {img} an image, {out} must stay absent,
#: {data} a train folder, {recipe} a YAML recipe with ``optim.lr: .nan``
OPTIONS = [
    ("ffnet-cls-predict", ["--checkpoint", "{ckpt}", "--topk", "0", "--output", "{out}/p.json", "{img}"], "--topk"),
    ("ffnet-cls-eval", ["--checkpoint", "{ckpt}", "--data", "{data}", "--on-bad-image", "ignore"], "invalid choice"),
    ("ffnet-cls-eval", ["--checkpoint", "{ckpt}", "--data", "{data}", "--crop-pct", "1.5", "--output", "{out}/r.json"],
     "--crop-pct"),
    ("ffnet-cls-export", ["--checkpoint", "{ckpt}", "--tolerance", "nan", "--output-dir", "{out}"], "--tolerance"),
    ("ffnet-cls-bench", ["--batch-sizes", "1", "0", "--output", "{out}/b.json"], "--batch-sizes"),
    ("ffnet-cls-train", ["{recipe}"], "'optim.lr'"),
    ("ffnet-cls-train", ["cpu_digits", "run.output_dir={out}", "train.batch_size=0"], "'train.batch_size'"),
    ("ffnet-cls-quickstart", ["--output", "{out}", "train.epochs=0"], "'train.epochs'"),
]


@pytest.mark.parametrize(("script", "args", "needle"), OPTIONS, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_option_values_give_one_line_and_create_nothing(script: str, args: list[str], needle: str, ckpt: Path,
                                                            val_with_bad_files, tmp_path: Path) -> None:
    val, _, _ = val_with_bad_files
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"run: {{output_dir: {out}}}\nmodel: {{name: ffnet_1, spec: {json.dumps(TINY)}}}\n"
                      f"data: {{train: {val}, input_size: 32, workers: 0}}\noptim: {{lr: .nan}}\ntrain: {{epochs: 1}}\n")
    image = next(val.glob("*/good0.png"))
    argv = [a.format(ckpt=ckpt, img=image, out=out, data=val, recipe=recipe) for a in args]
    assert_one_line_error(run_cli(script, *argv), needle)
    assert not out.exists(), f"{script} created {out}"
