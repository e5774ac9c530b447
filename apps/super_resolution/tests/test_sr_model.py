"""Model parity with the authors' checkpoints (keys, shapes, parameter counts) and architectural facts."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ffnet_sr import create_model
from ffnet_sr.inference import load_model_for_inference
from ffnet_sr.models import FFNetSR, model_from_state_dict
from metamixer.train.errors import FFNetError

PARAMS = {
    ("ffnetsr_light", 2): 1_789_452,
    ("ffnetsr_light", 3): 1_802_427,
    ("ffnetsr_light", 4): 1_820_592,
    ("ffnetsr", 2): 2_381_580,
    ("ffnetsr", 3): 2_394_555,
    ("ffnetsr", 4): 2_412_720,
}


@pytest.mark.parametrize(("name", "scale"), list(PARAMS))
def test_state_dict_matches_official_manifest(name, scale, official_manifests):
    manifest = json.loads((official_manifests / f"{name}_x{scale}.json").read_text())
    sd = create_model(name, scale).state_dict()
    assert list(sd) == list(manifest)  # same keys in the same order
    assert {k: list(v.shape) for k, v in sd.items()} == manifest
    assert sum(v.numel() for v in sd.values()) == PARAMS[(name, scale)]


def test_key_counts_and_depth():
    assert len(create_model("ffnetsr_light", 2).state_dict()) == 436
    assert len(create_model("ffnetsr", 2).state_dict()) == 580
    assert create_model("ffnetsr", 4).depth == 48


def test_anchor_is_nearest_upsampling():
    """With the tail conv zeroed the network outputs nearest-neighbour upsampling of its input."""
    torch.manual_seed(0)
    model = create_model("ffnetsr_light", 3, depth=1).eval()
    torch.nn.init.zeros_(model.conv_bef_up.weight)
    torch.nn.init.zeros_(model.conv_bef_up.bias)
    x = torch.rand(2, 3, 7, 5)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 21, 15)
    assert torch.equal(y, F.interpolate(x, scale_factor=3, mode="nearest"))


def test_fuse_is_an_eval_copy_without_changes():
    torch.manual_seed(0)
    model = create_model("ffnetsr_light", 2, depth=2)
    fused = model.fuse()
    assert fused is not model and not fused.training
    assert list(fused.state_dict()) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(v, fused.state_dict()[k]) and v.data_ptr() != fused.state_dict()[k].data_ptr()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), fused(x))


def test_pretrained_basicsr_params_file_loads_strictly(tmp_path):
    torch.manual_seed(0)
    src = create_model("ffnetsr_light", 4, depth=3)
    path = tmp_path / "FFNetSR_light_x4.pth"
    torch.save({"params": src.state_dict()}, path)
    loaded = create_model("ffnetsr_light", 4, pretrained=path, depth=3)
    for k, v in src.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    # the inference loader rebuilds the architecture from the shapes alone
    inferred = load_model_for_inference(path, torch.device("cpu"))
    assert (inferred.scale, inferred.depth, inferred.dim) == (4, 3, 96)
    # a wrong scale is a clear error naming the file, not a silent partial load
    with pytest.raises(FFNetError, match="FFNetSR_light_x4.pth"):
        create_model("ffnetsr_light", 2, pretrained=path, depth=3)


def test_model_from_state_dict_rejects_foreign_weights():
    with pytest.raises(FFNetError, match="not FFNetSR"):
        model_from_state_dict({"fc.weight": torch.zeros(3, 3)})


def test_unknown_model_name():
    with pytest.raises(FFNetError, match="ffnetsr_light"):
        create_model("ffnetsr_huge", 2)


@pytest.mark.parametrize(("name", "scale", "lr_hw", "gmacs"), [
    ("ffnetsr_light", 2, (360, 640), 406.7), ("ffnetsr_light", 4, (180, 320), 103.5),
    ("ffnetsr", 2, (360, 640), 541.3), ("ffnetsr", 4, (180, 320), 137.1),
])
def test_macs_for_720p_output(name, scale, lr_hw, gmacs):
    from ffnet_sr.bench import model_macs

    assert model_macs(name, scale, lr_hw) / 1e9 == pytest.approx(gmacs, abs=0.05)


def test_foreign_weights_message_names_the_file():
    with pytest.raises(FFNetError, match=r"^other\.pth: weights are not FFNetSR weights .*found fc\.weight"):
        model_from_state_dict({"fc.weight": torch.zeros(3, 3)}, "other.pth")


def test_deploy_path_equals_the_plain_model_whole_and_tiled() -> None:
    """prepare_for_inference (core's fused channels-last blocks) against the authors' formulation (the plain
    module sequence on NCHW), and exact tiling with the deploy model against its whole-image output."""
    from ffnet_sr.inference import forward_tiled, prepare_for_inference, receptive_radius
    from metamixer.nn.inference import fast_block_count

    torch.manual_seed(0)
    model = FFNetSR(scale=3, dim=32, depth=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    deploy = prepare_for_inference(model)
    assert fast_block_count(deploy) == 3
    assert receptive_radius(deploy) == receptive_radius(model) == 2 + 3 * 3
    x = torch.rand(1, 3, 29, 37)
    with torch.no_grad():
        ref, got = model(x), deploy(x)
        tiled = forward_tiled(deploy, x, 3, tile=8)
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-4
    assert float((tiled - got).abs().max()) < 1e-5
