"""The SIMD code paths of small_bmm.c, dwconv_small.c and batchnorm.c: the one a -march=native build compiles agrees with the
CPU's /proc/cpuinfo flags (detected at run time), and every path this CPU can run (AVX-512, AVX2 + FMA, plain C,
each built here with narrower -mno-* flags) equals torch on forward products in both layouts, ragged row and
column tails, bias/accumulate, strided slices and the packed long-K case, and on depthwise convs (forward, weight
and bias gradient) for every row length 1..64 and odd kernel 1..15. Paths this CPU cannot run are still compiled."""

from __future__ import annotations

import ctypes
import platform
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from metamixer.kernels import native

CSRC = Path(native.__file__).parent / "csrc"
# the flags that build each narrower path on a CPU that has a wider one (gcc and clang: -mno-avx2 also drops
# everything that depends on it, AVX-512 included)
NARROWER = {"avx512": (), "avx2": ("-mno-avx512f",), "plain": ("-mno-avx2", "-mno-avx512f")}
RUNNABLE = {"avx512": ("avx512", "avx2", "plain"), "avx2": ("avx2", "plain"), "plain": ("plain",)}[native.cpu_isa()]
X86 = platform.machine().lower() in ("x86_64", "amd64")

pytestmark = [pytest.mark.skipif(native._compiler() is None, reason="no C compiler"),
              pytest.mark.skipif(not X86, reason="the SIMD paths are x86 code")]


def _build(source: str, isa: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN202
    wrapper = {"small_bmm.c": native.SmallBmmKernel, "dwconv_small.c": native.DwConvKernels,
               "batchnorm.c": native.BatchNormKernels}[source]
    directory = tmp_path_factory.getbasetemp() / "isa-builds"
    return wrapper(ctypes.CDLL(str(native.build_library(CSRC / source, directory=directory,
                                                        extra_flags=NARROWER[isa]))))


@pytest.fixture(scope="module", params=RUNNABLE)
def bmm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> native.SmallBmmKernel:
    kernel = _build("small_bmm.c", request.param, tmp_path_factory)
    assert kernel.isa == request.param, f"built with {NARROWER[request.param]} but compiled {kernel.isa}"
    return kernel


@pytest.fixture(scope="module", params=RUNNABLE)
def dw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> native.DwConvKernels:
    kernels = _build("dwconv_small.c", request.param, tmp_path_factory)
    assert kernels.isa == request.param, f"built with {NARROWER[request.param]} but compiled {kernels.isa}"
    return kernels


@pytest.fixture(scope="module", params=RUNNABLE)
def bn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> native.BatchNormKernels:
    kernels = _build("batchnorm.c", request.param, tmp_path_factory)
    assert kernels.isa == request.param, f"built with {NARROWER[request.param]} but compiled {kernels.isa}"
    return kernels


def test_batch_norm_every_path_equals_torch(bn: native.BatchNormKernels) -> None:
    """Each ISA build's forward (output, biased variance) and backward (input, weight, bias gradients) against
    ``F.batch_norm`` for row lengths across the vector widths' tails, a channel-strided input and G = 1."""
    g = torch.Generator().manual_seed(1)
    for groups, channels, length in ((3, 5, 1), (2, 4, 7), (1, 3, 17), (4, 6, 33), (2, 3, 100)):
        x = (torch.randn(groups, channels + 2, length, generator=g) * 2 + 1)[:, 1:-1]
        w, b = torch.randn(channels, generator=g), torch.randn(channels, generator=g)
        grad = torch.randn(groups, channels, length, generator=g)
        ref_x, ref_w, ref_b = (t.clone().double().requires_grad_() for t in (x, w, b))
        ref = F.batch_norm(ref_x, None, None, ref_w, ref_b, training=True, eps=1e-5)
        ref.backward(grad.double())
        y, mean, var, invstd = bn.forward(x, w, b, 1e-5)
        grad_x, grad_w, grad_b = bn.backward(grad, x, w, mean, invstd)
        tol = {"rtol": 1e-4, "atol": 1e-4}
        torch.testing.assert_close(y.double(), ref.detach(), **tol)
        torch.testing.assert_close(var.double(), x.double().var((0, 2), unbiased=False), **tol)
        for got, want in ((grad_x, ref_x.grad), (grad_w, ref_w.grad), (grad_b, ref_b.grad)):
            torch.testing.assert_close(got.double(), want, **tol, msg=lambda m: f"{bn.isa} {tuple(x.shape)}: {m}")


def test_native_build_compiles_the_path_cpuinfo_promises() -> None:
    """-march=native on this CPU: avx512f -> the AVX-512 path, else avx2 + fma -> AVX2, else plain C; and the
    getters offer a kernel exactly where OFFERED_ISAS lists its ISA."""
    flags = next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.split(":")[0].strip() == "flags")
    expected = "avx512" if "avx512f" in flags else "avx2" if {"avx2", "fma"} <= set(flags) else "plain"
    assert native.cpu_isa() == expected
    for source, wrapper, check, getter in (
        ("small_bmm.c", native.SmallBmmKernel, native._small_bmm_self_check, native.small_bmm_kernel),
        ("dwconv_small.c", native.DwConvKernels, native._dwconv_self_check, native.dwconv_kernels),
        ("batchnorm.c", native.BatchNormKernels, native._batch_norm_self_check, native.batch_norm_kernels),
    ):
        built = native._load(source, wrapper, check)
        assert built is not None, f"{source} did not build or self-check"
        assert built.isa == expected and built.vectorized == (expected != "plain")
        assert (getter() is not None) == (expected in native.OFFERED_ISAS[source])
        with native.plain_builds():
            assert getter() is built  # offered whatever its ISA
        with native.disabled(source):
            assert getter() is None
        with pytest.raises(ValueError, match="unknown kernel sources"):
            with native.disabled("nope.c"):
                pass


@pytest.mark.parametrize("source", ["small_bmm.c", "dwconv_small.c", "batchnorm.c"])
@pytest.mark.parametrize("isa,flags,register", [
    ("avx512", ("-mavx512f", "-mavx512bw", "-mfma"), "%zmm"), ("avx2", ("-mavx2", "-mfma", "-mno-avx512f"), "%ymm")])
def test_every_simd_path_compiles_on_any_x86_compiler(source: str, isa: str, flags: tuple[str, ...], register: str,
                                                      tmp_path: Path) -> None:
    """The AVX-512 path cannot run on an AVX2 CPU (nor the AVX2 path be the native one on an AVX-512 CPU): compile
    both explicitly and check the assembly uses that path's registers."""
    compiler = native._compiler()
    out = tmp_path / f"{isa}.s"
    # -fopenmp-simd as in the real build: batchnorm.c's reductions are vectorised through `omp simd` pragmas
    done = subprocess.run([compiler, "-O3", "-Wall", "-fopenmp-simd", "-S", *flags, "-o", str(out), str(CSRC / source)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assembly = out.read_text()
    assert register in assembly
    assert isa == "avx512" or "%zmm" not in assembly


def _bmm_case(bmm: native.SmallBmmKernel, g: torch.Generator, c: int, m: int, k: int, n: int, transposed: bool,
              bias: str, accumulate: bool, t_pad: int = 0, out_pad: int = 0) -> None:
    x = torch.randn(c, k, m, generator=g).transpose(1, 2) if transposed else torch.randn(c, m, k, generator=g)
    wide_t = torch.randn(c, k, n + 2 * t_pad, generator=g)
    t = wide_t[:, :, t_pad:t_pad + n]  # a column slice: row stride n + 2 * t_pad
    b = {"none": None, "product": torch.randn(c, generator=g), "row": torch.randn(c, m, generator=g)}[bias]
    wide_out = torch.randn(c, m, n + 2 * out_pad, generator=g)
    before = wide_out.clone()
    out = wide_out[:, :, out_pad:out_pad + n]
    expected = torch.bmm(x.double(), t.double())
    if b is not None:
        expected += (b.view(c, 1, 1) if bias == "product" else b.view(c, m, 1)).double()
    if accumulate:
        expected += out.double()
    got = bmm(x, t, b, out=out, accumulate=accumulate)
    assert got.data_ptr() == out.data_ptr()
    scale = max(1.0, k ** 0.5)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * scale,
                               msg=lambda msg: f"{bmm.isa} c={c} m={m} k={k} n={n} {transposed=} {bias=}: {msg}")
    if out_pad:  # columns outside the slice untouched
        assert torch.equal(wide_out[:, :, :out_pad], before[:, :, :out_pad])
        assert torch.equal(wide_out[:, :, -out_pad:], before[:, :, -out_pad:])


def test_small_bmm_tails_layouts_bias_and_accumulate(bmm: native.SmallBmmKernel) -> None:
    """Rows 1..9 (4-row blocks and every 1-3 row tail), columns across the 24-wide block and 8-lane tails."""
    g = torch.Generator().manual_seed(0)
    for m in range(1, 10):
        for n in (1, 7, 8, 9, 23, 24, 25, 47, 48, 49, 72, 100):
            _bmm_case(bmm, g, 2, m, 5 + m, n, transposed=m % 2 == 0, bias=("none", "product", "row")[n % 3],
                      accumulate=n % 2 == 1)


@pytest.mark.parametrize("c,m,k,n,transposed,bias,t_pad,out_pad", [
    (3, 64, 48, 48, False, "product", 0, 0),   # the Toeplitz forward (T contiguous, used in place)
    (3, 48, 96, 48, True, "none", 0, 0),       # the Toeplitz weight gradient x^T @ g (K = batch)
    (2, 14, 7, 500, False, "row", 300, 5),     # short-K FFN product on a slice of positions
    (2, 21, 252, 300, False, "row", 700, 3),   # long K over rows far apart: packed, K split into chunks
    (2, 13, 400, 61, True, "none", 600, 0),    # transposed x, packed, three K chunks, ragged columns
    (1, 5, 0, 30, False, "row", 0, 2),         # K = 0: y = bias
])
def test_small_bmm_ffnet_ts_layouts(bmm: native.SmallBmmKernel, c: int, m: int, k: int, n: int, transposed: bool,
                                    bias: str, t_pad: int, out_pad: int) -> None:
    g = torch.Generator().manual_seed(k + n)
    for accumulate in (False, True):
        _bmm_case(bmm, g, c, m, k, n, transposed, bias, accumulate, t_pad, out_pad)


def test_small_bmm_thread_split_changes_no_value(bmm: native.SmallBmmKernel) -> None:
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(17, 30, 45, generator=g), torch.randn(17, 45, 53, generator=g)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(bmm(x, t))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(results[0], results[1])


def test_dwconv_every_length_and_kernel_against_conv1d(dw: native.DwConvKernels) -> None:
    """Forward (and so the input gradient, the same loop with the kernel reversed), weight and bias gradients on a
    row-strided channel-major view, for L = 1..64 (every 8- and 16-lane tail; rows shorter than the kernel) and
    k = 1..15, against float64 conv1d (on one thread: 512 tiny convs, each of which a thread pool on a shared
    machine slows a hundredfold)."""
    g = torch.Generator().manual_seed(0)
    channels, batch = 3, 5
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for length in range(1, dw.MAX_LENGTH + 1):
            for k in range(1, dw.MAX_KERNEL + 1, 2):
                x = torch.randn(channels, batch, length + 3, generator=g)[:, :, 1:length + 1]
                w, b = torch.randn(channels, k, generator=g), torch.randn(channels, generator=g)
                grad = torch.randn(channels, batch, length, generator=g)
                ref_x = x.transpose(0, 1).double().requires_grad_()
                ref_w, ref_b = w.view(channels, 1, k).double().requires_grad_(), b.double().requires_grad_()
                reference = F.conv1d(ref_x, ref_w, ref_b, padding=k // 2, groups=channels)
                reference.backward(grad.transpose(0, 1).double())
                out = dw.forward(x, w, b)
                no_bias = dw.forward(x, w)
                grad_x = dw.forward(grad, w.flip(-1).contiguous())
                grad_w, grad_b = dw.grad_weight(x, grad, k, True)
                only_w, none_b = dw.grad_weight(x, grad, k, False)
                assert none_b is None and torch.equal(only_w, grad_w)
                errors = [(out - reference.detach().transpose(0, 1)).abs().max(),
                          (no_bias + b.view(channels, 1, 1) - out).abs().max(),
                          (grad_x - ref_x.grad.transpose(0, 1)).abs().max(),
                          (grad_w - ref_w.grad.view(channels, k)).abs().max(), (grad_b - ref_b.grad).abs().max()]
                error = max(float(e) for e in errors)
                assert error < 1e-4, f"{dw.isa}: length {length}, kernel {k}: {error:.3g}"
    finally:
        torch.set_num_threads(previous)


def _loaded(source: str):  # noqa: ANN202
    wrapper, check = {"small_bmm.c": (native.SmallBmmKernel, native._small_bmm_self_check),
                      "dwconv_small.c": (native.DwConvKernels, native._dwconv_self_check),
                      "batchnorm.c": (native.BatchNormKernels, native._batch_norm_self_check)}[source]
    built = native._load(source, wrapper, check)
    assert built is not None, f"{source} did not build or self-check"
    return built


def _torch_uses_gnu_openmp() -> bool:
    maps = Path("/proc/self/maps").read_text()
    torch_lib = str(Path(torch.__file__).resolve().parent / "lib")
    return "OpenMP" in torch.__config__.parallel_info() and f"{torch_lib}/libgomp" in maps


@pytest.mark.parametrize("source", ["small_bmm.c", "dwconv_small.c", "batchnorm.c"])
def test_threads_run_on_torchs_openmp_team_and_equal_the_thread_pool(source: str) -> None:
    """Where PyTorch runs on GNU OpenMP (its Linux wheels) and gcc builds with -fopenmp, the kernels split their
    channels on PyTorch's own team; either split gives bit-identical results (channels are independent)."""
    built = _loaded(source)
    if _torch_uses_gnu_openmp() and Path(native._compiler()).name in ("cc", "gcc") and not built._channels.shared:
        pytest.fail(f"{source}: PyTorch runs on its libgomp but the kernel does not share it")
    g = torch.Generator().manual_seed(0)
    if source == "small_bmm.c":
        x, t = torch.randn(40, 33, 48, generator=g), torch.randn(40, 48, 50, generator=g)
        # 3 products on 2 threads: the team also splits each product's 1,000 columns (at multiples of 24)
        few_x, few_t, bias = torch.randn(3, 20, 30, generator=g), torch.randn(3, 30, 1000, generator=g), torch.randn(3, 20)
        run = lambda: (built(x, t), built(few_x, few_t, bias))  # noqa: E731
        reference = torch.bmm(x, t)
        few_reference = torch.baddbmm(bias.unsqueeze(-1), few_x, few_t)
    elif source == "batchnorm.c":
        x, w, b = torch.randn(3, 40, 70, generator=g), torch.randn(40, generator=g), torch.randn(40, generator=g)
        grad = torch.randn(3, 40, 70, generator=g)

        def run():  # noqa: ANN202
            y, mean, var, invstd = built.forward(x, w, b, 1e-5)
            return (y, var, *built.backward(grad, x, w, mean, invstd))

        reference = F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
        few_reference = None
    else:
        x, w = torch.randn(40, 6, 48, generator=g), torch.randn(40, 5, generator=g)
        grad = torch.randn(40, 6, 48, generator=g)
        run = lambda: (built.forward(x, w), *built.grad_weight(x, grad, 5, True))  # noqa: E731
        reference = F.conv1d(x.transpose(0, 1), w.view(40, 1, 5), padding=2, groups=40).transpose(0, 1)
        few_reference = None
    previous, shared = torch.get_num_threads(), built._channels.shared
    try:
        torch.set_num_threads(2)
        team = run()
        built._channels.shared = False
        pool = run()
    finally:
        built._channels.shared = shared
        torch.set_num_threads(previous)
    assert all(torch.equal(a, b) for a, b in zip(team, pool, strict=True))
    torch.testing.assert_close(team[0], reference, rtol=1e-5, atol=1e-5)
    if few_reference is not None:
        torch.testing.assert_close(team[1], few_reference, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_kernels_in_a_forked_child_use_the_thread_pool_and_finish(wait_for_child) -> None:  # noqa: ANN001
    """GNU OpenMP's team does not survive fork (a PyTorch op on 2 threads hangs in the child): after the parent
    used the team, a child's 2-thread kernel calls must still finish, through the Python pool."""
    import os

    bmm = _loaded("small_bmm.c")
    x, t = torch.randn(32, 20, 48), torch.randn(32, 48, 48)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = bmm(x, t)  # the parent uses the team (where shared)
        pid = os.fork()
        if pid == 0:
            ok = torch.equal(bmm(x, t), expected)
            os._exit(0 if ok else 1)
        wait_for_child(pid, "a kernel call hung in a forked child")
    finally:
        torch.set_num_threads(previous)


def test_ffn_gelu_and_nhwc_kernels_share_torchs_openmp_team() -> None:
    """The FFN GELU and channels-last kernels also split on PyTorch's team where it is GNU OpenMP and gcc builds
    with -fopenmp; the FFN GELU forward and backward give bit-identical results on the team and in the pool."""
    from metamixer.kernels.nhwc import nhwc_kernels

    ffn, nhwc = native.ffn_gelu_kernels(), nhwc_kernels()
    assert ffn is not None and nhwc is not None
    if _torch_uses_gnu_openmp() and Path(native._compiler()).name in ("cc", "gcc"):
        assert ffn._rows.shared and nhwc._pixels.shared and nhwc._rows.shared
    g = torch.Generator().manual_seed(0)
    g1, p, q, s = 3, 4, 2, 70
    h = torch.randn(g1, p * q, s, generator=g)
    keep = torch.rand(h.shape, generator=g) > 0.3
    grad_a = torch.randn(h.numel() // s, s, generator=g).reshape(h.shape)
    previous, shared = torch.get_num_threads(), ffn._rows.shared
    minimum = ffn._rows.min_per_thread
    results = []
    try:
        torch.set_num_threads(2)
        ffn._rows.min_per_thread = ffn._rows._pool.min_per_thread = 1  # 24 rows: split them
        for team in (True, False):
            ffn._rows.shared = team and shared
            a, a2, grad_h = torch.empty_like(h), torch.empty_like(h), torch.empty_like(h)
            grad_bias = torch.zeros(g1 * p * q)
            ffn.forward(h, keep, a, p, q)
            ffn.backward(h, keep, grad_a, a2, grad_h, grad_bias, p, q)
            results.append((a, a2, grad_h, grad_bias))
    finally:
        ffn._rows.shared, ffn._rows.min_per_thread = shared, minimum
        ffn._rows._pool.min_per_thread = minimum
        torch.set_num_threads(previous)
    assert all(torch.equal(x, y) for x, y in zip(*results, strict=True))
    gelu = torch.nn.functional.gelu(h) * keep
    assert float((results[0][0].sum() - gelu.sum()).abs()) < 1e-3  # regrouped, so compare sums
