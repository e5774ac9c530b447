"""Checkpoint format: exact resume, atomic writes, safe loading and foreign layouts."""

from __future__ import annotations

import argparse
import dataclasses
import fractions
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from metamixer.train.amp import make_grad_scaler
from metamixer.train.checkpoint import (
    CHECKPOINT_FORMAT,
    extract_state_dict,
    load_checkpoint,
    load_state_dict_checked,
    load_weights_file,
    restore_checkpoint,
    save_checkpoint,
)
from metamixer.train.ema import ModelEMA
from metamixer.train.errors import FFNetError


# ------------------------------------------------------------------------------------- exact resume
def _make_run(init_seed: int):
    """Model with dropout + BN, AdamW, warmup+cosine scheduler, (disabled) scaler and EMA with warmup."""
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3),
         torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)],
        milestones=[3],
    )
    scaler = make_grad_scaler("fp32", "cpu")
    ema = ModelEMA(model, decay=0.99, warmup=True)
    return model, opt, sched, scaler, ema


def _train_steps(run, n: int) -> None:
    model, opt, sched, scaler, ema = run
    model.train()
    for _ in range(n):
        # data from every RNG the apps use: torch (batch + dropout), numpy and python (augmentation-like noise)
        x = torch.randn(16, 8) * (1.0 + random.random()) + float(np.random.rand())
        y = torch.randn(16, 4)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        ema.update(model)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _assert_same_state(a, b) -> None:
    (ma, oa, sa, _, ea), (mb, ob, sb, _, eb) = a, b
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), f"model {ka} differs"
    for (ka, va), (kb, vb) in zip(ea.state_dict().items(), eb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), f"ema {ka} differs"
    assert ea.updates == eb.updates
    st_a, st_b = oa.state_dict()["state"], ob.state_dict()["state"]
    assert st_a.keys() == st_b.keys()
    for idx in st_a:
        for name in st_a[idx]:
            assert torch.equal(torch.as_tensor(st_a[idx][name]), torch.as_tensor(st_b[idx][name])), name
    assert sa.get_last_lr() == sb.get_last_lr()


N_STEPS, K_STEPS = 10, 4


def _resumed(tmp_path: Path, restore_rng: bool):
    _seed_all(123)
    first = _make_run(init_seed=0)
    _train_steps(first, K_STEPS)
    ckpt_path = save_checkpoint(tmp_path / "last.pth", model=first[0], optimizer=first[1], scheduler=first[2],
                                scaler=first[3], ema=first[4], step=K_STEPS, epoch=1)
    del first
    _seed_all(999)  # a fresh process would start from unrelated RNG states
    second = _make_run(init_seed=7)  # different init: restore must overwrite everything
    ckpt = restore_checkpoint(ckpt_path, model=second[0], optimizer=second[1], scheduler=second[2],
                              scaler=second[3], ema=second[4], restore_rng=restore_rng)
    assert ckpt["step"] == K_STEPS and ckpt["epoch"] == 1
    _train_steps(second, N_STEPS - ckpt["step"])
    return second


def test_resume_is_bit_exact(tmp_path: Path) -> None:
    _seed_all(123)
    straight = _make_run(init_seed=0)
    _train_steps(straight, N_STEPS)
    resumed = _resumed(tmp_path, restore_rng=True)
    _assert_same_state(straight, resumed)


def test_resume_without_rng_diverges(tmp_path: Path) -> None:
    """Negative control: the exact-resume test really depends on the RNG states being restored."""
    _seed_all(123)
    straight = _make_run(init_seed=0)
    _train_steps(straight, N_STEPS)
    resumed = _resumed(tmp_path, restore_rng=False)
    with pytest.raises(AssertionError):
        _assert_same_state(straight, resumed)


# ---------------------------------------------------------------------------------------- file format
@dataclasses.dataclass
class _Cfg:
    lr: float = 0.1
    depths: tuple[int, ...] = (1, 2)


def test_format_fields_and_weights_only(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "sub" / "c.pth", model=model, step=5, epoch=2, config=_Cfg(),
                           extra={"best_psnr": 31.5, "history": [1.0, 2.0]})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["version"] == 1
    assert set(raw) >= {"model", "ema", "optimizer", "scheduler", "scaler", "step", "epoch", "config", "rng",
                        "extra"}
    assert raw["config"] == {"lr": 0.1, "depths": [1, 2]}
    assert raw["extra"] == {"best_psnr": 31.5, "history": [1.0, 2.0]}
    assert raw["ema"] is None and raw["optimizer"] is None
    assert torch.equal(raw["model"]["weight"], model.weight)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


def test_wrapped_model_saves_clean_keys(tmp_path: Path) -> None:
    model = nn.DataParallel(nn.Linear(3, 2))
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "c.pth", model=model))
    assert set(ckpt["model"]) == {"weight", "bias"}


def test_failed_write_keeps_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "last.pth", model=model, step=1)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial data")  # half-written zip
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError):
        save_checkpoint(path, model=model, step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_missing_file_error_names_path(tmp_path: Path) -> None:
    with pytest.raises(FFNetError, match="not found.*nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(FFNetError, match=r"garbage.pth: not a PyTorch checkpoint \(it starts with b'this'"):
        load_checkpoint(garbage)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(FFNetError, match="empty.pth: empty file"):
        load_checkpoint(empty)
    good = save_checkpoint(tmp_path / "good.pth", model=nn.Linear(30, 30))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FFNetError, match=r"truncated.pth: not a readable checkpoint \(\d+ bytes\): truncated") as info:
        load_checkpoint(truncated)
    assert str(info.value).endswith("download?)")  # the whole message, not a cut-off library text


def test_non_checkpoint_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pth"
    torch.save(nn.Linear(2, 2).state_dict(), plain)
    with pytest.raises(FFNetError, match="plain.pth: not an FFNet checkpoint"):
        load_checkpoint(plain)
    pickled = tmp_path / "pickled.pth"
    torch.save({"args": fractions.Fraction(1, 3), "state_dict": {}}, pickled)  # an arbitrary pickled object
    with pytest.raises(FFNetError, match="pickled.pth: refused.*fractions.Fraction.*were not executed") as info:
        load_checkpoint(pickled)
    assert "weights_only=False" not in str(info.value)  # never advise the unsafe load
    # the timm trainer's pickled argparse.Namespace is allowed: official .pth.tar files must load
    official = tmp_path / "official.pth.tar"
    torch.save({"args": argparse.Namespace(lr=1), "state_dict": {"w": torch.ones(2)}}, official)
    assert torch.equal(extract_state_dict(load_weights_file(official))["w"], torch.ones(2))


def test_newer_version_rejected(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pth", model=nn.Linear(2, 2))
    raw = torch.load(path, weights_only=True)
    raw["version"] = 99
    torch.save(raw, path)
    with pytest.raises(FFNetError, match="version 99"):
        load_checkpoint(path)


def test_restore_requires_requested_components(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    path = save_checkpoint(tmp_path / "c.pth", model=model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FFNetError, match="no optimizer state"):
        restore_checkpoint(path, model=model, optimizer=opt)
    with pytest.raises(FFNetError, match="no ema state"):
        restore_checkpoint(path, ema=ModelEMA(model))


def test_restore_into_wrong_model_lists_keys(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pth", model=nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2)))
    with pytest.raises(FFNetError, match=r"c.pth.*missing keys.*2.weight.*unexpected keys.*1.weight"):
        restore_checkpoint(path, model=nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)))


# ------------------------------------------------------------------------------------ foreign layouts
def _sd(value: float) -> dict[str, torch.Tensor]:
    return {"weight": torch.full((2, 2), value), "bias": torch.full((2,), value)}


def test_extract_state_dict_layouts(tmp_path: Path) -> None:
    timm_like = {"state_dict": _sd(1.0), "state_dict_ema": _sd(2.0), "epoch": 3}
    assert extract_state_dict(timm_like)["weight"][0, 0] == 1.0
    assert extract_state_dict(timm_like, prefer_ema=True)["weight"][0, 0] == 2.0
    basicsr = {"params": _sd(3.0), "params_ema": _sd(4.0)}
    assert extract_state_dict(basicsr)["weight"][0, 0] == 3.0
    assert extract_state_dict(basicsr, prefer_ema=True)["weight"][0, 0] == 4.0
    assert extract_state_dict({"params_ema": _sd(5.0)})["bias"][0] == 5.0  # fallback to the only weights
    ddp = {"model": {f"module.{k}": v for k, v in _sd(6.0).items()}}
    assert list(extract_state_dict(ddp)) == ["weight", "bias"]
    bare = {f"module._orig_mod.{k}": v for k, v in _sd(7.0).items()}
    assert list(extract_state_dict(bare)) == ["weight", "bias"]
    with pytest.raises(FFNetError, match="no model weights found.*epoch"):
        extract_state_dict({"epoch": 1, "optimizer": {}})


def test_extract_from_our_checkpoint_path(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    path = save_checkpoint(tmp_path / "c.pth", model=model, ema=ema)
    assert torch.equal(extract_state_dict(path)["weight"], model.weight)
    assert torch.equal(extract_state_dict(path, prefer_ema=True)["weight"], ema.module.weight)
    assert not torch.equal(model.weight, ema.module.weight)


def test_load_state_dict_checked_reports_all_problems() -> None:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(12)])
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("bias")}  # 12 missing biases
    sd["extra.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(5, 4)
    with pytest.raises(FFNetError) as info:
        load_state_dict_checked(model, sd, "official_ffnet.pth")
    msg = str(info.value)
    assert msg.startswith("official_ffnet.pth:")
    assert "12 missing keys" in msg and "(+2 more)" in msg
    assert "1 unexpected keys: extra.weight" in msg
    assert "1 shape mismatches: 0.weight (checkpoint (5, 4) vs model (4, 4))" in msg
    good = {f"module.{k}": v.clone() + 1 for k, v in model.state_dict().items()}
    load_state_dict_checked(model, good, "ok.pth")
    assert torch.equal(model[0].weight, good["module.0.weight"])
