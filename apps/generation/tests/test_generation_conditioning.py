"""Class conditioning reaches every level, label dropout gives the null embedding, guidance mixes cond/uncond,
and the class-accuracy metric reads real digits (near 100 %) and shuffled labels (near chance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffnet_generation import create_model
from ffnet_generation.data.images import class_rows_grid, digits_arrays
from ffnet_generation.diffusion import GuidedModel, create_diffusion
from ffnet_generation.metrics.digits import DigitsReference
from ffnet_generation.sampling import generate

STAGES = ("encoder1", "encoder2", "bottleneck", "decoder2", "decoder1", "final_layer")


def _trained_like(name: str = "u_ffnet_tiny") -> torch.nn.Module:
    """A tiny model with every weight non-zero (adaLN and the output conv start at zero, which would hide the
    conditioning) and BN statistics set, in eval mode."""
    model = create_model(name, input_size=16, in_channels=1, num_classes=10)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 1, 16, 16, generator=g), torch.tensor([300, 700])


def _conditions_seen(model, x, t, y) -> dict[str, torch.Tensor]:
    """The condition vector each stage (and the final layer) receives."""
    seen, hooks = {}, []
    for name in STAGES:
        hooks.append(getattr(model, name).register_forward_pre_hook(
            lambda mod, args, name=name: seen.__setitem__(name, args[1].clone())))
    try:
        with torch.no_grad():
            model(x, t, y)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("name", ["u_ffnet_tiny", "u_ffnet_tiny_literal", "u_dit_tiny"])
def test_label_changes_the_output_through_every_level(name):
    """Swap the condition of ONE stage for the one of another label (all other stages keep theirs): the
    denoiser's output must change, for each of the five levels and the final layer. A level whose label path
    were cut (an embedder not applied, a condition not passed on) would leave the output unchanged."""
    model = _trained_like(name)
    x, t = _inputs()
    y_a, y_b = torch.tensor([3, 5]), torch.tensor([7, 1])
    cond_b = _conditions_seen(model, x, t, y_b)
    with torch.no_grad():
        ref = model(x, t, y_a)
    for stage in STAGES:
        hook = getattr(model, stage).register_forward_pre_hook(
            lambda mod, args, stage=stage: (args[0], cond_b[stage]))
        try:
            with torch.no_grad():
                out = model(x, t, y_a)
        finally:
            hook.remove()
        change = ((out - ref).norm() / ref.norm()).item()
        assert change > 1e-3, f"{name}: the label at {stage} does not reach the output ({change:.2e})"


def test_every_level_has_its_own_label_embedding_and_the_null_row_when_dropped():
    model = _trained_like()
    x, t = _inputs()
    y = torch.tensor([3, 5])
    null = torch.full_like(y, 10)
    levels = {"encoder1": 0, "encoder2": 1, "bottleneck": 2, "decoder2": 1, "decoder1": 1, "final_layer": 1}
    cond = _conditions_seen(model, x, t, y)
    dropped = _conditions_seen(model, x, t, null)
    with torch.no_grad():
        for stage, level in levels.items():
            t_emb = model.t_embedders[level](t)
            table = model.y_embedders[level].embedding_table.weight
            assert torch.allclose(cond[stage], t_emb + table[y]), stage
            assert torch.allclose(dropped[stage], t_emb + table[10]), stage  # the null label's own row
        # a drop mask (training's label dropout) gives exactly the null label's embedding, at every level
        masked = [c.clone() for c in model.conditions(t, y, torch.tensor([True, False]))]
        for level, c in enumerate(masked):
            t_emb = model.t_embedders[level](t)
            table = model.y_embedders[level].embedding_table.weight
            assert torch.allclose(c[0], t_emb[0] + table[10]) and torch.allclose(c[1], t_emb[1] + table[5])
    # in training mode with class_dropout=1 every label is dropped: the output is the null label's
    model.class_dropout = 1.0
    model.train()
    for m in model.modules():  # BN on running statistics, so that train mode only changes the label dropout
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        assert torch.allclose(model(x, t, y), model.eval()(x, t, null), atol=1e-6)


def test_label_tables_start_large_enough_to_matter_in_short_runs():
    """tiny (CPU) models: std 1 (the label term of adaLN's input is O(1) from step one); the published sizes keep
    DiT / U-DiT's 0.02 (their 400K-step recipes), and the config can set either."""
    tiny = create_model("u_ffnet_tiny", input_size=16, num_classes=10)
    for emb in tiny.y_embedders:
        assert 0.8 < emb.embedding_table.weight.std().item() < 1.2
    with torch.device("meta"):
        assert create_model("u_ffnet_b").label_init_std == 0.02
    small = create_model("u_ffnet_tiny", input_size=16, num_classes=10, label_init_std=0.02)
    assert small.y_embedders[0].embedding_table.weight.std().item() < 0.03


def test_guided_model_mixes_the_real_networks_conditional_and_null_passes():
    model = _trained_like()
    x, t = _inputs()
    y = torch.tensor([3, 5])
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 10))
        guided = GuidedModel(model, 3.0, null_label=10, data_channels=1)(x, t, y)
    # one batch of 4 vs two of 2: equal up to float32 rounding of the convolutions (outputs here are ~10-30)
    assert torch.allclose(guided[:, :1], uncond[:, :1] + 3.0 * (cond[:, :1] - uncond[:, :1]), rtol=1e-4, atol=1e-4)
    assert torch.allclose(guided[:, 1:], cond[:, 1:], rtol=1e-4, atol=1e-4)  # the variance: conditional pass


def test_guided_sampling_path_uses_the_labels_through_guidance():
    """generate(): scale 0 is the unconditional model alone (samples do not depend on the labels), scale 1 is
    the plain conditional sampler, scale 3 differs from both and follows the labels."""
    model = _trained_like()
    diffusion = create_diffusion("ddim4")

    def draw(labels, scale):
        return generate(model, diffusion, torch.tensor(labels), cfg_scale=scale, method="ddim",
                        generator=torch.Generator().manual_seed(0), clip_denoised=True)

    assert torch.allclose(draw([3, 5], 0.0), draw([7, 1], 0.0), atol=1e-6)
    plain = draw([3, 5], 1.0)
    guided = draw([3, 5], 3.0)
    assert not torch.allclose(plain, guided, atol=1e-3)
    assert not torch.allclose(guided, draw([7, 1], 3.0), atol=1e-3)


@pytest.fixture(scope="module")
def yardstick():
    return DigitsReference(16, seed=0)


def test_class_accuracy_metric_on_real_and_shuffled_digits(yardstick):
    images, labels = digits_arrays(16)
    real = yardstick.score(images[:, :, :, None], labels)
    assert real["class_accuracy"] > 0.95, real["class_accuracy"]
    assert all(a > 0.85 for a in real["class_accuracy_per_class"]), real["class_accuracy_per_class"]
    shuffled = np.random.default_rng(0).permutation(labels)
    chance = yardstick.score(images[:, :, :, None], shuffled)
    assert 0.05 < chance["class_accuracy"] < 0.16, chance["class_accuracy"]
    # the digits-FID of the real digits against themselves is ~0, whatever the labels
    assert real["digits_fid"] < 1e-3 and chance["digits_fid"] == pytest.approx(real["digits_fid"])


def test_class_rows_grid_one_row_per_class_upscaled():
    images = np.zeros((20, 16, 16, 1), np.uint8)
    labels = np.arange(20) % 10
    images[labels == 3] = 200
    grid = class_rows_grid(images, labels, 10, per_class=4, scale=4)
    tile, pad = 64, 8
    assert grid.shape == (10 * (tile + pad) + pad, 4 * (tile + pad) + pad, 1)
    row3 = grid[pad + 3 * (tile + pad):pad + 3 * (tile + pad) + tile]
    assert (row3[:, pad:pad + tile] == 200).all()  # class 3's sample, upscaled
    assert (row3[:, pad + 2 * (tile + pad):pad + 2 * (tile + pad) + tile] == 255).all()  # only 2 samples: blank
    assert (grid[pad:pad + tile, pad:pad + tile] == 0).all()  # class 0 in the first row
