"""Every shipped recipe loads through SRConfig (core's run / optim / train sections), with its values migrated."""

from __future__ import annotations

from pathlib import Path

import pytest

from ffnet_sr.config import RECIPES_DIR, SRConfig
from metamixer.train.config import ConfigError, load_config
from metamixer.train.sections import OptimConfig, RunConfig, TrainConfig

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.yaml"))


def test_sections_are_the_shared_ones():
    cfg = SRConfig()
    assert list(vars(cfg)) == ["run", "data", "model", "optim", "train", "eval"]
    assert type(cfg.run) is RunConfig and type(cfg.optim) is OptimConfig and isinstance(cfg.train, TrainConfig)
    assert RECIPES_DIR is not None and sorted(RECIPES_DIR.glob("*.yaml")) == RECIPES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_loads(recipe):
    cfg = load_config(SRConfig, recipe)
    assert cfg.train.steps is not None and cfg.train.epochs is None and cfg.optim.schedule == "cosine"
    assert cfg.optim.betas == [0.9, 0.99] and cfg.train.batch_size == 16


def test_migrated_values():
    light = load_config(SRConfig, RECIPES_DIR / "ffnetsr_light_div2k_x2.yaml")
    assert (light.optim.name, light.optim.lr, light.optim.min_lr) == ("adam", 1e-3, 1e-5)  # was optim.eta_min
    assert light.train.steps == 500_000 and light.train.ema_decay is None  # was total_steps; ema_decay 0.0 -> null
    assert (light.train.val_every, light.train.save_every, light.train.log_every) == (5000, 5000, 100)
    assert light.run.output_dir == "runs/ffnetsr_light_div2k_x2" and light.run.precision == "fp32"
    assert (light.train.l1_weight, light.train.fft_weight) == (1.0, 0.02)  # was the loss section
    paper = load_config(SRConfig, RECIPES_DIR / "ffnetsr_light_paper_x2.yaml")
    assert paper.optim.name == "adamw" and paper.train.steps == 1_000_000 and paper.train.fft_weight == 0.05
    assert paper.train.val_every == 5000 and paper.data.patch_size == 64
    cpu = load_config(SRConfig, RECIPES_DIR / "cpu_t91_x2.yaml")
    assert (cpu.run.device, cpu.run.threads, cpu.run.seed) == ("cpu", 2, 0)  # were train.device / threads / seed
    assert (cpu.optim.warmup_steps, cpu.optim.min_lr, cpu.train.steps) == (20, 2e-5, 100)
    assert cpu.data.train_dirs == ["sr/T91/HR"] and cpu.model.depth == 2 and cpu.data.enlarge_ratio == 1


def test_quickstart_overrides_are_the_cpu_recipe(tmp_path):
    from ffnet_sr.quickstart import quickstart_overrides
    from metamixer.train.config import config_to_dict

    recipe = config_to_dict(load_config(SRConfig, RECIPES_DIR / "cpu_t91_x2.yaml", [f"run.output_dir={tmp_path}"]))
    assert config_to_dict(load_config(SRConfig, None, quickstart_overrides(tmp_path))) == recipe


def test_unknown_and_old_keys_are_rejected(tmp_path):
    bad = tmp_path / "old.yaml"
    for text, key in [("train:\n  total_steps: 10\n", "train.total_steps"), ("loss:\n  fft_weight: 0.1\n", "loss"),
                      ("optim:\n  eta_min: 0.1\n", "optim.eta_min"), ("data:\n  batch_size: 4\n", "data.batch_size")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=key):
            load_config(SRConfig, bad)
    with pytest.raises(ConfigError, match="train.stop_at"):
        load_config(SRConfig, None, ["train.stop_at=3"])
    with pytest.raises(ConfigError, match="data.patch_size"):
        load_config(SRConfig, None, ["data.patch_size=0"])


@pytest.mark.parametrize(("text", "key"), [
    ("data:\n  patch_size: 0\n", "data.patch_size"),
    ("train:\n  steps: 10\n  batch_size: 0\n", "train.batch_size"),
    ("optim:\n  lr: .nan\n", "optim.lr"),
    ("optim:\n  lr: -1\n", "optim.lr"),
    ("model:\n  scale: 0\n", "model.scale"),
], ids=["patch_size_0", "batch_size_0", "lr_nan", "lr_negative", "scale_0"])
def test_out_of_range_values_name_the_dotted_key(tmp_path, text, key):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=rf"bad\.yaml: field '{key}' must be a finite number") as info:
        load_config(SRConfig, recipe)
    assert "\n" not in str(info.value)
