"""MAC/parameter counting against hand-computed values, and data-path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from metamixer.nn.flops import count_macs, count_params
from metamixer.train.datadir import data_path, data_root, find_repo_root
from metamixer.train.errors import FFNetError


def test_count_params_hand_computed() -> None:
    conv = nn.Conv2d(3, 8, 3, bias=True)
    assert count_params(conv) == 8 * 3 * 3 * 3 + 8
    model = nn.Sequential(conv, nn.BatchNorm2d(8), nn.Linear(8, 4))
    assert count_params(model) == 224 + 16 + 36
    model[2].requires_grad_(False)
    assert count_params(model, trainable_only=True) == 224 + 16


def test_shared_parameters_counted_once() -> None:
    lin = nn.Linear(4, 4)
    assert count_params(nn.Sequential(lin, lin)) == 20


def test_count_macs_conv_linear() -> None:
    conv = nn.Conv2d(3, 16, kernel_size=3, padding=1)
    x = torch.randn(2, 3, 32, 32)
    assert count_macs(conv, x) == 2 * 16 * 32 * 32 * 3 * 3 * 3  # B*Cout*H*W*Cin*k*k
    dw = nn.Conv2d(16, 16, kernel_size=7, padding=3, groups=16, bias=False)
    assert count_macs(dw, torch.randn(1, 16, 14, 14)) == 16 * 14 * 14 * 7 * 7
    conv1d = nn.Conv1d(4, 6, kernel_size=5, stride=2)
    assert count_macs(conv1d, torch.randn(1, 4, 21)) == 6 * 9 * 4 * 5
    lin = nn.Linear(10, 7)
    assert count_macs(lin, torch.randn(5, 10)) == 5 * 10 * 7


def test_count_macs_eval_mode_restores_flags_and_no_grad() -> None:
    model = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), nn.BatchNorm1d(6), nn.Linear(6, 2))
    model.train()
    model[2].eval()  # mixed flags must come back exactly
    x = torch.randn(3, 6)
    before = model[2].running_mean.clone()
    macs = count_macs(model, x)
    assert macs == 3 * 6 * 6 + 3 * 6 * 2
    assert model.training and model[0].training and model[1].training and not model[2].training
    assert torch.equal(model[2].running_mean, before)
    assert all(p.grad is None for p in model.parameters())


def test_count_macs_kwargs_and_matmul() -> None:
    class Attn(nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return (q @ k.transpose(-1, -2)) * scale

    assert count_macs(Attn(), torch.randn(2, 5, 8), k=torch.randn(2, 7, 8), scale=0.5) == 2 * 5 * 7 * 8


# ---------------------------------------------------------------------------------------------- paths
def test_data_root_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFNET_DATA", str(tmp_path))
    (tmp_path / "sr" / "Set5").mkdir(parents=True)
    assert data_root() == tmp_path.resolve()
    assert data_path("sr", "Set5", what="Set5") == tmp_path.resolve() / "sr" / "Set5"


def test_data_path_missing_names_what_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFNET_DATA", str(tmp_path))
    with pytest.raises(FFNetError, match=r"ETTh1 CSV not found at .*ts.*ETTh1.csv.*set FFNET_DATA"):
        data_path("ts", "ETTh1.csv", what="ETTh1 CSV")


def test_default_root_is_shared_data_beside_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FFNET_DATA", raising=False)
    repo = find_repo_root()
    assert repo is not None and (repo / "packages" / "core").is_dir()
    assert data_root() == repo.parent / "shared" / "data"


def test_default_root_found_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-editable install only finds the repo from the working directory."""
    repo = tmp_path / "checkout"
    (repo / "packages").mkdir(parents=True)
    (repo / "apps").mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (repo / "apps" / "sub").mkdir()
    monkeypatch.chdir(repo / "apps" / "sub")
    assert find_repo_root(Path.cwd()) == repo.resolve()
    monkeypatch.delenv("FFNET_DATA", raising=False)
    import metamixer.train.datadir as paths

    monkeypatch.setattr(paths, "__file__", str(tmp_path / "site-packages" / "metamixer" / "paths.py"))
    assert data_root() == (tmp_path / "shared" / "data").resolve()


def test_count_macs_counts_cpu_attention():
    """F.scaled_dot_product_attention on CPU: QK^T (n*n*d) and AV (n*n*d) MACs per head and batch."""
    from metamixer.nn.flops import count_macs

    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    b, h, n, d = 2, 3, 16, 8
    q = torch.randn(b, h, n, d)
    assert count_macs(Attn(), q, q.clone(), q.clone()) == 2 * b * h * n * n * d


def test_write_json_is_atomic_and_creates_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from metamixer.train.results import write_json

    target = tmp_path / "a" / "b" / "result.json"
    assert write_json(target, {"mse": 0.5}) == target
    assert json.loads(target.read_text()) == {"mse": 0.5}
    # an object json cannot encode fails mid-write: the previous result survives, no temp file is left behind
    with pytest.raises(TypeError):
        write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"mse": 0.5}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]
