"""Every recipe parses into the config schema and builds its pipelines; the quick start (slow) end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ffnet_pointcloud.config import Config
from ffnet_pointcloud.data.transforms import build_transforms
from metamixer.train.config import load_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_recipe_loads_and_builds(name: str) -> None:
    cfg = load_config(Config, RECIPES / name)
    build_transforms(cfg.data.train_transforms)
    build_transforms(cfg.data.val_transforms)
    for view in cfg.data.tta_views:
        build_transforms(view)
    expected = {
        "scannet.yaml": ("ffnet3d", "scannet", 20, 13),
        "scannet_paper.yaml": ("ffnet3d_paper", "scannet", 20, 13),
        "scannet200.yaml": ("ffnet3d", "scannet200", 200, 13),
        "s3dis.yaml": ("ffnet3d", "s3dis", 13, 10),
        "synthetic_cpu.yaml": ("ffnet3d_tiny", "synthetic", 6, 2),
    }[name]
    assert (cfg.model.name, cfg.data.dataset, cfg.data.num_classes, len(cfg.data.tta_views)) == expected
    if name != "synthetic_cpu.yaml":
        t = cfg.train
        assert (t.lr, t.block_lr_scale, t.weight_decay, t.pct_start, t.div_factor, t.final_div_factor) == (
            0.006,
            0.1,
            0.05,
            0.05,
            10.0,
            1000.0,
        )
        assert cfg.data.test_grid_size == 0.02
        assert cfg.data.mix_prob == 0.8 and t.sync_bn and t.precision == "fp16"
    if name == "s3dis.yaml":
        assert cfg.model.options["act"] == "relu" and t.epochs == 3000
        assert "ElasticDistortion" not in [s["type"] for s in cfg.data.train_transforms]


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path: Path) -> None:
    from ffnet_pointcloud.quickstart import main

    assert main(["--output", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "quickstart_summary.json").read_text())
    assert summary["mIoU"] > 0.5 and summary["allAcc"] > 0.85
