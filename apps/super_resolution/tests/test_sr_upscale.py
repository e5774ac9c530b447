"""Inference: exact tiling, self-ensemble, and the upscaler CLI on good and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ffnet_sr import create_model
from ffnet_sr.data.io import read_image, write_png
from ffnet_sr.inference import forward_self_ensemble, forward_tiled, receptive_radius
from ffnet_sr.upscale import cli as upscale_cli
from metamixer.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = create_model("ffnetsr_light", 2, depth=2, dim=24).eval()
    # non-trivial weights everywhere (default init leaves outputs near the anchor)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture()
def checkpoint(tmp_path, small_model):
    path = tmp_path / "ckpt" / "last.pth"
    path.parent.mkdir()
    save_checkpoint(path, model=small_model, step=1)
    return path


def test_tiled_equals_whole_image(small_model):
    torch.manual_seed(1)
    x = torch.rand(1, 3, 45, 61)
    assert receptive_radius(small_model) == 2 + 3 * 2
    with torch.no_grad():
        whole = small_model(x)
    for tile in (8, 16, 33):
        tiled = forward_tiled(small_model, x, 2, tile=tile)
        assert tiled.shape == whole.shape
        assert (tiled - whole).abs().max().item() < 1e-4, tile
    # too little context is NOT exact: the check above can fail
    approx = forward_tiled(small_model, x, 2, tile=8, tile_pad=1)
    assert (approx - whole).abs().max().item() > 1e-3


def test_self_ensemble_of_equivariant_op_is_identity():
    x = torch.rand(1, 3, 6, 9)
    y = forward_self_ensemble(lambda t: torch.repeat_interleave(torch.repeat_interleave(t, 2, -1), 2, -2), x)
    assert torch.allclose(y, torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


def _run(argv, capsys=None):
    try:
        return upscale_cli(argv)
    except SystemExit as exc:
        return exc.code


def test_upscale_rgb_grey_rgba_16bit_and_exif(tmp_path, checkpoint, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(src / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8)).save(src / "grey.png")
    rgba = rng.integers(0, 255, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(src / "rgba.png")
    write_png(src / "deep.png", rng.integers(0, 65535, (20, 30, 3), dtype=np.uint16))
    rotated = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    rotated.save(src / "phone.jpg", exif=exif)
    out = tmp_path / "out"
    assert _run([str(src), "--scale", "2", "--output", str(out), "--checkpoint", str(checkpoint)]) == 0
    assert np.asarray(Image.open(out / "rgb_x2.png")).shape == (40, 60, 3)
    assert Image.open(out / "grey_x2.png").mode == "L"
    up = Image.open(out / "rgba_x2.png")
    assert up.mode == "RGBA"
    from ffnet_sr.imresize import imresize

    assert np.array_equal(np.asarray(up)[..., 3], imresize(rgba[..., 3], 2.0))  # alpha: separate bicubic
    deep = read_image(out / "deep_x2.png")
    assert deep.bit_depth == 16 and deep.color.dtype == np.uint16 and deep.color.shape == (40, 60, 3)
    assert int(deep.color.max()) > 255
    assert np.asarray(Image.open(out / "phone_x2.png")).shape == (60, 40, 3)  # upright: EXIF applied


def test_upscale_bad_inputs(tmp_path, checkpoint, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    out = tmp_path / "out"

    def fails(argv, expected):
        code = _run(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.startswith("error:") and expected in err and "Traceback" not in err, err

    fails([str(broken), "--scale", "2", "--output", str(out), "--bicubic"], "broken.png")
    fails([str(tmp_path / "nope.png"), "--scale", "2", "--output", str(out), "--bicubic"], "input not found")
    # writing next to the inputs is fine, but an input that IS another input's output name is never replaced
    victim = tmp_path / "a_x2.png"
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(victim)
    before = victim.read_bytes()
    a = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(a)
    fails([str(a), str(victim), "--scale", "2", "--output", str(tmp_path), "--bicubic"], "refusing to overwrite input")
    assert victim.read_bytes() == before
    # checkpoint of another scale, corrupt checkpoint, empty folder
    fails([str(good), "--scale", "3", "--output", str(out), "--checkpoint", str(checkpoint)], "x2")
    bad_ckpt = tmp_path / "bad.pth"
    bad_ckpt.write_bytes(b"garbage")
    fails([str(good), "--scale", "2", "--output", str(out), "--checkpoint", str(bad_ckpt)], "bad.pth")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails([str(empty), "--scale", "2", "--output", str(out), "--bicubic"], "no images")
    # existing outputs need --overwrite
    assert _run([str(good), "--scale", "2", "--output", str(out), "--bicubic"]) == 0
    fails([str(good), "--scale", "2", "--output", str(out), "--bicubic"], "already exists")
    assert _run([str(good), "--scale", "2", "--output", str(out), "--bicubic", "--overwrite"]) == 0


def test_pad_to_multiple_and_crop_back():
    class NeedsMultipleOf8(torch.nn.Module):
        def forward(self, x):
            assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0, x.shape
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    x = torch.rand(1, 3, 13, 21)
    y = forward_tiled(NeedsMultipleOf8(), x, 2, multiple=8)
    assert y.shape == (1, 3, 26, 42)
    assert torch.equal(y, torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


def test_folder_run_goes_on_past_bad_files_and_exits_1(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((6, 8, 3), 40, np.uint8)).save(src / "a.png")
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(src / "a.jpg")  # same stem: both kept, named apart
    (src / "b.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert _run([str(src), "--scale", "2", "--output", str(out), "--bicubic"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and str(src / "b.png") in err[0], err
    assert err[1] == f"error: 1 of 3 images failed: {src / 'b.png'}"
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg_x2.png", "a_png_x2.png"]
    assert np.asarray(Image.open(out / "a_png_x2.png")).shape == (12, 16, 3)
    # every input bad: no output folder is left behind
    (src / "a.png").unlink()
    (src / "a.jpg").write_bytes(b"")
    assert _run([str(src), "--scale", "2", "--output", str(tmp_path / "none"), "--bicubic"]) == 1
    assert not (tmp_path / "none").exists()


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from metamixer.train.errors import FFNetError

    target = tmp_path / "x.png"
    write_png(target, np.full((4, 4, 3), 7, np.uint8))
    before = target.read_bytes()

    def half_then_disk_full(self, fp, format=None, **params):  # noqa: A002, ANN001
        fp.write(b"\x89PNG partial") if hasattr(fp, "write") else open(fp, "wb").write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_then_disk_full)
    with pytest.raises(FFNetError, match=r"x\.png: cannot write the PNG \(No space left on device\)"):
        write_png(target, np.zeros((4, 4, 3), np.uint8))
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.png"]
    with pytest.raises(FFNetError, match="cannot write"):
        write_png(tmp_path / "new.png", np.zeros((4, 4, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary, no partial new.png


def test_max_pixels_guards_8_and_16_bit_files_alike(tmp_path, capsys):
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "flat.png")
    write_png(tmp_path / "deep.png", np.zeros((4, 5, 3), np.uint16))
    out = tmp_path / "out"
    for name in ("flat.png", "deep.png"):
        assert _run([str(tmp_path / name), "--scale", "2", "--output", str(out), "--bicubic",
                     "--max-pixels", "19"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{name}: 5x4 = 20 pixels is more than the limit of 19" in err, err
    assert not out.exists()
    assert _run([str(tmp_path / "deep.png"), "--scale", "2", "--output", str(out), "--bicubic",
                 "--max-pixels", "0"]) == 0  # 0 = no limit
    assert (out / "deep_x2.png").is_file()


def test_debug_shows_the_traceback(tmp_path):
    from metamixer.train.images import ImageReadError

    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ImageReadError, match="bad.png"):
        upscale_cli([str(bad), "--scale", "2", "--output", str(tmp_path / "out"), "--bicubic", "--debug"])
