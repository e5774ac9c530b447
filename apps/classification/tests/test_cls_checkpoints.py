"""Loading checkpoints written in the authors' layout (timm trainer ``.pth.tar``), built from the manifests."""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest
import torch

from ffnet_classification import create_model
from ffnet_classification.models.registry import load_model
from metamixer.train.errors import FFNetError

MANIFESTS = Path(__file__).parent / "manifests"


def official_state_dict(name: str, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the official keys/shapes (what a released checkpoint contains)."""
    with gzip.open(MANIFESTS / f"{name}.json.gz", "rt") as fh:
        spec = json.load(fh)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in spec.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.02
    return sd


def write_official(path: Path, name: str, ddp_prefix: bool = True, with_ema: bool = True) -> tuple[dict, dict]:
    sd = official_state_dict(name, 0)
    ema = official_state_dict(name, 1)
    pre = "module." if ddp_prefix else ""
    obj = {
        "epoch": 299,
        "arch": name,
        "state_dict": {pre + k: v for k, v in sd.items()},
        "optimizer": {"state": {}, "param_groups": []},
        "version": 2,
        "args": argparse.Namespace(model=name, lr=1e-3),  # the timm trainer pickles its argparse namespace
        "metric": 81.3,
    }
    if with_ema:
        obj["state_dict_ema"] = {pre + k: v for k, v in ema.items()}
    torch.save(obj, path)
    return sd, ema


def test_official_train_form_checkpoint_loads_strictly(tmp_path: Path) -> None:
    path = tmp_path / "ffnet_1.pth.tar"
    sd, ema = write_official(path, "ffnet_1")
    model = create_model("ffnet_1", pretrained=path)
    got = model.state_dict()
    assert set(got) == set(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    model_ema = create_model("ffnet_1", pretrained=path, prefer_ema=True)
    assert all(torch.equal(model_ema.state_dict()[k], ema[k]) for k in ema)
    assert not model.is_fused


def test_official_deploy_checkpoint_gives_fused_model(tmp_path: Path) -> None:
    path = tmp_path / "ffnet_1_deploy.pth"
    sd = official_state_dict("ffnet_1_deploy", 2)
    torch.save({"state_dict": sd}, path)
    model = create_model("ffnet_1", pretrained=path)
    assert model.is_fused
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    with pytest.raises(FFNetError, match="fused"):
        create_model("ffnet_1", pretrained=path, fused=False)
    loaded = load_model(path, model_name="ffnet_1")
    assert loaded.model.is_fused and loaded.model.num_classes == 1000


def test_checkpoint_of_another_variant_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "ffnet_1.pth.tar"
    write_official(path, "ffnet_1", with_ema=False)
    with pytest.raises(FFNetError) as err:
        create_model("ffnet_2", pretrained=path)
    msg = str(err.value)
    assert str(path) in msg and "missing keys" in msg and "stages.0.0.channel_mixer.main.conv.conv.c.weight" in msg
    assert "shape mismatches" in msg and "patch_embed.2.c.weight (checkpoint (80, 64, 3, 3)" in msg
    assert "looks like ffnet_1" in msg


def test_another_class_count_drops_the_classifier(tmp_path: Path) -> None:
    """timm's fine-tuning rule: the pretrained head is dropped, everything else loads."""
    path = tmp_path / "ffnet_1.pth.tar"
    sd, _ = write_official(path, "ffnet_1", with_ema=False)
    torch.manual_seed(0)
    model = create_model("ffnet_1", num_classes=10, pretrained=path)
    got = model.state_dict()
    assert model.head.weight.shape == (10, 640) and not torch.equal(got["head.bias"][:10], sd["head.bias"][:10])
    assert all(torch.equal(got[k], v) for k, v in sd.items() if not k.startswith("head."))
    same = create_model("ffnet_1", pretrained=path, ignore_head=True)  # same size, head still dropped on request
    assert not torch.equal(same.head.weight, sd["head.weight"])


def test_ema_requested_but_absent(tmp_path: Path) -> None:
    path = tmp_path / "ffnet_1.pth.tar"
    write_official(path, "ffnet_1", with_ema=False)
    with pytest.raises(FFNetError, match="no EMA"):
        load_model(path, model_name="ffnet_1", use_ema=True)


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FFNetError, match="bad.pth"):
        create_model("ffnet_1", pretrained=bad)
    with pytest.raises(FFNetError, match="not found"):
        create_model("ffnet_1", pretrained=tmp_path / "nope.pth")


def test_weights_without_architecture_say_what_they_are(tmp_path: Path) -> None:
    """--model is suggested only where it fixes the load: FFNet weights of a registered variant."""
    official = tmp_path / "ffnet_1.pth.tar"
    write_official(official, "ffnet_1", with_ema=False)
    with pytest.raises(FFNetError, match=r"look like ffnet_1: pass --model ffnet_1$"):
        load_model(official)
    custom = tmp_path / "custom.pth"
    torch.save(create_model("ffnet_1", num_classes=3, widths=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                            stem_dim=8).state_dict(), custom)
    with pytest.raises(FFNetError) as err:
        load_model(custom)
    assert "size no registered variant has (stem width 16, 4 blocks" in str(err.value)
    assert "--model" not in str(err.value)
    other = tmp_path / "other.pth"
    torch.save({"model": torch.nn.Linear(4, 2).state_dict()}, other)
    with pytest.raises(FFNetError) as err:
        load_model(other)
    assert "not FFNet weights: 2 of its 2 weight keys are no FFNet key (first: weight, bias)" in str(err.value)
    assert "--model" not in str(err.value)
    with pytest.raises(FFNetError, match=r"missing keys.*\(these are not FFNet weights at all\)"):
        load_model(other, model_name="ffnet_1")
    with pytest.raises(FFNetError, match=r"\(the weights look like ffnet_1: pass --model ffnet_1\)"):
        load_model(official, model_name="ffnet_2")
