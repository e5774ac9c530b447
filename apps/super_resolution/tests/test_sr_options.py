"""The scoring and file options of the SR commands: Y vs RGB metrics (checked against an independent computation
on a real Set5 image), several validation sets with PSNR and SSIM in training, ``--suffix`` / ``--ext`` /
``--recursive`` for upscale and eval, and eval's ``--tile-pad`` (exact at the receptive radius, close below it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ffnet_sr import create_model
from ffnet_sr.config import SRConfig, best_metric, validation_sets
from ffnet_sr.data.io import read_image, write_png
from ffnet_sr.evaluate import cli as eval_cli
from ffnet_sr.train import train
from ffnet_sr.upscale import cli as upscale_cli
from metamixer.train.checkpoint import save_checkpoint
from metamixer.train.config import ConfigError, load_config
from metamixer.train.errors import FFNetError


def _exit_code(cli, argv):  # noqa: ANN001
    try:
        return cli(argv)
    except SystemExit as exc:
        return exc.code


# ------------------------------------------------------------------------------------------- Y vs RGB
def _independent_psnr(sr: np.ndarray, hr: np.ndarray, crop: int, y: bool) -> float:
    """PSNR written out from the definitions (not ffnet_sr.metrics): MATLAB rgb2ycbcr Y on doubles, or the MSE
    over R, G and B."""
    a, b = sr.astype(np.float64), hr.astype(np.float64)
    if y:
        weights = np.array([65.481, 128.553, 24.966]) / 255.0
        a, b = 16.0 + a @ weights, 16.0 + b @ weights
    a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    return 10.0 * np.log10(255.0**2 / np.mean((a - b) ** 2))


def test_rgb_and_y_psnr_match_an_independent_computation(tmp_path, sr_data, capsys):
    scored = {}
    for channel in ("y", "rgb"):
        out, images = tmp_path / f"{channel}.json", tmp_path / f"images_{channel}"
        assert eval_cli(["--bicubic", "--scale", "2", "--sets", "Set5", "--metric-channel", channel,
                         "--save-images", str(images), "--output", str(out)]) == 0
        scored[channel] = json.loads(out.read_text())
        assert ("Y channel" if channel == "y" else "RGB channels") in capsys.readouterr().out
    # the scored SR image (saved losslessly) against the HR file, both decoded by Pillow
    sr = np.asarray(Image.open(tmp_path / "images_y" / "Set5" / "babyx2.png").convert("RGB"))
    hr = np.asarray(Image.open(sr_data / "Set5" / "HR" / "baby.png").convert("RGB"))
    hr = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]
    assert np.array_equal(sr, np.asarray(Image.open(tmp_path / "images_rgb" / "Set5" / "babyx2.png")))
    y_psnr = scored["y"]["per_image"]["Set5"]["baby"]["psnr"]
    rgb_psnr = scored["rgb"]["per_image"]["Set5"]["baby"]["psnr"]
    assert y_psnr == pytest.approx(_independent_psnr(sr, hr, 2, y=True), abs=1e-9)
    assert rgb_psnr == pytest.approx(_independent_psnr(sr, hr, 2, y=False), abs=1e-9)
    assert y_psnr - rgb_psnr > 0.5  # Y is the smoother channel: the two really are different numbers
    assert scored["y"]["metrics"]["Set5"]["psnr"] == pytest.approx(33.674, abs=0.002)  # the paper protocol
    assert scored["rgb"]["metrics"]["Set5"]["ssim"] != scored["y"]["metrics"]["Set5"]["ssim"]
    for channel, record in scored.items():  # what was scored is recorded, with the crop
        p = record["protocol"]
        assert p["metric_channel"] == channel and p["test_y_channel"] is (channel == "y") and p["crop_border"] == 2
        assert ("y_channel" in p) is (channel == "y") and ("rgb_channels" in p) is (channel == "rgb")


# ------------------------------------------------------------------------------------- upscale options
def _tree(root: Path) -> dict[str, np.ndarray]:
    """Nested input folders: the same stem in two folders, two stems in one, an RGBA and a 16-bit image, a hidden
    folder that must be skipped."""
    rng = np.random.default_rng(0)
    images = {
        "top.png": rng.integers(0, 255, (10, 14, 3), dtype=np.uint8),
        "sub/top.png": rng.integers(0, 255, (8, 12, 3), dtype=np.uint8),
        "sub/rgba.png": rng.integers(0, 255, (9, 11, 4), dtype=np.uint8),
        "sub/deeper/deep16.png": rng.integers(0, 65535, (7, 9, 3), dtype=np.uint16),
        "sub/deeper/grey.jpg": rng.integers(0, 255, (12, 10), dtype=np.uint8),
        ".cache/skipped.png": rng.integers(0, 255, (6, 6, 3), dtype=np.uint8),
    }
    for rel, pix in images.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if pix.dtype == np.uint16:
            write_png(path, pix)
        else:
            Image.fromarray(pix).save(path, quality=95) if rel.endswith(".jpg") else Image.fromarray(pix).save(path)
    return images


def test_upscale_recursive_keeps_sub_folders_with_suffix_and_ext(tmp_path, capsys):
    src = tmp_path / "in"
    images = _tree(src)
    out = src / "up"  # inside the input tree: must not be searched (a second run would upscale its own outputs)
    for ext in ("png", "tif", "jpg"):
        argv = [str(src), "--recursive", "--bicubic", "--scale", "2", "--output", str(out), "--suffix", "_x2",
                "--ext", ext, "--overwrite"]
        assert upscale_cli(argv) == 0
        assert upscale_cli(argv) == 0  # again: the outputs of the first run are not inputs now
    printed = capsys.readouterr().out
    expected = {f"{Path(r).with_suffix('')}_x2.{e}" for r in images if not r.startswith(".") for e in ("png", "tif", "jpg")}
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == expected
    for rel, pix in images.items():
        if rel.startswith("."):
            continue
        stem = str(Path(rel).with_suffix(""))
        png = read_image(out / f"{stem}_x2.png")
        assert png.color.shape[:2] == (2 * pix.shape[0], 2 * pix.shape[1]), rel
        jpg = read_image(out / f"{stem}_x2.jpg")
        assert jpg.bit_depth == 8 and jpg.alpha is None and jpg.color.shape == png.color.shape
        if png.bit_depth == 8:
            tif = read_image(out / f"{stem}_x2.tif")
            assert np.array_equal(tif.color, png.color), rel  # TIFF is lossless
            assert (tif.alpha is None) == (png.alpha is None) and (png.alpha is None or np.array_equal(tif.alpha, png.alpha))
            assert np.abs(jpg.color.astype(int) - png.color.astype(int)).mean() < 12, rel  # JPEG: close, not equal
    import cv2

    deep = cv2.imread(str(out / "sub/deeper/deep16_x2.tif"), cv2.IMREAD_UNCHANGED)  # 16 bits kept in TIFF
    assert deep.dtype == np.uint16 and np.array_equal(deep[:, :, ::-1], read_image(out / "sub/deeper/deep16_x2.png").color)
    assert "alpha dropped (JPEG)" in printed and "16-bit stored as 8-bit (JPEG)" in printed
    # without --recursive only the images directly inside are taken; --suffix "" keeps the stem
    flat = tmp_path / "flat"
    assert upscale_cli([str(src), "--bicubic", "--scale", "2", "--output", str(flat), "--suffix", ""]) == 0
    assert [p.name for p in flat.iterdir()] == ["top.png"]


def test_jpeg_quality_changes_the_file(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(photo)
    sizes = {}
    for q in (10, 95):
        out = tmp_path / f"q{q}"
        assert upscale_cli([str(photo), "--bicubic", "--scale", "2", "--output", str(out), "--ext", "jpg",
                            "--jpeg-quality", str(q)]) == 0
        sizes[q] = (out / "photo_x2.jpg").stat().st_size
    assert sizes[10] < sizes[95] / 2


def test_upscale_refuses_colliding_recursive_outputs_and_bad_suffix(tmp_path, capsys):
    src = tmp_path / "in"
    _tree(src)
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(other / "sub" / "top.png")
    out = tmp_path / "out"
    assert _exit_code(upscale_cli, [str(src), str(other), "--recursive", "--bicubic", "--scale", "2",
                                    "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "would both be written to" in err and "sub/top_x2.png" in err, err
    assert _exit_code(upscale_cli, [str(src), "--bicubic", "--scale", "2", "--output", str(out),
                                    "--suffix", "x/y"]) == 2
    assert "--suffix 'x/y'" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------------- eval options
def test_eval_recursive_pairs_hr_and_lr_by_relative_path(tmp_path, sr_data, capsys):
    """Two images with one stem in two sub-folders: each HR file must meet the LR file of its own sub-folder
    (baby and bird differ in size, so a wrong pairing would be refused, and the scores would differ)."""
    bench = tmp_path / "Nested"
    for sub, name in (("a", "baby"), ("b/c", "bird")):
        (bench / "HR" / sub).mkdir(parents=True)
        (bench / "LR_bicubic" / "X2" / sub).mkdir(parents=True)
        shutil.copy(sr_data / "Set5" / "HR" / f"{name}.png", bench / "HR" / sub / "img.png")
        shutil.copy(sr_data / "Set5" / "LR_bicubic" / "X2" / f"{name}x2.png",
                    bench / "LR_bicubic" / "X2" / sub / "imgx2.png")
    plain, nested = tmp_path / "plain.json", tmp_path / "nested.json"
    saved = tmp_path / "saved"
    assert eval_cli(["--bicubic", "--scale", "2", "--sets", "Set5", "--output", str(plain)]) == 0
    assert eval_cli(["--bicubic", "--scale", "2", "--sets", str(bench), "--recursive", "--lr-source", "folder",
                     "--save-images", str(saved), "--suffix", "_sr", "--ext", "tif", "--output", str(nested)]) == 0
    want = json.loads(plain.read_text())["per_image"]["Set5"]
    got = json.loads(nested.read_text())
    assert got["per_image"]["Nested"] == {"a/img": want["baby"], "b/c/img": want["bird"]}
    assert got["protocol"]["recursive"] is True and got["data"]["num_images"] == {"Nested": 2}
    for rel, name in (("a/img_sr.tif", "baby"), ("b/c/img_sr.tif", "bird")):
        tif = read_image(saved / "Nested" / rel)
        hr = read_image(sr_data / "Set5" / "HR" / f"{name}.png")
        assert tif.color.shape[:2] == (hr.color.shape[0] // 2 * 2, hr.color.shape[1] // 2 * 2)
    capsys.readouterr()
    assert _exit_code(eval_cli, ["--bicubic", "--scale", "2", "--sets", str(bench)]) == 2  # not recursive: empty
    assert "no images found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def context_model_checkpoint(tmp_path_factory) -> Path:
    """A depth-2 model (receptive radius 2 + 3·2 = 8) with weights whose output depends strongly on context."""
    torch.manual_seed(0)
    model = create_model("ffnetsr_light", 2, depth=2, dim=24)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("tile_pad") / "m.pth"
    save_checkpoint(path, model=model)
    return path


def test_eval_tile_pad_exact_at_the_radius_and_close_below(tmp_path, sr_data, context_model_checkpoint):
    runs = {}
    for tag, extra in [("whole", []), ("exact", ["--tile", "48"]), ("pad2", ["--tile", "48", "--tile-pad", "2"]),
                       ("pad0", ["--tile", "48", "--tile-pad", "0"])]:
        out = tmp_path / f"{tag}.json"
        assert eval_cli(["--checkpoint", str(context_model_checkpoint), "--sets", "Set5", "--output", str(out),
                         "--save-images", str(tmp_path / tag), "run.device=cpu", *extra]) == 0
        runs[tag] = json.loads(out.read_text())
    per = {tag: r["per_image"]["Set5"] for tag, r in runs.items()}
    names = sorted(per["whole"])
    for name in names:
        assert per["exact"][name]["psnr"] == pytest.approx(per["whole"][name]["psnr"], abs=1e-6), name
        assert per["exact"][name]["ssim"] == pytest.approx(per["whole"][name]["ssim"], abs=1e-7), name
        assert abs(per["pad2"][name]["psnr"] - per["whole"][name]["psnr"]) < 0.02, name  # close ...
    whole = np.asarray(Image.open(tmp_path / "whole" / "Set5" / "butterflyx2.png"), dtype=int)
    exact = np.asarray(Image.open(tmp_path / "exact" / "Set5" / "butterflyx2.png"), dtype=int)
    pad2 = np.asarray(Image.open(tmp_path / "pad2" / "Set5" / "butterflyx2.png"), dtype=int)
    assert np.abs(exact - whole).max() <= 1 and (pad2 != whole).any()  # ... but not exact
    err2 = np.mean([abs(per["pad2"][n]["psnr"] - per["whole"][n]["psnr"]) for n in names])
    err0 = np.mean([abs(per["pad0"][n]["psnr"] - per["whole"][n]["psnr"]) for n in names])
    assert 0 < err2 < err0  # less context, larger error
    p = {tag: r["protocol"] for tag, r in runs.items()}
    assert (p["exact"]["tile_pad"], p["exact"]["tile_exact"]) == (8, True)  # the receptive radius, as used
    assert (p["pad2"]["tile_pad"], p["pad2"]["tile_exact"]) == (2, False)
    assert p["whole"]["tile"] is None and p["whole"]["tile_exact"] is None


# ------------------------------------------------------------------------------------ validation sets
def test_validation_set_entries_and_best_metric_are_checked(tmp_path):
    cfg = load_config(SRConfig, None, ["data.val_sets=[Set5, {path: sr/Set14, name: S14, max_images: 3}]",
                                       "data.val_max_images=1", "data.val_lr_source=generate"])
    sets = validation_sets(cfg.data)
    assert [(s.name, s.path, s.max_images, s.lr_source) for s in sets] == [
        ("Set5", "Set5", 1, "generate"), ("S14", "sr/Set14", 3, "generate")]
    assert best_metric(cfg) == "Set5/psnr"  # the documented default: the first set's PSNR
    assert load_config(SRConfig).data.val_sets == ["Urban100"]
    for overrides, expected in [
        (["data.val_sets=[Set5]", "train.best_metric=Set14/psnr"], "Set5/psnr, Set5/ssim"),
        (["data.val_sets=[]", "train.best_metric=Set5/psnr"], "data.val_sets is empty"),
        (["data.val_sets=[Set5, sr/Set5]"], "data.val_sets[1]"),
    ]:
        with pytest.raises(FFNetError, match=expected.replace("[", r"\[")):
            best_metric(load_config(SRConfig, None, overrides))
    with pytest.raises(ConfigError, match=r"did you mean 'data\.val_sets'"):  # the old key names the new one
        load_config(SRConfig, None, ["data.val_set=Set5"])
    old = tmp_path / "old.yaml"
    old.write_text("data:\n  val_set: Urban100\n")
    with pytest.raises(ConfigError, match=r"old\.yaml: unknown key 'data\.val_set'.*data\.val_sets"):
        load_config(SRConfig, old)
    with pytest.raises(ConfigError, match=r"data\.val_sets\[0\]\.dataroot"):
        load_config(SRConfig, None, ["data.val_sets=[{dataroot: Set5}]"])


def _tiny_two_set_cfg(out: Path, train_dir: Path, extra=()):  # noqa: ANN001, ANN202
    return load_config(SRConfig, None, [
        "model.depth=1", "model.scale=2", f"data.train_dirs=[{train_dir}]", "data.patch_size=16",
        "data.num_workers=0", "data.val_sets=[Set5, {path: Set14, name: S14, max_images: 2}]",
        "data.val_max_images=1", "train.steps=2", "train.batch_size=2", "train.val_every=1", "train.save_every=2",
        "train.log_every=1", "train.progress=false", "optim.name=adam", "optim.warmup_steps=1", "run.device=cpu",
        "run.threads=1", f"run.output_dir={out}", *extra])


def test_training_validates_two_sets_with_psnr_and_ssim(tmp_path, sr_data, t91_five):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "y"
    fit = train(_tiny_two_set_cfg(run, t91_five, ["train.best_metric=S14/ssim"]), quiet=True)
    keys = {"Set5/psnr", "Set5/ssim", "S14/psnr", "S14/ssim"}
    assert [h["step"] for h in fit.history] == [1, 2] and all(keys <= set(h) for h in fit.history)
    for h in fit.history:
        assert 10 < h["Set5/psnr"] < 50 and 10 < h["S14/psnr"] < 50 and 0 < h["Set5/ssim"] <= 1 and 0 < h["S14/ssim"] <= 1
    assert fit.best == max(h["S14/ssim"] for h in fit.history)  # best.pth by the chosen metric
    assert fit.best_step == max(fit.history, key=lambda h: h["S14/ssim"])["step"] and (run / "best.pth").is_file()
    log = (run / "log.txt").read_text()
    assert "validation: PSNR and SSIM on Y, crop 2" in log and "best.pth by S14/ssim" in log
    assert "validation set Set5 x2 (1 images" in log and "validation set S14 x2 (2 images, Set14)" in log
    assert all(k in log for k in keys) and "best S14/ssim" in log
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"val/{k}" for k in keys} <= tags, tags
    assert [e.value for e in events.Scalars("val/S14/psnr")] == pytest.approx([h["S14/psnr"] for h in fit.history])
    # the same run scored on R, G, B: the same model (deterministic run), other numbers, and the log says so
    rgb = train(_tiny_two_set_cfg(tmp_path / "rgb", t91_five, ["train.val_metric_channel=rgb"]), quiet=True)
    assert rgb.best == max(h["Set5/psnr"] for h in rgb.history)  # the default: the first set's PSNR
    for y_rec, rgb_rec in zip(fit.history, rgb.history, strict=True):
        assert y_rec["Set5/psnr"] != rgb_rec["Set5/psnr"] and y_rec["S14/ssim"] != rgb_rec["S14/ssim"]
    assert "PSNR and SSIM on RGB" in (tmp_path / "rgb" / "log.txt").read_text()
