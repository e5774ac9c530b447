"""MATLAB-exact imresize and the paper protocol, proven on the real benchmark images."""

from __future__ import annotations

import numpy as np
import pytest

from ffnet_sr.data.dataset import load_benchmark, mod_crop
from ffnet_sr.data.io import list_images, read_rgb_or_grey
from ffnet_sr.imresize import imresize, resize_weights
from ffnet_sr.inference import bicubic_upscaler
from ffnet_sr.metrics import calculate_psnr, calculate_ssim, rgb_to_y
from ffnet_sr.scoring import evaluate_pairs

# Published bicubic rows (Y channel, crop = scale): (PSNR, SSIM)
PUBLISHED = {
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688), ("Set14", 3): (27.55, 0.7742), ("Set14", 4): (26.00, 0.7027),
    ("B100", 2): (29.56, 0.8431), ("B100", 3): (27.21, 0.7385), ("B100", 4): (25.96, 0.6675),
}


@pytest.mark.parametrize("set_name", ["Set5", "Set14", "B100"])
def test_imresize_reproduces_provided_lr_files(sr_data, set_name):
    """imresize(HR mod-crop, 1/s) equals every provided MATLAB LR file exactly (max |diff| = 0)."""
    for scale in (2, 3, 4):
        for hr_path in list_images(sr_data / set_name / "HR"):
            hr = mod_crop(read_rgb_or_grey(hr_path), scale)
            lr = read_rgb_or_grey(sr_data / set_name / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
            mine = imresize(hr, 1.0 / scale)
            assert mine.dtype == np.uint8 and mine.shape == lr.shape
            diff = int(np.abs(mine.astype(np.int16) - lr.astype(np.int16)).max())
            assert diff == 0, f"{set_name}/{hr_path.name} x{scale}: max diff {diff}"


def test_protocol_choices_matter(sr_data):
    """Mirrored borders or rounding only at the end do NOT reproduce the LR files (so the test above can fail)."""
    hr = mod_crop(read_rgb_or_grey(sr_data / "Set5" / "HR" / "baby.png"), 4)
    lr = read_rgb_or_grey(sr_data / "Set5" / "LR_bicubic" / "X4" / "babyx4.png").astype(np.int16)
    mirrored = imresize(hr, 0.25, border="symmetric").astype(np.int16)
    assert np.abs(mirrored - lr).max() > 0
    round_once = np.floor(np.clip(imresize(hr.astype(np.float64), 0.25), 0, 255) + 0.5).astype(np.int16)
    assert np.abs(round_once - lr).max() > 0


@pytest.mark.parametrize("set_name", ["Set5", "Set14", "B100"])
def test_bicubic_baseline_matches_published_table(sr_data, set_name):
    for scale in (2, 3, 4):
        pairs = load_benchmark(sr_data / set_name, scale, lr_source="folder")
        res = evaluate_pairs(bicubic_upscaler(scale), pairs, scale)
        psnr, ssim = PUBLISHED[(set_name, scale)]
        assert abs(res["psnr"] - psnr) <= 0.02, (set_name, scale, res["psnr"])
        assert abs(res["ssim"] - ssim) <= 0.001, (set_name, scale, res["ssim"])


def test_greyscale_is_used_directly_as_y(sr_data):
    """Set14 'bridge' is grey: scoring grey values directly differs from replicating them to RGB first."""
    pair = next(p for p in load_benchmark(sr_data / "Set14", 2) if p.name == "bridge")
    assert pair.hr.ndim == 2 and pair.lr.ndim == 2
    sr = imresize(pair.lr, 2.0)
    direct = calculate_psnr(sr, pair.hr, 2)
    as_rgb = calculate_psnr(np.repeat(sr[..., None], 3, 2), np.repeat(pair.hr[..., None], 3, 2), 2)
    assert direct == pytest.approx(10 * np.log10(255**2 / np.mean((sr[2:-2, 2:-2] - pair.hr[2:-2, 2:-2].astype(float)) ** 2)))
    assert as_rgb > direct + 1.0  # 16-235 range compresses errors: +1.32 dB here, +0.094 dB on the Set14 x2 mean


def test_psnr_and_ssim_known_values():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(40, 30, 3), dtype=np.uint8)
    assert calculate_psnr(img, img, 4) == float("inf")
    assert calculate_ssim(img, img, 4) == pytest.approx(1.0)
    grey = rng.integers(0, 254, size=(40, 30), dtype=np.uint8)
    assert calculate_psnr(grey + 1, grey, 0) == pytest.approx(10 * np.log10(255.0**2))  # MSE 1 -> 48.13 dB
    # Y of pure white / black as MATLAB rgb2ycbcr (not rounded)
    assert rgb_to_y(np.array([[[255, 255, 255]]]))[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(np.array([[[0, 0, 0]]]))[0, 0] == pytest.approx(16.0)
    with pytest.raises(ValueError, match="shapes differ"):
        calculate_psnr(img, img[:-1], 2)


def test_imresize_basic_properties():
    w = resize_weights(8, 4, 0.5)
    assert np.allclose(w.sum(axis=1), 1.0)
    const = np.full((9, 12, 3), 77, dtype=np.uint8)
    assert (imresize(const, 1 / 3) == 77).all() and imresize(const, 1 / 3).shape == (3, 4, 3)
    assert imresize(const, 2.0).shape == (18, 24, 3)
    assert imresize(np.zeros((5, 7)), output_shape=(10, 3)).shape == (10, 3)
