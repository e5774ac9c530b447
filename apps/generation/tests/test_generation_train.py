"""Training on real digits (loss falls, samples improve), exact resume, sampling outputs, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ffnet_generation.config import (
    DataConfig,
    EvalConfig,
    GenerationConfig,
    GenOptimConfig,
    GenTrainConfig,
    ModelConfig,
)
from ffnet_generation.data.images import ImageFolderDataset
from ffnet_generation.data.latents import LatentDataset, load_vae, write_latent_shard
from ffnet_generation.models.ffn import RepConvFFN
from ffnet_generation.quickstart import run_quickstart
from ffnet_generation.sample import cli as sample_cli
from ffnet_generation.train import cli as train_cli
from ffnet_generation.train import train
from metamixer.train.checkpoint import load_checkpoint
from metamixer.train.errors import FFNetError
from metamixer.train.sections import RunConfig


def _tiny_cfg(out, steps, max_steps=None, **train_kw) -> GenerationConfig:
    return GenerationConfig(
        run=RunConfig(output_dir=str(out), seed=3, device="cpu", max_steps=max_steps),
        model=ModelConfig(name="u_ffnet_tiny", input_size=16, in_channels=1, num_classes=10, ffnified_kernel=3,
                          rep_ffn=True),
        data=DataConfig(mode="digits", num_workers=0),
        optim=GenOptimConfig(lr=1e-3),
        train=GenTrainConfig(**{"batch_size": 8, "steps": steps, "ema_decay": 0.9, "log_every": 1, "save_every": 2,
                                "val_every": 2, "progress": False, **train_kw}),
        eval=EvalConfig(grid_count=4, grid_steps="ddim2"))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """A shortened quick start: real digits, real training loop, early vs final checkpoint."""
    out = tmp_path_factory.mktemp("qs")
    summary = run_quickstart(out, steps=80, early_step=10, num_samples=100, sample_steps="ddim10", threads=1)
    return out, summary


def test_short_real_training_loss_falls_and_samples_improve(quickstart_run):
    out, s = quickstart_run
    losses = [h["loss"] for h in s["loss_history"]]
    assert np.mean(losses[-2:]) < 0.6 * losses[0], losses
    assert s["final"]["train_step"] == 80 and s["early"]["train_step"] == 10
    # the labelled metric improves from the early to the final checkpoint
    assert s["final"]["digits_fid"] < s["early"]["digits_fid"], (s["early"], s["final"])
    assert s["metrics"]["classifier_val_accuracy"] > 0.85
    # class accuracy overall and per class, unguided and guided (the final checkpoint), beside digits-FID
    for tag, scale in (("final", 1.0), ("final_cfg", 2.0)):
        assert s[tag]["cfg_scale"] == scale and len(s[tag]["class_accuracy_per_class"]) == 10
        assert 0.0 <= s[tag]["class_accuracy"] <= 1.0 and s[tag]["digits_fid"] > 0
    assert s["metrics"]["class_accuracy_final_cfg"] == s["final_cfg"]["class_accuracy"]
    # 100 samples = 10 per class: the mean of the per-class accuracies is the overall accuracy
    assert np.mean(s["final"]["class_accuracy_per_class"]) == pytest.approx(s["final"]["class_accuracy"])
    for name in ("final_grid.png", "final_grid_no_guidance.png"):  # one row per class, 16 px digits upscaled 4x
        grid = np.asarray(Image.open(out / name))
        assert grid.shape[:2] == (10 * (64 + 8) + 8, 10 * (64 + 8) + 8), grid.shape
    record = json.loads((out / "results.json").read_text())
    assert record["metrics"]["digits_fid_final"] == s["final"]["digits_fid"] and "torch" in record["versions"]
    assert (out / "train" / "step_0000010.pth").is_file()
    assert (out / "train" / "config.yaml").is_file() and (out / "train" / "log.txt").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "train").iterdir())


def test_sample_npz_is_adm_layout_and_seeded(quickstart_run, tmp_path):
    out, _ = quickstart_run
    ckpt = out / "train" / "last.pth"
    args = ["--checkpoint", str(ckpt), "--num-samples", "6", "--labels", "1,2,3", "--steps", "ddim5", "--seed", "7",
            "--cfg-scale", "2.0"]
    sample_cli(args + ["--output", str(tmp_path / "a"), "--batch-size", "4"])
    sample_cli(args + ["--output", str(tmp_path / "b"), "--batch-size", "4"])
    a, b = np.load(tmp_path / "a" / "samples.npz"), np.load(tmp_path / "b" / "samples.npz")
    assert a["arr_0"].shape == (6, 16, 16, 1) and a["arr_0"].dtype == np.uint8
    assert a["arr_1"].tolist() == [1, 2, 3, 1, 2, 3]
    assert np.array_equal(a["arr_0"], b["arr_0"])  # same seed -> same images
    assert Image.open(tmp_path / "a" / "grid.png").size[0] > 16
    info = json.loads((tmp_path / "a" / "sample_info.json").read_text())
    assert info["cfg_scale"] == 2.0 and info["method"] == "ddim"
    # written atomically: the finished files only (no .shards folder, no .tmp left over)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["grid.png", "sample_info.json", "samples.npz"]


@pytest.mark.parametrize("extra, message", [
    (["--labels", "3,12"], "--labels: class labels must be in"),
    (["--cfg-scale", "-1"], "--cfg-scale must be a number in [0, 50] (1 = no guidance"),
    (["--cfg-scale", "80"], "--cfg-scale must be a number in [0, 50]"),
    (["--steps", "5000"], "--steps=5000: cannot take 5000 steps"),
    (["--steps", "ddim0"], "--steps must be N (DDPM respaced to N steps, N >= 1)"),
    (["--labels", "a,b"], "--labels must be 'random', 'all' or a comma list"),
    (["--guided-channels", "2"], "--guided-channels must be in [1, 1] for this checkpoint"),
    (["--output", __file__], "is an existing file, expected a folder"),
])
def test_sample_bad_inputs(quickstart_run, tmp_path, capsys, extra, message):
    out, _ = quickstart_run
    with pytest.raises(SystemExit) as exc:
        sample_cli(["--checkpoint", str(out / "train" / "last.pth"), "--output", str(tmp_path / "x"), "--num-samples", "2",
                    "--steps", "ddim2"] + extra)
    assert exc.value.code == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "x").exists()  # checked before the output folder is made


def test_resume_equals_uninterrupted(tmp_path):
    full = train(_tiny_cfg(tmp_path / "full", 4, keep_every=2), quiet=True)
    part = train(_tiny_cfg(tmp_path / "part", 4, max_steps=2, keep_every=2), quiet=True)
    assert part.stopped == "max_steps" and part.step == 2
    resumed = train(_tiny_cfg(tmp_path / "part", 4, keep_every=2), resume=str(tmp_path / "part" / "last.pth"),
                    quiet=True)
    a, b = load_checkpoint(tmp_path / "full" / "last.pth"), load_checkpoint(tmp_path / "part" / "last.pth")
    assert a["step"] == b["step"] == 4
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert full.history == resumed.history and len(full.history) == 2
    assert full.best_checkpoint is None and not (tmp_path / "full" / "best.pth").exists()  # no metric: monitor None
    # EMA sample grids (PNG + tensorboard) at every validation (train.val_every steps)
    assert sorted(p.name for p in (tmp_path / "full" / "samples").iterdir()) == ["step_0000002.png",
                                                                               "step_0000004.png"]
    # kept snapshots (train.keep_every, the trainer's): full copies of last.pth at that step, resumable
    snap = load_checkpoint(tmp_path / "part" / "step_0000002.pth")
    assert snap["step"] == 2 and snap["optimizer"] is not None and snap["ema"] is not None


def test_checkpoint_of_the_former_u_ffnet_literal_layout_still_loads(tmp_path):
    """u_ffnet_* named the literal reading (U-DiT's FFN everywhere) before the FFNet-block default; a checkpoint
    written then (name u_ffnet_tiny, no model.channel_mixers in its config) loads as what its weights are."""
    from dataclasses import replace

    from ffnet_generation.builders import load_trained_model

    cfg = _tiny_cfg(tmp_path / "old", 1)
    train(replace(cfg, model=replace(cfg.model, channel_mixers=["udit"] * 5)), quiet=True)
    ckpt = load_checkpoint(tmp_path / "old" / "last.pth")
    del ckpt["config"]["model"]["channel_mixers"]  # as the former ffnet-gen-train wrote it
    torch.save(ckpt, tmp_path / "former.pth")
    model, loaded, _ = load_trained_model(tmp_path / "former.pth", fuse=False)
    assert loaded.model.name == "u_ffnet_tiny" and loaded.model.channel_mixers == ["udit"] * 5
    assert all(isinstance(b.channel_mixer, RepConvFFN) for b in model.encoder1)
    # a checkpoint of another architecture still gets core's message naming the file
    ckpt["config"]["model"]["name"] = "u_ffnet_tiny"
    ckpt["model"] = ckpt["ema"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("decoder1")}
    torch.save(ckpt, tmp_path / "broken.pth")
    with pytest.raises(FFNetError, match="broken.pth: weights do not match"):
        load_trained_model(tmp_path / "broken.pth")


def test_ema_warmup_reaches_the_trainer(tmp_path):
    """train.ema_warmup reaches the Trainer's EMA: with decays min(0.9, (1+n)/(10+n))
    = 0.1, 0.18 the EMA after two steps sits much closer to the live weights than with a flat 0.9."""
    gaps = {}
    for warm in (False, True):
        train(_tiny_cfg(tmp_path / str(warm), 2, ema_warmup=warm, val_every=None), quiet=True)
        ckpt = load_checkpoint(tmp_path / str(warm) / "last.pth")
        assert ckpt["ema_updates"] == 2
        gaps[warm] = sum(float((ckpt["ema"][k].float() - v.float()).abs().sum()) for k, v in ckpt["model"].items())
    assert gaps[True] < 0.5 * gaps[False], gaps


def test_train_cli_bad_config_and_unreadable_image(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train_cli(["model.nmae=u_dit_b"])
    assert exc.value.code == 2 and "nmae" in _one_line_error(capsys)
    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "ok.png")
    (folder / "broken.png").write_bytes(b"not a png at all")
    dataset = ImageFolderDataset(tmp_path / "imgs", 16, 3)
    with pytest.raises(FFNetError, match="broken.png"):
        [dataset[i] for i in range(len(dataset))]
    with pytest.raises(SystemExit) as exc:
        train_cli([f"run.output_dir={tmp_path / 'run'}", "run.device=cpu", "data.mode=pixel",
                   f"data.path={tmp_path / 'imgs'}", "data.num_workers=0", "model.name=u_ffnet_tiny",
                   "model.input_size=16", "model.in_channels=3", "model.num_classes=2", "train.batch_size=2",
                   "train.steps=3", "train.progress=false"])
    assert exc.value.code == 2
    # the pre-flight decode of every image: one line per bad file, then the summary; no run folder yet
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "broken.png" in err[0] and err[0].startswith("error:"), err
    assert "1 of 2 images" in err[1] and "training did not start" in err[1], err
    assert not (tmp_path / "run").exists()


def test_class_count_mismatch_with_data(tmp_path):
    for c in ("a", "b", "c"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs" / c / "x.png")
    with pytest.raises(FFNetError, match="3 class folders but model.num_classes=2"):
        ImageFolderDataset(tmp_path / "imgs", 8, 3, num_classes=2)
    lat = tmp_path / "lat"
    write_latent_shard(lat, 0, np.zeros((2, 4, 4, 4), np.float32), np.array([0, 11]))
    (lat / "meta.json").write_text(json.dumps({"scale_factor": 0.18215, "classes": []}))
    with pytest.raises(FFNetError, match="labels up to 11"):
        LatentDataset(lat, num_classes=10)
    assert len(LatentDataset(lat, num_classes=12)) == 2


def test_missing_vae_path_is_a_clear_error(tmp_path):
    with pytest.raises(FFNetError, match="VAE folder not found"):
        load_vae(tmp_path / "no_such_vae")
    with pytest.raises(FFNetError, match="needs a VAE"):
        load_vae("")


def test_latent_mode_with_local_vae_if_available():
    """Optional: runs only when diffusers and a local VAE folder (env FFNET_VAE) are present."""
    import os

    pytest.importorskip("diffusers", reason="latent mode extra not installed")
    path = os.environ.get("FFNET_VAE")
    if not path:
        pytest.skip("set FFNET_VAE to a local sd-vae-ft-ema folder to test latent encoding")
    vae = load_vae(path)
    z = vae.encode(torch.zeros(1, 3, 64, 64))
    assert z.shape == (1, 4, 8, 8)
    assert vae.decode(z).shape == (1, 3, 64, 64)


def test_extract_latents_then_latent_mode_training_and_missing_vae(tmp_path, capsys):
    """Latent pipeline without diffusers: a stand-in encoder (4x4 average pool + a 4th channel) writes shards,
    training reads them; sampling a latent checkpoint without a VAE path is a clear error."""
    from ffnet_generation.extract_latents import extract_latents

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")

    def encoder(x):
        z = torch.nn.functional.avg_pool2d(x, 8)
        return torch.cat([z, z.mean(1, keepdim=True)], dim=1)

    meta = extract_latents(str(tmp_path / "imgs"), "", str(tmp_path / "lat"), image_size=64, batch_size=4,
                           flip=True, num_workers=0, device="cpu", encoder=encoder)
    assert meta["classes"] == ["a", "b"] and meta["latent_shape"] == [4, 8, 8]
    ds = LatentDataset(tmp_path / "lat", num_classes=2)
    assert len(ds) == 16 and ds[0][0].shape == (4, 8, 8)
    cfg = GenerationConfig(run=RunConfig(output_dir=str(tmp_path / "run"), device="cpu"),
                           model=ModelConfig(name="u_dit_tiny", input_size=8, in_channels=4, num_classes=2),
                           data=DataConfig(mode="latent", path=str(tmp_path / "lat"), num_workers=1),
                           train=GenTrainConfig(batch_size=4, steps=2, log_every=1, val_every=1, progress=False))
    result = train(cfg, quiet=True)
    assert result.step == 2 and len(result.history) == 2  # no VAE: validations without sample grids
    assert not (tmp_path / "run" / "samples").exists()
    capsys.readouterr()  # drop the training progress output
    with pytest.raises(SystemExit):
        sample_cli(["--checkpoint", str(tmp_path / "run" / "last.pth"), "--output", str(tmp_path / "s"),
                    "--steps", "ddim2", "--num-samples", "1"])
    assert "needs a VAE" in _one_line_error(capsys)
    with pytest.raises(SystemExit):
        sample_cli(["--checkpoint", str(tmp_path / "run" / "last.pth"), "--output", str(tmp_path / "s"),
                    "--steps", "ddim2", "--num-samples", "1", "--vae", str(tmp_path / "nowhere")])
    assert "VAE folder not found" in _one_line_error(capsys)
