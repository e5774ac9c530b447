"""Every recipe parses into the config schema (unknown keys rejected) with its migrated values and builds its
pipelines; bounded keys are refused; the quick start's config is the synthetic recipe; the quick start (slow)
end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ffnet_pointcloud.config import Config
from ffnet_pointcloud.data.transforms import build_transforms
from metamixer.train.config import ConfigError, config_to_dict, load_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_recipe_loads_and_builds(name: str) -> None:
    cfg = load_config(Config, RECIPES / name)  # config_from_dict: an unknown key anywhere would raise
    build_transforms(cfg.data.train_transforms)
    build_transforms(cfg.data.val_transforms)
    for view in cfg.data.tta_views:
        build_transforms(view)
    expected = {
        "scannet.yaml": ("ffnet3d", "scannet", 20, 13, 800, 100),
        "scannet_paper.yaml": ("ffnet3d_paper", "scannet", 20, 13, 800, 100),
        "scannet200.yaml": ("ffnet3d", "scannet200", 200, 13, 800, 100),
        "s3dis.yaml": ("ffnet3d", "s3dis", 13, 10, 3000, 1500),
        "synthetic_cpu.yaml": ("ffnet3d_tiny", "synthetic", 6, 2, 12, None),
        "semantickitti.yaml": ("ffnet3d", "semantickitti", 19, 4, 50, 1),
        "semantickitti_cpu.yaml": ("ffnet3d_tiny", "semantickitti", 19, 2, 16, None),
    }[name]
    got = (cfg.model.name, cfg.data.dataset, cfg.data.num_classes, len(cfg.data.tta_views), cfg.train.epochs,
           cfg.train.val_every)
    assert got == expected
    o, t, r = cfg.optim, cfg.train, cfg.run
    if name.startswith("semantickitti"):
        _check_semantickitti(name, cfg)
        return
    assert (o.name, o.schedule, o.weight_decay, o.div_factor, o.final_div_factor, o.clip_grad, o.cycle_momentum) == (
        "adamw", "onecycle", 0.05, 10.0, 1000.0, None, [0.85, 0.95])
    assert (r.seed, r.max_steps, t.steps, t.ce_weight, t.lovasz_weight, o.block_lr_scale) == (0, None, None, 1.0, 1.0,
                                                                                             0.1)
    assert r.output_dir == "runs/" + {"scannet.yaml": "scannet_ffnet3d", "scannet_paper.yaml": "scannet_ffnet3d_paper",
                                      "scannet200.yaml": "scannet200_ffnet3d", "s3dis.yaml": "s3dis_ffnet3d",
                                      "synthetic_cpu.yaml": "synthetic_cpu"}[name]
    if name != "synthetic_cpu.yaml":
        assert (o.lr, o.pct_start, t.batch_size, t.log_every, r.device, r.threads) == (0.006, 0.05, 12, 50, "auto",
                                                                                      None)
        assert cfg.data.test_grid_size == 0.02
        assert cfg.data.mix_prob == 0.8 and t.sync_bn and r.precision == "fp16"
    else:
        assert (o.lr, o.pct_start, t.batch_size, t.log_every, r.device, r.threads, r.precision) == (
            0.01, 0.1, 2, 5, "cpu", 1, "fp32")
    if name == "s3dis.yaml":
        assert cfg.model.options["act"] == "relu"
        assert "ElasticDistortion" not in [s["type"] for s in cfg.data.train_transforms]


def _check_semantickitti(name: str, cfg: Config) -> None:
    """Pointcept's outdoor conventions: coord + remission input, z rotation / scale 0.9-1.1 / flip / jitter,
    a point clip box, CE + Lovász, ignore -1, 19 classes named as in the official label YAML."""
    from ffnet_pointcloud.data.semantic_kitti import SEMANTIC_KITTI_CLASSES

    d, o, t = cfg.data, cfg.optim, cfg.train
    assert d.feat_keys == ["coord", "strength"] and d.ignore_index == -1 and d.num_classes == 19
    assert tuple(d.class_names) == SEMANTIC_KITTI_CLASSES and d.train_splits == ["train"] and d.val_splits == ["val"]
    types = [s["type"] for s in d.train_transforms]
    assert types[:5] == ["RandomRotate", "PointClip", "RandomScale", "RandomFlip", "RandomJitter"]
    assert d.train_transforms[0]["axis"] == "z" and d.train_transforms[2]["scale"] == [0.9, 1.1]
    assert [s["type"] for s in d.test_pre_transforms] == ["PointClip"] and "CenterShift" not in types
    grids = {s["grid_size"] for s in d.train_transforms + d.val_transforms if s["type"] == "GridSample"}
    assert grids == {d.test_grid_size}
    assert (t.ce_weight, t.lovasz_weight, o.name, o.schedule, o.block_lr_scale) == (1.0, 1.0, "adamw", "onecycle", 0.1)
    if name == "semantickitti.yaml":  # the GPU recipe: Pointcept's values
        assert d.test_grid_size == 0.05 and d.train_transforms[1]["point_cloud_range"] == [-35.2, -35.2, -4, 35.2,
                                                                                           35.2, 2]
        assert (o.lr, o.weight_decay, o.pct_start, o.div_factor, o.final_div_factor) == (0.002, 0.005, 0.04, 10, 100)
        assert (t.batch_size, d.mix_prob, cfg.run.precision, cfg.model.options["drop_path"]) == (10, 0.8, "fp16", 0.3)
    else:
        assert (cfg.run.device, cfg.run.precision, cfg.run.threads, d.mix_prob) == ("cpu", "fp32", 1, 0.0)


def test_quickstart_config_is_the_synthetic_recipe(tmp_path: Path) -> None:
    from ffnet_pointcloud.quickstart import quickstart_config

    ours = config_to_dict(quickstart_config(tmp_path))
    recipe = config_to_dict(load_config(Config, RECIPES / "synthetic_cpu.yaml"))
    for d in (ours, recipe):
        d["run"].pop("output_dir")
        d["data"].pop("root")
    assert ours == recipe


@pytest.mark.parametrize("override, key", [
    ("train.epochs=-1", "train.epochs"),  # used to "succeed" doing nothing
    ("train.epochs=0", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"),
    ("optim.lr=0", "optim.lr"),
    ("optim.pct_start=1.5", "optim.pct_start"),
    ("optim.cycle_momentum=[0.9]", "cycle_momentum"),
    ("data.test_grid_size=0", "data.test_grid_size"),
    ("eval.fragments_per_batch=0", "eval.fragments_per_batch"),
    ("train.eval_every=1", "train.eval_every"),  # the old private names are gone
    ("train.lr=0.1", "train.lr"),
    ("output_dir=x", "output_dir"),
])
def test_bad_or_old_keys_are_refused_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(Config, RECIPES / "synthetic_cpu.yaml", [override])


def test_train_cli_rejects_negative_epochs_in_one_line(capsys: pytest.CaptureFixture) -> None:
    from ffnet_pointcloud.train import cli

    with pytest.raises(SystemExit) as exc:
        cli(["synthetic_cpu", "train.epochs=-1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "train.epochs" in err and "Traceback" not in err


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path: Path) -> None:
    from ffnet_pointcloud.quickstart import main

    assert main(["--output", str(tmp_path), "--data", "synthetic"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metrics"]["mIoU"] > 0.5 and results["metrics"]["allAcc"] > 0.85
    assert results["train_steps"] == 72 and results["protocol"]["tta_views"] == 2
