"""metamixer.kernels.native: the fused C kernels are accurate, thread-split safe, built once, and fail soft."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pytest
import torch

from metamixer.kernels import native
from metamixer.kernels.native import NativeBuildError, build_library, ffn_gelu_kernels, small_bmm_kernel

SOURCE = Path(native.__file__).parent / "csrc" / "ffn_gelu.c"
kernels = ffn_gelu_kernels()
# Skipped only where there is no compiler at all: with one, a failed build or self-check fails these tests.
needs_kernels = pytest.mark.skipif(native._compiler() is None, reason="no C compiler")


@pytest.fixture(autouse=True)
def _built_where_a_compiler_is() -> None:
    if native._compiler() is not None and os.environ.get("FFNET_NATIVE", "1") != "0":
        assert kernels is not None, "a C compiler is on the PATH but the fused kernels did not build or self-check"


def _exact(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GELU and its derivative in float64."""
    x = x.double()
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    return x * cdf, cdf + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


@needs_kernels
def test_gelu_and_derivative_match_float64_on_a_dense_grid() -> None:
    x = torch.linspace(-20, 20, 2**18).view(1, 1, -1)
    value, slope = _exact(x)
    a = kernels.forward(x, None, torch.empty_like(x), 0, 1)
    a2, grad_h, grad_bias = torch.empty_like(x), torch.empty_like(x), torch.zeros(1)
    kernels.backward(x, None, torch.ones_like(x), a2, grad_h, grad_bias, 0, 1)
    assert (a.double() - value).abs().max() < 1e-6  # torch's own float32 GELU: 1.1e-6 on this grid
    assert torch.equal(a, a2)  # the backward's recomputed activation is the forward's
    assert (grad_h.double() - slope).abs().max() < 1e-6
    assert abs(grad_bias.item() - slope.sum().item()) < 1e-4 * slope.abs().sum().item()
    special = torch.tensor([math.nan, math.inf, -math.inf, 0.0]).view(1, 1, 4)
    out = kernels.forward(special, None, torch.empty_like(special), 0, 1)
    assert math.isnan(out[0, 0, 0]) and out[0, 0, 1] == math.inf and out[0, 0, 3] == 0.0


@needs_kernels
def test_regroup_mask_and_thread_split_against_torch() -> None:
    g1, p, q, s = 5, 6, 4, 203  # 120 rows of 203 values: a ragged vector tail, rows split over threads
    torch.manual_seed(0)
    h = torch.randn(g1, p * q, s) * 3
    keep = torch.rand(g1, p * q, s) > 0.4
    grad_a = torch.randn(p, q * g1, s)

    def regroup(t: torch.Tensor) -> torch.Tensor:
        return t.view(g1, p, q, s).permute(1, 2, 0, 3).reshape(p, q * g1, s)

    results = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            native._MIN_ROWS_PER_THREAD, saved = 8, native._MIN_ROWS_PER_THREAD
            a = kernels.forward(h, keep, torch.empty(p, q * g1, s), p, q)
            a2, grad_h, grad_bias = torch.empty_like(a), torch.empty_like(h), torch.full((g1 * p * q,), 0.5)
            kernels.backward(h, keep, grad_a, a2, grad_h, grad_bias, p, q)
        finally:
            native._MIN_ROWS_PER_THREAD = saved
            torch.set_num_threads(previous)
        results.append((a, a2, grad_h, grad_bias))
    for first, second in zip(*results):
        assert torch.equal(first, second)  # rows are independent: the split cannot change a value
    a, a2, grad_h, grad_bias = results[0]
    expected_a = regroup(torch.nn.functional.gelu(h) * keep)
    ungrouped = grad_a.view(p, q, g1, s).permute(2, 0, 1, 3).reshape(g1, p * q, s)
    expected_grad_h = torch.ops.aten.gelu_backward(ungrouped, h) * keep
    torch.testing.assert_close(a, expected_a, rtol=0, atol=2e-6)
    torch.testing.assert_close(a2, a, rtol=0, atol=0)
    torch.testing.assert_close(grad_h, expected_grad_h, rtol=0, atol=2e-6)
    torch.testing.assert_close(grad_bias, expected_grad_h.sum(-1).view(-1) + 0.5, rtol=1e-5, atol=1e-4)
    assert (a == 0).float().mean() > 0.35  # the mask really zeroes ~40 %


@needs_kernels
def test_bad_tensors_are_rejected_before_any_pointer_is_used() -> None:
    h = torch.randn(2, 6, 10)
    with pytest.raises(ValueError, match="contiguous float32"):
        kernels.forward(h.transpose(1, 2), None, torch.empty(2, 10, 6), 0, 1)
    with pytest.raises(ValueError, match="float32"):
        kernels.forward(h.double(), None, torch.empty(2, 6, 10, dtype=torch.float64), 0, 1)
    with pytest.raises(ValueError, match="keep"):
        kernels.forward(h, torch.ones(2, 6, 9, dtype=torch.bool), torch.empty_like(h), 0, 1)
    with pytest.raises(ValueError, match="same number"):
        kernels.forward(h, None, torch.empty(2, 6, 9), 0, 1)
    with pytest.raises(ValueError, match="distinct"):
        kernels.backward(h, None, h, torch.empty_like(h), torch.empty_like(h), torch.zeros(12), 0, 1)


def test_build_is_cached_and_named_by_its_inputs(tmp_path: Path) -> None:
    compiler = native._compiler()
    if compiler is None:
        pytest.skip("no C compiler")
    first = build_library(SOURCE, compiler, tmp_path)
    mtime = first.stat().st_mtime_ns
    assert build_library(SOURCE, compiler, tmp_path) == first and first.stat().st_mtime_ns == mtime  # reused
    changed = tmp_path / "src" / "ffn_gelu.c"
    changed.parent.mkdir()
    changed.write_text(SOURCE.read_text() + "\n/* changed */\n")
    (changed.parent / "gelu.h").write_text((SOURCE.parent / "gelu.h").read_text())  # its shared header
    assert build_library(changed, compiler, tmp_path) != first  # another source: another library
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        [first.name, build_library(changed, compiler, tmp_path).name]
    )  # no temporary files left behind


def _fake_compiler(folder: Path, body: str) -> str:
    script = folder / "fakecc"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_build_errors_name_the_command_and_fall_back_to_portable_flags(tmp_path: Path) -> None:
    with pytest.raises(NativeBuildError, match="cannot run the C compiler"):
        build_library(SOURCE, str(tmp_path / "missing-cc"), tmp_path)
    broken = _fake_compiler(tmp_path, 'case "$1" in --version) echo fake 1.0;; *) echo "boom: bad flag" >&2; exit 1;; esac\n')
    with pytest.raises(NativeBuildError, match="boom: bad flag") as info:
        build_library(SOURCE, broken, tmp_path / "cache")
    assert "-march=native" in str(info.value) and str(SOURCE) in str(info.value)
    real = native._compiler()
    if real is None:
        pytest.skip("no C compiler for the fallback half")
    # a compiler that rejects -march=native: the portable flags are tried next
    picky = _fake_compiler(tmp_path, f'for a in "$@"; do [ "$a" = -march=native ] && exit 1; done; exec {real} "$@"\n')
    library = build_library(SOURCE, picky, tmp_path / "cache2")
    assert library.is_file() and library.stat().st_size > 0


def test_disabled_or_unbuildable_kernels_fall_back_to_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("FFNET_NATIVE", "0")
    assert ffn_gelu_kernels() is None and small_bmm_kernel() is None
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.delenv("FFNET_NATIVE")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc/gcc/clang either
    monkeypatch.setenv("FFNET_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level("WARNING"):
        assert ffn_gelu_kernels() is None and small_bmm_kernel() is None
    assert "no C compiler found" in caplog.text and "PyTorch path" in caplog.text and "small_bmm.c" in caplog.text
    assert not (tmp_path / "cache").exists()


def test_cache_dir_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FFNET_CACHE_DIR", str(tmp_path / "k"))
    assert native.cache_dir() == tmp_path / "k"
    monkeypatch.delenv("FFNET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert native.cache_dir() == tmp_path / "ffnet"
    assert os.path.basename(native.cache_dir()) == "ffnet"


@needs_kernels
def test_small_bmm_layouts_tails_threads_and_errors() -> None:
    product = native._load("small_bmm.c", native.SmallBmmKernel, native._small_bmm_self_check)
    assert product is not None
    torch.manual_seed(0)
    x, t, bias = torch.randn(17, 45, 30), torch.randn(17, 30, 61), torch.randn(17)  # row and column tails
    expected = torch.baddbmm(bias.view(17, 1, 1), x, t)
    results = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            results.append(product(x, t, bias))
        finally:
            torch.set_num_threads(previous)
    assert torch.equal(results[0], results[1])  # channels are independent
    torch.testing.assert_close(results[0], expected, rtol=1e-5, atol=1e-5)
    xt = torch.randn(17, 30, 45).transpose(1, 2)  # strided rows: the x^T @ grad product of the backward pass
    out = torch.randn(17, 45, 61)
    torch.testing.assert_close(product(xt, t, out=out.clone(), accumulate=True), out + torch.bmm(xt, t),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="t must be"):
        product(x, torch.randn(17, 31, 61))
    with pytest.raises(ValueError, match="float32"):
        product(x.double(), t.double())
    with pytest.raises(ValueError, match="share memory"):
        square = torch.randn(2, 8, 8)
        product(square, torch.randn(2, 8, 8), out=square)


@needs_kernels
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_thread_split_works_in_a_forked_child(wait_for_child) -> None:  # noqa: ANN001
    """A pool made before fork (its threads do not exist in the child): a split in the child still completes."""
    split = native._ThreadSplit(1)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[tuple[int, int]] = []
        split(lambda begin, end: seen.append((begin, end)), 4)  # creates the parent's pool
        assert sorted(seen) == [(0, 2), (2, 4)]
        pid = os.fork()
        if pid == 0:  # child: exit 0 only if the split finishes
            done: list[tuple[int, int]] = []
            split(lambda begin, end: done.append((begin, end)), 4)
            os._exit(0 if sorted(done) == [(0, 2), (2, 4)] else 1)
        wait_for_child(pid, "the forked child hung in _ThreadSplit")
    finally:
        torch.set_num_threads(previous)


def test_disabled_turns_every_kernel_getter_off_and_back_on() -> None:
    getters = (native.ffn_gelu_kernels, native.small_bmm_kernel, native.dwconv_kernels, native.batch_norm_kernels)
    before = [getter() for getter in getters]
    with native.disabled():
        with native.disabled():  # nestable
            assert all(getter() is None for getter in getters)
        assert all(getter() is None for getter in getters)
    assert [getter() for getter in getters] == before


@pytest.mark.parametrize("mode", ["torch.no_grad()", "torch.inference_mode()"])
def test_first_use_in_a_fresh_process_under_no_grad_or_inference_mode(mode: str) -> None:
    """The self-checks use autograd; an evaluation script's first call sits under no_grad / inference_mode. In a
    fresh interpreter (nothing warmed the kernels up with grad on) every getter must give what it gives in grad
    mode, and leave the caller's grad mode as it was."""
    import subprocess
    import sys

    code = (
        "import json, torch\n"
        "from metamixer.kernels import native\n"
        "getters = (native.ffn_gelu_kernels, native.small_bmm_kernel, native.dwconv_kernels,\n"
        "           native.batch_norm_kernels)\n"
        f"with {mode}:\n"
        "    under = [g() is not None for g in getters]\n"
        "    mode = [torch.is_grad_enabled(), torch.is_inference_mode_enabled()]\n"
        "native._loaded.clear()\n"
        "print(json.dumps({'under': under, 'grad_mode': [g() is not None for g in getters], 'mode': mode}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "unavailable" not in proc.stderr, proc.stderr
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["under"] == result["grad_mode"]
    assert result["mode"] == [False, mode == "torch.inference_mode()"]
    if native._compiler() is not None:
        assert result["under"][0], "ffn_gelu kernels must build and self-check under " + mode
