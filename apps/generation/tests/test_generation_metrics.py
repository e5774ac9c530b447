"""FID statistics against scipy/numpy, FID sanity (X vs X, growth with noise), IS closed forms, Inception."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import linalg

from ffnet_generation.evaluate import cli as eval_cli
from ffnet_generation.metrics.digits import DigitsCNN, extract_features
from ffnet_generation.metrics.fid import (
    FeatureStats,
    frechet_distance,
    inception_score,
    psd_sqrt,
    trace_sqrt_product,
)
from ffnet_generation.metrics.inception import FIDInceptionV3, load_fid_inception
from metamixer.train.errors import FFNetError


def _random_psd(d, rank=None, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


def test_sqrtm_and_trace_against_scipy():
    s1, s2 = _random_psd(30, seed=1), _random_psd(30, seed=2)
    root = psd_sqrt(s1)
    assert np.allclose(root, linalg.sqrtm(s1).real, atol=1e-8)
    assert np.allclose(root @ root, s1, atol=1e-10)
    assert trace_sqrt_product(s1, s2) == pytest.approx(np.trace(linalg.sqrtm(s1 @ s2)).real, rel=1e-8)


def test_frechet_distance_matches_scipy_reference_formula():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    s1, s2 = _random_psd(20, seed=4), _random_psd(20, seed=5)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    # 1-D closed form: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == \
        pytest.approx(4.0 + 1.0)
    # rank-deficient covariances (fewer samples than dims) stay finite and ~0 for identical inputs
    low = _random_psd(50, rank=5, seed=6)
    assert frechet_distance(mu1[:1].repeat(50), low, mu1[:1].repeat(50), low) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(FFNetError, match="different dimensions"):
        frechet_distance(mu1, s1, mu1[:10], s1[:10, :10])


def test_streaming_statistics_match_numpy():
    rng = np.random.default_rng(7)
    feats = rng.normal(size=(103, 12)) * rng.uniform(0.5, 2, size=12) + 3.0
    stats = FeatureStats()
    for chunk in np.array_split(feats, 4):
        stats.update(chunk)
    mu, cov = stats.mean_cov()
    assert np.allclose(mu, feats.mean(0)) and np.allclose(cov, np.cov(feats, rowvar=False))


def test_fid_zero_on_same_set_and_grows_with_noise():
    """Real digits through a (fixed, random-init) CNN: FID(X, X) = 0 and FID rises with the noise level."""
    from ffnet_generation.data.images import digits_arrays

    images, _ = digits_arrays(16)
    x = torch.from_numpy(images[:600]).float()[:, None] / 127.5 - 1
    torch.manual_seed(0)
    cnn = DigitsCNN().eval()

    def stats(imgs):
        s = FeatureStats()
        s.update(extract_features(cnn, imgs)[0])
        return s.mean_cov()

    ref = stats(x)
    assert frechet_distance(*ref, *ref) == pytest.approx(0.0, abs=1e-8)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    fids = [frechet_distance(*stats((x + level * noise).clamp(-1, 1)), *ref) for level in (0.05, 0.2, 0.5, 1.0)]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert fids[0] > 0


def test_inception_score_closed_forms():
    assert inception_score(np.zeros((100, 1008)))[0] == pytest.approx(1.0)
    confident = np.full((100, 10), -1e4)
    confident[np.arange(100), np.arange(100) % 10] = 0.0  # one-hot, every class equally often in each split
    mean, std = inception_score(confident, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(FFNetError):
        inception_score(np.zeros((5, 10)), splits=10)


def test_fid_inception_layout_matches_torchvision_published_size(tmp_path):
    model = FIDInceptionV3()
    # torchvision documents inception_v3 at 27,161,264 params incl. the 3,326,696-param aux head (1000 classes);
    # the FID graph has no aux head and 1008 classes
    assert sum(p.numel() for p in model.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "pt_inception.pth")
    loaded = load_fid_inception(tmp_path / "pt_inception.pth")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        pool, logits = loaded(x)
    assert pool.shape == (1, 2048) and logits.shape == (1, 1008)
    sd["Mixed_7c.branch_pool.conv.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(FFNetError, match="not the FID Inception weights"):
        load_fid_inception(tmp_path / "bad.pth")
    with pytest.raises(FFNetError, match="pt_inception-2015-12-05"):
        load_fid_inception(None)


def test_eval_cli_fid_of_set_with_itself(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(FIDInceptionV3, "resize_to", 75)  # the smallest input Inception accepts: 16x cheaper
    torch.manual_seed(0)
    model = FIDInceptionV3().eval()
    torch.save(model.state_dict(), tmp_path / "inc.pth")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", arr_0=rng.integers(0, 255, size=(10, 16, 16, 3), dtype=np.uint8),
             arr_1=np.arange(10))
    eval_cli(["--samples", str(tmp_path / "s.npz"), "--reference", str(tmp_path / "s.npz"), "--inception",
              str(tmp_path / "inc.pth"), "--batch-size", "10", "--output", str(tmp_path / "r.json")])
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["metrics"]["fid"] == pytest.approx(0.0, abs=1e-3)
    assert result["num_samples"] == 10 and result["metrics"]["inception_score"] >= 1.0
    out = capsys.readouterr().out
    assert "fid:" in out and "FID InceptionV3" in out and "warning" in result


def test_eval_cli_bad_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        eval_cli(["--samples", str(tmp_path / "missing.npz"), "--inception", str(tmp_path / "nope.pth")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "inc.pth")
    with pytest.raises(SystemExit):
        eval_cli(["--samples", str(tmp_path / "bad.npz"), "--inception", str(tmp_path / "inc.pth")])
    assert "arr_0" in capsys.readouterr().err


def test_model_info_report(capsys, tmp_path):
    eval_cli(["--model-info", "u_ffnet_tiny", "u_ffnet_tiny_literal", "u_dit_tiny", "--input-size", "16",
              "--output", str(tmp_path / "info.json")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[0] == "model" and len(lines) == 4
    assert {ln.rindex("4x16x16") for ln in lines[1:]} == {lines[0].index("input")}  # columns stay aligned
    rows = json.loads((tmp_path / "info.json").read_text())["metrics"]
    gm = {name: row["gmacs_deploy"] for name, row in rows.items()}
    # at 16x16 the tiny attention is cheap: the literal reading is the cheapest, the FFNet blocks sit between
    assert gm["u_ffnet_tiny_literal"] < gm["u_ffnet_tiny"] < gm["u_dit_tiny"], gm
