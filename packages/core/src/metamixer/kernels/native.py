"""Small C kernels for CPU hot spots, compiled on first use with the machine's C compiler and cached.

Why: two pieces of FFNet-TS's CPU training step run far below what the core can do. (1) The FFN hidden block's
element-wise work (GELU, dropout mask, regroup copies) runs as separate PyTorch ops, each streaming a large tensor
through memory; :func:`ffn_gelu_kernels` does it in one pass. (2) The depthwise convolutions as Toeplitz matmuls
are products with a 48 x 48 right factor, where the BLAS behind ``torch.bmm`` is tuned for large K and N:
:func:`small_bmm_kernel` keeps a register block of the output through the whole K loop (on AVX-512 8 x 48 in 24
zmm registers, 60-90 GFLOP/s against ``torch.bmm``'s ~22 on one core; on AVX2 4 x 24 in 12 ymm registers, 33-38
against 18-20 on an AVX2 EPYC), and :func:`dwconv_kernels` runs short depthwise kernels (k=5) directly instead of
as a dense 48 x 48 product. (3) PyTorch's CPU BatchNorm in training runs ~4x above its memory-traffic floor at
FFNet-TS's ``[G, C, S]`` shapes; :func:`batch_norm_kernels` does a channel per cache visit. The kernels are plain C with no PyTorch headers, so a build takes about a second; they
are called through ctypes, which releases the GIL, so one call can be split across threads.

Instruction set, detected at run time: every library is built with ``-march=native`` on the machine that loads it,
so the C preprocessor sees that CPU's features and each of ``small_bmm.c`` / ``dwconv_small.c`` compiles its
AVX-512 code (``__AVX512F__``), else its AVX2 + FMA code, else a plain C loop. The wrappers report which as
``isa`` (``"avx512"``, ``"avx2"`` or ``"plain"``; :func:`cpu_isa` says what /proc/cpuinfo promises) and
``vectorized`` (``isa != "plain"``). The cache key includes the CPU's feature flags, so a library is only reused on
a CPU that runs it.

Offered only where it pays (:data:`OFFERED_ISAS`): a getter returns a product or short-conv kernel only for an
ISA at which it was measured faster than the PyTorch path it replaces, at FFNet-TS's shapes (whole training steps
on one and two threads, see docs/timeseries.md); the plain C loops are no faster than BLAS and are offered only
inside :func:`plain_builds` (for tests). Threads: the product and short-conv libraries are built with ``-fopenmp``
and split their work on PyTorch's own OpenMP team where they share its runtime (:class:`_TeamSplit`), else in a
Python thread pool.
Measured on an AVX2-only AMD EPYC (one thread, kernel vs ``torch.bmm``, medians of alternating rounds): Toeplitz
forward ``[448, 512, 48] @ [48, 48]`` 1.8-2.0x, its weight gradient ``x^T @ g`` (K = batch) 1.05-1.1x, the FFN
products 1.1-2.6x (ETTh1) and 1.0-1.6x (Weather; the two memory-bound ones, ``[64, 21, 252] @ [252, S]`` and
``[21, 64, 768]^T @ [768, S]``, are ties); the k=5 depthwise conv forward + backward at ``[448, 512, 48]`` 2.6x the
Toeplitz path. ``benchmarks/ts_speed.py`` times the whole step with and without them (docs/timeseries.md).

Everything here is optional. Without a C compiler, on a non-POSIX system, when a build or the numerical self-check
fails, or with ``FFNET_NATIVE=0``, the getters return None (after one warning, except when disabled) and callers
use their PyTorch path. Built libraries live in ``$FFNET_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ffnet`` or
``~/.cache/ffnet``) under a name that hashes the source, the flags, the compiler's version and the CPU's model and
feature flags, so a shared home directory on mixed machines stays correct. The compiler is ``$CC`` or the first of
``cc``, ``gcc``, ``clang`` on the PATH.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

__all__ = [
    "NativeBuildError", "build_library", "cache_dir", "dwconv_kernels", "DwConvKernels", "ffn_gelu_kernels",
    "FFNGeluKernels", "small_bmm_kernel", "SmallBmmKernel", "select", "disabled", "plain_builds", "cpu_isa",
    "OFFERED_ISAS", "ISAS", "batch_norm_kernels", "BatchNormKernels",
]

_LOG = logging.getLogger(__name__)
_SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
# -fopenmp-simd: honour '#pragma omp simd' (vectorized reductions) without linking an OpenMP runtime
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-shared", "-fPIC")
_PORTABLE_FLAGS = tuple(flag for flag in _FLAGS if flag not in ("-march=native", "-fopenmp-simd"))
_MIN_ROWS_PER_THREAD = 64
# The value of small_bmm_vectorized() / dwconv_vectorized() -> the code path the preprocessor compiled.
ISAS = {0: "plain", 1: "avx512", 2: "avx2"}
# Where each SIMD kernel is offered (see the module docstring for the measurements behind each entry).
OFFERED_ISAS = {"small_bmm.c": frozenset({"avx512", "avx2"}), "dwconv_small.c": frozenset({"avx512", "avx2"}),
                "batchnorm.c": frozenset({"avx512", "avx2"})}
_OPENMP_SOURCES = frozenset({"small_bmm.c", "dwconv_small.c", "nhwc.c", "ffn_gelu.c", "batchnorm.c"})  # built with -fopenmp (see _TeamSplit)


class NativeBuildError(RuntimeError):
    """A kernel library could not be compiled or loaded (the message says which command and why)."""


def cache_dir() -> Path:
    """Where built kernel libraries are kept (see the module docstring)."""
    env = os.environ.get("FFNET_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "ffnet"


def _compiler() -> str | None:
    for name in filter(None, (os.environ.get("CC"), "cc", "gcc", "clang")):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cpu_identity() -> str:
    """The CPU model and feature flags (Linux), so a library built with -march=native is only reused on a CPU that
    runs it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def cpu_isa() -> str:
    """The widest code path of ``small_bmm.c`` / ``dwconv_small.c`` this CPU runs, from its /proc/cpuinfo flags:
    ``"avx512"`` (avx512f), ``"avx2"`` (avx2 and fma) or ``"plain"`` (anything else, and where there is no
    /proc/cpuinfo). A ``-march=native`` build on this CPU compiles exactly that path; the tests check it does."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "plain"
    flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.split(":")[0].strip() == "flags"), set())
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "plain"


def build_library(source: Path, compiler: str | None = None, directory: Path | None = None,
                  extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile ``source`` into a shared library in the cache (reused when the same one was built before).

    The library is written to a temporary file and renamed into place, so concurrent processes never load a
    half-written file. Tries the native flags, then portable ones (compilers without ``-march=native``);
    ``extra_flags`` follow either (tests use ``-mno-avx512f`` / ``-mno-avx2`` to build the narrower code paths a CPU
    also runs). Raises :class:`NativeBuildError` naming the command and the compiler's message."""
    compiler = compiler or _compiler()
    if compiler is None:
        raise NativeBuildError("no C compiler found (set CC, or install cc/gcc/clang)")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeBuildError(f"cannot run the C compiler {compiler}: {exc}") from exc
    directory = directory or cache_dir()
    # the shared headers (gelu.h) are part of every library's identity: a header edit rebuilds its users
    text = source.read_bytes() + b"".join(h.read_bytes() for h in sorted(source.parent.glob("*.h")))
    errors = []
    for flags in ((*_FLAGS, *extra_flags), (*_PORTABLE_FLAGS, *extra_flags)):
        key = hashlib.sha256(b"\0".join([text, " ".join(flags).encode(), version.encode(), _cpu_identity().encode(),
                                          platform.machine().encode()])).hexdigest()[:16]
        target = directory / f"{source.stem}-{key}.so"
        if target.is_file():
            return target
        try:
            directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(suffix=".so", prefix=f".{source.stem}-", dir=directory)
            os.close(handle)
        except OSError as exc:
            raise NativeBuildError(f"cannot write to the kernel cache {directory}: {exc}") from exc
        command = [compiler, *flags, "-I", str(source.parent), "-o", temporary, str(source)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                os.replace(temporary, target)
                return target
            errors.append(f"`{' '.join(command)}` failed: {done.stderr.strip()[-2000:]}")
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"`{' '.join(command)}`: {exc}")
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    raise NativeBuildError("; ".join(errors))


class _ThreadSplit:
    """Runs ``call(begin, end)`` over ``range(n)`` split across ``torch.get_num_threads()`` threads (ctypes
    releases the GIL), or directly when one thread or too little work."""

    def __init__(self, min_per_thread: int) -> None:
        self.min_per_thread = min_per_thread
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size, self._pool_pid = 0, 0
        self._lock = threading.Lock()

    def __call__(self, call, n: int) -> None:  # noqa: ANN001
        workers = min(torch.get_num_threads(), n // max(1, self.min_per_thread))
        if workers <= 1:
            call(0, n)
            return
        with self._lock:
            # a new pool when it is too small or this is a forked child (the parent's threads do not exist here);
            # a replaced pool's idle threads end with it
            if self._pool is None or self._pool_size < workers or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ffnet-native")
                self._pool_size, self._pool_pid = workers, os.getpid()
            pool = self._pool
        bounds = [n * i // workers for i in range(workers + 1)]
        for future in [pool.submit(call, bounds[i], bounds[i + 1]) for i in range(workers)]:
            future.result()


def _shares_torch_openmp(library: ctypes.CDLL, symbol: str) -> bool:
    """Whether ``library`` (built with ``-fopenmp``) runs on the OpenMP runtime PyTorch's own parallel ops use: its
    ``symbol()`` returns the address of its ``omp_get_num_threads``, compared with the one ``libtorch_cpu`` links."""
    try:
        ours = getattr(library, symbol)
        torch_cpu = ctypes.CDLL(str(Path(torch.__file__).resolve().parent / "lib" / "libtorch_cpu.so"))
        theirs = ctypes.cast(torch_cpu.omp_get_num_threads, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return False
    ours.restype = ctypes.c_void_p
    return bool(theirs) and ours() == theirs


class _TeamSplit:
    """Splits a kernel's channels across ``torch.get_num_threads()`` threads on PyTorch's own OpenMP team (the
    library's ``*_parallel`` entry) where the library shares PyTorch's runtime, else through :class:`_ThreadSplit`.

    Why: PyTorch's OpenMP workers spin-wait for ~10 ms after each of its parallel ops; a separate pool's threads
    then compete with them for the cores (on a 2-core AVX2 EPYC a 2-thread Toeplitz product right after a PyTorch op
    took 22.5 ms in the Python pool, 15.0 ms on PyTorch's team, 15.1 ms either way in isolation; whole 2-thread
    ETTh1 steps lost ~7 % to it; the team path of ``small_bmm.c`` also splits columns where there are few
    products). A forked child uses the Python pool: GNU OpenMP's team does not survive a fork."""

    def __init__(self, library: ctypes.CDLL, runtime_symbol: str, min_per_thread: int) -> None:
        self.shared = _shares_torch_openmp(library, runtime_symbol)
        self.min_per_thread = min_per_thread
        self._pid = os.getpid()
        self._pool = _ThreadSplit(min_per_thread)

    def __call__(self, serial, team, args: tuple, n: int) -> list:  # noqa: ANN001
        """``serial(*args, begin, end)`` over ``range(n)`` in the pool, or ``team(*args, n, threads)`` (a library's
        ``*_parallel`` entry, or None where the build has none) on PyTorch's team; the calls' return values."""
        threads = min(torch.get_num_threads(), n // max(1, self.min_per_thread))
        if self.shared and team is not None and threads > 1 and os.getpid() == self._pid:
            return [team(*args, n, threads)]
        results: list = []
        self._pool(lambda begin, end: results.append(serial(*args, begin, end)), n)
        return results


def _parallel_entry(library: ctypes.CDLL, name: str, argtypes: list) -> object | None:  # noqa: ANN401
    """``library.name`` with the given argtypes (then ``channels: int64, threads: int``), or None where the build
    has no OpenMP entries (no ``-fopenmp``)."""
    try:
        entry = getattr(library, name)
    except AttributeError:
        return None
    entry.argtypes = [*argtypes, ctypes.c_int64, ctypes.c_int]
    entry.restype = None
    return entry


def _check_float32(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        if tensor.dtype != torch.float32 or tensor.device.type != "cpu" or not tensor.is_contiguous():
            raise ValueError(f"native kernels take contiguous float32 CPU tensors, got {tensor.dtype} "
                             f"{tuple(tensor.shape)} on {tensor.device} (contiguous={tensor.is_contiguous()})")


class FFNGeluKernels:
    """Tensor-level wrappers of ``csrc/ffn_gelu.c`` (see that file for the layout). All tensors: CPU, contiguous;
    ``h``/``a``/``grad_a``/``grad_h``/``grad_bias`` float32, ``keep`` bool of ``h``'s shape or None. ``p == 0``
    means no regrouping. Large slices are split by rows across ``torch.get_num_threads()`` threads (on PyTorch's
    OpenMP team where the build shares its runtime, see :class:`_TeamSplit`)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._forward, self._backward = library.ffn_gelu_forward, library.ffn_gelu_backward
        self._forward.argtypes = [ptr, ptr, ptr] + [i64] * 6
        self._backward.argtypes = [ptr] * 6 + [i64] * 6
        self._forward.restype = self._backward.restype = None
        self._rows = _TeamSplit(library, "ffn_gelu_openmp_runtime", _MIN_ROWS_PER_THREAD)
        self._forward_team = _parallel_entry(library, "ffn_gelu_forward_parallel", [ptr, ptr, ptr] + [i64] * 4)
        self._backward_team = _parallel_entry(library, "ffn_gelu_backward_parallel", [ptr] * 6 + [i64] * 4)

    @staticmethod
    def _check(keep: torch.Tensor | None, *tensors: torch.Tensor) -> int:
        _check_float32(*tensors)
        h = tensors[0]
        if keep is not None and (keep.dtype != torch.bool or keep.shape != h.shape or not keep.is_contiguous()):
            raise ValueError(f"keep must be a contiguous bool tensor of shape {tuple(h.shape)}")
        if any(t.numel() != h.numel() for t in tensors[1:3]):
            raise ValueError("native ffn_gelu kernels: h, a (and grad_a, grad_h) must have the same number of values")
        return keep.data_ptr() if keep is not None else 0

    def forward(self, h: torch.Tensor, keep: torch.Tensor | None, a: torch.Tensor, p: int, q: int) -> torch.Tensor:
        """``a = regroup(keep * GELU(h))`` for ``h = [G1, P*Q, s]``; returns ``a``."""
        keep_ptr = self._check(keep, h, a)
        g1, _, s = h.shape
        self._rows(self._forward, self._forward_team, (h.data_ptr(), keep_ptr, a.data_ptr(), g1, p, q, s),
                   h.shape[0] * h.shape[1])
        return a

    def backward(self, h: torch.Tensor, keep: torch.Tensor | None, grad_a: torch.Tensor, a: torch.Tensor,
                 grad_h: torch.Tensor, grad_bias: torch.Tensor, p: int, q: int) -> None:
        """``a = regroup(keep * GELU(h))``, ``grad_h = keep * GELU'(h) * ungroup(grad_a)``, ``grad_bias += grad_h
        summed over s`` (``grad_bias``: ``G1*P*Q`` values)."""
        keep_ptr = self._check(keep, h, a, grad_a, grad_h)
        rows = h.shape[0] * h.shape[1]
        if grad_bias.dtype != torch.float32 or grad_bias.numel() != rows or not grad_bias.is_contiguous():
            raise ValueError(f"grad_bias must be a contiguous float32 tensor of {rows} values")
        if len({t.data_ptr() for t in (h, a, grad_a, grad_h)}) != 4:
            raise ValueError("native ffn_gelu backward: h, grad_a, a and grad_h must be distinct buffers")
        g1, _, s = h.shape
        args = (h.data_ptr(), keep_ptr, grad_a.data_ptr(), a.data_ptr(), grad_h.data_ptr(), grad_bias.data_ptr(),
                g1, p, q, s)
        self._rows(self._backward, self._backward_team, args, rows)


class SmallBmmKernel:
    """Tensor-level wrapper of ``csrc/small_bmm.c``: ``x @ t (+ bias)`` per product for ``x = [C, M, K]`` (any
    strides), ``t = [C, K, N]`` and ``out = [C, M, N]`` (rows contiguous, any row and product strides, so both can be
    column slices of wider tensors), float32 on CPU; products are split across threads. ``isa``/``vectorized``: the
    code path the build compiled (see the module docstring)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._call = library.small_bmm
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._call.argtypes = [ptr] * 4 + [i64] * 12 + [ctypes.c_int] + [i64] * 2
        self._call.restype = None
        library.small_bmm_vectorized.restype = ctypes.c_int
        self.isa = ISAS[library.small_bmm_vectorized()]  # the code path compiled: "avx512", "avx2" or "plain"
        self.vectorized = self.isa != "plain"
        self._parallel = _parallel_entry(library, "small_bmm_parallel", self._call.argtypes[:-2])
        self._channels = _TeamSplit(library, "small_bmm_openmp_runtime", 8)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, bias: torch.Tensor | None = None,
                 out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
        """``out = x @ t + bias`` (``accumulate``: ``out += x @ t + bias``); returns ``out``. ``bias``: ``[C]`` (one
        value per product) or ``[C, M]`` / ``[C, M, 1]`` (one per output row), contiguous."""
        channels, m, k = x.shape
        if t.dim() != 3 or t.shape[:2] != (channels, k):
            raise ValueError(f"small_bmm: t must be [{channels}, {k}, N], got {tuple(t.shape)}")
        for name, tensor in (("x", x), ("t", t)):
            if tensor.dtype != torch.float32 or tensor.device.type != "cpu" or min(tensor.stride()) < 0:
                raise ValueError(f"small_bmm: {name} must be float32 on CPU, got {tensor.dtype} on {tensor.device}")
        n = t.shape[2]
        out = x.new_empty(channels, m, n) if out is None else out
        if out.shape != (channels, m, n) or out.dtype != torch.float32 or out.device.type != "cpu":
            raise ValueError(f"small_bmm: out must be a float32 CPU tensor of shape [{channels}, {m}, {n}]")
        if (t.stride(2) != 1 and n > 1) or (out.stride(2) != 1 and n > 1):
            raise ValueError("small_bmm: the rows of t and out must be contiguous (last stride 1)")
        bs_c, bs_m = 0, 0
        if bias is not None:
            _check_float32(bias)
            if bias.numel() == channels:
                bs_c = 1
            elif bias.numel() == channels * m:
                bs_c, bs_m = m, 1
            else:
                raise ValueError(f"small_bmm: bias must have {channels} (per product) or {channels * m} (per row) values")
        if out.numel() == 0:  # an empty batch: nothing to compute (and empty tensors share the null pointer)
            return out
        if out.data_ptr() in (x.data_ptr(), t.data_ptr()):
            raise ValueError("small_bmm: out must not share memory with x or t")
        xs_c, xs_m, xs_k = x.stride()
        ts_c, ts_k, _ = t.stride()
        ys_c, ys_m, _ = out.stride()
        bias_ptr = bias.data_ptr() if bias is not None else None
        args = (x.data_ptr(), t.data_ptr(), bias_ptr, out.data_ptr(), m, k, n, xs_c, xs_m, xs_k, ts_c, ts_k, ys_c, ys_m,
                bs_c, bs_m, int(accumulate))
        self._channels(self._call, self._parallel, args, channels)
        return out


class DwConvKernels:
    """Tensor-level wrappers of ``csrc/dwconv_small.c``: a depthwise 'same' conv with an odd kernel of at most
    ``MAX_KERNEL`` taps over rows of at most ``MAX_LENGTH`` positions on channel-major ``x = [C, B, L]`` (any
    channel/row strides, rows contiguous), float32 on CPU, and its weight/bias gradient; channels are split across
    threads. ``isa``/``vectorized``: the code path the build compiled (see the module docstring)."""

    MAX_KERNEL, MAX_LENGTH = 15, 64

    def __init__(self, library: ctypes.CDLL) -> None:
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._forward, self._grad_weight = library.dwconv_forward, library.dwconv_grad_weight
        self._forward.argtypes = self._grad_weight.argtypes = [ptr] * 4 + [i64] * 7
        self._forward.restype = self._grad_weight.restype = None
        library.dwconv_vectorized.restype = ctypes.c_int
        self.isa = ISAS[library.dwconv_vectorized()]  # the code path compiled: "avx512", "avx2" or "plain"
        self.vectorized = self.isa != "plain"
        self._forward_parallel = _parallel_entry(library, "dwconv_forward_parallel", self._forward.argtypes[:-2])
        self._grad_weight_parallel = _parallel_entry(library, "dwconv_grad_weight_parallel",
                                                     self._grad_weight.argtypes[:-2])
        self._channels = _TeamSplit(library, "dwconv_openmp_runtime", 8)

    def _check(self, x: torch.Tensor, k: int, weight: torch.Tensor | None = None) -> tuple[int, int, int]:
        channels, batch, length = x.shape
        if (weight is not None and weight.numel() != channels * k) or k % 2 != 1 or k > self.MAX_KERNEL:
            raise ValueError(f"dwconv: weight must hold {channels} odd kernels of <= {self.MAX_KERNEL} taps, "
                             f"got {tuple(weight.shape)}")
        if x.dtype != torch.float32 or x.device.type != "cpu" or (x.stride(2) != 1 and length > 1):
            raise ValueError(f"dwconv: x must be float32 on CPU with contiguous rows, got {x.dtype} {x.stride()}")
        if length > self.MAX_LENGTH:
            raise ValueError(f"dwconv: rows of at most {self.MAX_LENGTH} positions, got {length}")
        if weight is not None:
            _check_float32(weight)
        return channels, batch, length

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``conv1d(x, weight, bias, padding=K // 2, groups=C)`` on ``[C, B, L]`` -> contiguous ``[C, B, L]``."""
        k = weight.shape[-1]
        channels, batch, length = self._check(x, k, weight)
        if bias is not None:
            _check_float32(bias)
            if bias.numel() != channels:
                raise ValueError(f"dwconv: bias must hold {channels} values (one per channel), got {tuple(bias.shape)}")
        out = x.new_empty(channels, batch, length)
        bias_ptr = bias.data_ptr() if bias is not None else None
        args = (x.data_ptr(), weight.data_ptr(), bias_ptr, out.data_ptr(), batch, length, k, x.stride(0), x.stride(1))
        self._channels(self._forward, self._forward_parallel, args, channels)
        return out

    def grad_weight(self, x: torch.Tensor, grad: torch.Tensor, k: int, with_bias: bool) -> tuple[torch.Tensor, ...]:
        """The ``[C, K]`` weight gradient (and the ``[C]`` bias gradient, or None) for output gradient ``grad``."""
        channels, batch, length = self._check(x, k)
        _check_float32(grad)
        if grad.shape != x.shape:
            raise ValueError(f"dwconv: grad must be {tuple(x.shape)}, got {tuple(grad.shape)}")
        grad_w = x.new_empty(channels, k)
        grad_b = x.new_empty(channels) if with_bias else None
        args = (x.data_ptr(), grad.data_ptr(), grad_w.data_ptr(), grad_b.data_ptr() if grad_b is not None else None,
                batch, length, k, x.stride(0), x.stride(1))
        parallel = self._grad_weight_parallel
        self._channels(self._grad_weight, parallel, args, channels)
        return grad_w, grad_b


class BatchNormKernels:
    """Tensor-level wrappers of ``csrc/batchnorm.c``: training-mode BatchNorm over ``x = [G, C, S]`` (statistics
    per channel over G and S; any G/C strides, S contiguous), float32 on CPU, forward and backward, channels split
    across threads. ``isa``/``vectorized``: the code path the build targets (see the module docstring)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._forward, self._backward = library.bn_forward, library.bn_backward
        self._forward.argtypes = [ptr] * 3 + [ctypes.c_float] + [ptr] * 4 + [i64] * 7
        self._backward.argtypes = [ptr] * 8 + [i64] * 7
        self._forward.restype = self._backward.restype = None
        library.bn_vectorized.restype = ctypes.c_int
        self.isa = ISAS[library.bn_vectorized()]
        self.vectorized = self.isa != "plain"
        self._forward_parallel = _parallel_entry(library, "bn_forward_parallel", self._forward.argtypes[:-2])
        self._backward_parallel = _parallel_entry(library, "bn_backward_parallel", self._backward.argtypes[:-2])
        self._channels = _TeamSplit(library, "bn_openmp_runtime", 1)

    @staticmethod
    def _check(x: torch.Tensor, *vectors: torch.Tensor | None) -> tuple[int, int, int]:
        if x.dim() != 3 or x.dtype != torch.float32 or x.device.type != "cpu" or (x.stride(2) != 1 and x.shape[2] > 1):
            raise ValueError(f"batch_norm: x must be a float32 CPU [G, C, S] tensor with contiguous rows, got "
                             f"{x.dtype} {tuple(x.shape)} strides {x.stride()} on {x.device}")
        channels = x.shape[1]
        for vector in vectors:
            if vector is not None:
                _check_float32(vector)
                if vector.numel() != channels:
                    raise ValueError(f"batch_norm: per-channel vectors must hold {channels} values, got "
                                     f"{tuple(vector.shape)}")
        return x.shape[0], channels, x.shape[2]

    @staticmethod
    def _ptr(tensor: torch.Tensor | None) -> int | None:
        return tensor.data_ptr() if tensor is not None else None

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y, mean, var, invstd)``: y contiguous ``[G, C, S]``, the batch statistics ``[C]`` (var biased)."""
        g, c, s = self._check(x, weight, bias)
        y, mean, var, invstd = x.new_empty(g, c, s), x.new_empty(c), x.new_empty(c), x.new_empty(c)
        args = (x.data_ptr(), self._ptr(weight), self._ptr(bias), eps, y.data_ptr(), mean.data_ptr(),
                var.data_ptr(), invstd.data_ptr(), g, c, s, x.stride(0), x.stride(1))
        self._channels(self._forward, self._forward_parallel, args, c)
        return y, mean, var, invstd

    def backward(self, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, mean: torch.Tensor,
                 invstd: torch.Tensor, need_x: bool = True, need_params: bool = True
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """``(grad_x, grad_weight, grad_bias)`` for output gradient ``grad`` (None where not asked for)."""
        g, c, s = self._check(x, weight, mean, invstd)
        _check_float32(grad)
        if grad.shape != x.shape:
            raise ValueError(f"batch_norm: grad must be {tuple(x.shape)}, got {tuple(grad.shape)}")
        grad_x = x.new_empty(g, c, s) if need_x else None
        grad_w, grad_b = (x.new_empty(c), x.new_empty(c)) if need_params else (None, None)
        args = (x.data_ptr(), grad.data_ptr(), self._ptr(weight), mean.data_ptr(), invstd.data_ptr(),
                self._ptr(grad_x), self._ptr(grad_w), self._ptr(grad_b), g, c, s, x.stride(0), x.stride(1))
        self._channels(self._backward, self._backward_parallel, args, c)
        return grad_x, grad_w, grad_b


def _batch_norm_self_check(kernels: BatchNormKernels) -> None:
    """Forward statistics and output, input/weight/bias gradients against ``F.batch_norm`` on a channel-strided
    ``[G, C, S]`` input with a ragged row length."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 7, 37, generator=g) * 3 + 5)[:, 1:6]  # [3, 5, 37], channel stride 37, group stride 259
    w, b, grad = torch.randn(5, generator=g), torch.randn(5, generator=g), torch.randn(3, 5, 37, generator=g)
    ref_x, ref_w, ref_b = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
    reference = torch.nn.functional.batch_norm(ref_x, None, None, ref_w, ref_b, training=True, eps=1e-5)
    reference.backward(grad)
    y, mean, var, invstd = kernels.forward(x, w, b, 1e-5)
    grad_x, grad_w, grad_b = kernels.backward(grad, x, w, mean, invstd)
    worst = max(float((y - reference.detach()).abs().max()), float((grad_x - ref_x.grad).abs().max()),
                float((grad_w - ref_w.grad).abs().max()), float((grad_b - ref_b.grad).abs().max()),
                float((var - x.var((0, 2), unbiased=False)).abs().max()) / 9)
    if not worst < 1e-4:
        raise NativeBuildError(f"batchnorm kernels disagree with F.batch_norm by {worst:.3g} (expected < 1e-4)")


def _dwconv_self_check(kernels: DwConvKernels) -> None:
    """Forward, input gradient (reversed kernel) and weight/bias gradients against conv1d, with a row-strided x
    and rows shorter than the kernel."""
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for length in (37, 3):
        x = torch.randn(5, 4, length + 2, generator=g)[:, :, 1:length + 1]  # [C=5, B=4, L] with a row stride
        w, b = torch.randn(5, 1, 5, generator=g), torch.randn(5, generator=g)
        ref_in = x.transpose(0, 1).detach().requires_grad_()
        ref_w, ref_b = w.clone().requires_grad_(), b.clone().requires_grad_()
        reference = torch.nn.functional.conv1d(ref_in, ref_w, ref_b, padding=2, groups=5)
        grad = torch.randn(reference.shape, generator=g)
        reference.backward(grad)
        grad_cm = grad.transpose(0, 1).contiguous()
        out = kernels.forward(x, w, b)
        grad_x = kernels.forward(grad_cm, w.flip(-1).contiguous())
        grad_w, grad_b = kernels.grad_weight(x, grad_cm, 5, True)
        worst = max(worst, float((out - reference.detach().transpose(0, 1)).abs().max()),
                    float((grad_x - ref_in.grad.transpose(0, 1)).abs().max()),
                    float((grad_w - ref_w.grad.view(5, 5)).abs().max()), float((grad_b - ref_b.grad).abs().max()))
    if not worst < 1e-4:
        raise NativeBuildError(f"dwconv kernels disagree with conv1d by {worst:.3g} (expected < 1e-4)")


def _ffn_gelu_self_check(kernels: FFNGeluKernels) -> None:
    """Compare the built kernels with PyTorch's exact GELU and its derivative on a grid (guards against a
    miscompiled or mis-flagged build)."""
    x = torch.linspace(-12.0, 12.0, 3 * 4 * 2 * 37).view(3, 8, 37)  # G1=3, P=4, Q=2, s=37 (a ragged tail)
    keep = torch.arange(x.numel()).view_as(x) % 3 != 0
    a = kernels.forward(x, keep, torch.empty(4, 6, 37), 4, 2)
    reference = (torch.nn.functional.gelu(x) * keep).view(3, 4, 2, 37).permute(1, 2, 0, 3).reshape(4, 6, 37)
    grad_a = torch.ones(4, 6, 37)
    a2, grad_h, grad_bias = torch.empty_like(a), torch.empty_like(x), torch.zeros(24)
    kernels.backward(x, keep, grad_a, a2, grad_h, grad_bias, 4, 2)
    derivative = torch.ops.aten.gelu_backward(torch.ones_like(x), x) * keep
    worst = max(float((a - reference).abs().max()), float((a2 - reference).abs().max()),
                float((grad_h - derivative).abs().max()), float((grad_bias - derivative.sum(-1).view(-1)).abs().max()))
    if not worst < 1e-5:
        raise NativeBuildError(f"ffn_gelu kernels disagree with torch's GELU by {worst:.3g} (expected < 1e-5)")


def _small_bmm_self_check(kernel: SmallBmmKernel) -> None:
    """Both layouts (plain and transposed x), ragged row and column tails, bias and accumulate, column slices of t and
    out with per-row bias, a long K over far-apart rows of t (packed and chunked on AVX2), against bmm."""
    g = torch.Generator().manual_seed(0)
    x, t, bias = torch.randn(3, 21, 37, generator=g), torch.randn(3, 37, 53, generator=g), torch.randn(3, generator=g)
    worst = float((kernel(x, t, bias) - torch.baddbmm(bias.view(3, 1, 1), x, t)).abs().max())
    xt = torch.randn(3, 37, 21, generator=g).transpose(1, 2)
    out = torch.ones(3, 21, 53)
    worst = max(worst, float((kernel(xt, t, out=out, accumulate=True) - (torch.bmm(xt, t) + 1)).abs().max()))
    wide_t, wide_out, rows = torch.randn(3, 37, 70, generator=g), torch.zeros(3, 21, 60), torch.randn(3, 21, generator=g)
    got = kernel(x, wide_t[:, :, 5:58], rows, out=wide_out[:, :, 2:55])
    worst = max(worst, float((got - torch.baddbmm(rows.unsqueeze(-1), x, wide_t[:, :, 5:58])).abs().max()),
                float(wide_out[:, :, :2].abs().max()) + float(wide_out[:, :, 55:].abs().max()))
    # a long K over rows of t pages apart (the FFN products): the AVX2 build packs t and splits K into chunks
    x, t = torch.randn(1, 6, 200, generator=g), torch.randn(1, 200, 1030, generator=g)[:, :, 1:1028]
    worst = max(worst, float((kernel(x, t) - torch.bmm(x, t)).abs().max()) / 4)  # sums of 200 products
    if not worst < 1e-4:
        raise NativeBuildError(f"small_bmm kernel disagrees with torch.bmm by {worst:.3g} (expected < 1e-4)")


_loaded: dict[str, object] = {}
_load_lock = threading.Lock()


_disabled = 0
_disabled_sources: dict[str, int] = {}
_plain = 0


@contextlib.contextmanager
def disabled(*sources: str) -> Iterator[None]:
    """Inside, the kernel getters return None, so callers take their PyTorch paths (as on a machine without a C
    compiler): for A/B benchmarks and tests. ``sources`` (e.g. ``"small_bmm.c"``) limits it to those libraries; none
    means all. Process-wide, nestable; autograd Functions already created keep the kernels they were given."""
    global _disabled
    known = {"ffn_gelu.c", "small_bmm.c", "dwconv_small.c", "nhwc.c", "batchnorm.c"}
    if set(sources) - known:
        raise ValueError(f"disabled(): unknown kernel sources {sorted(set(sources) - known)}; known: {sorted(known)}")
    if not sources:
        _disabled += 1
    for source in sources:
        _disabled_sources[source] = _disabled_sources.get(source, 0) + 1
    try:
        yield
    finally:
        if not sources:
            _disabled -= 1
        for source in sources:
            _disabled_sources[source] -= 1


@contextlib.contextmanager
def plain_builds() -> Iterator[None]:
    """Inside, the SIMD kernels are offered even where this build is not one :data:`OFFERED_ISAS` lists (a plain C
    build: slow, but the same operators), so their plumbing (autograd, tracing, validation) can be checked on any
    CPU; where the build is AVX-512 or AVX2 nothing changes. For tests; process-wide, nestable; compiled graphs keep
    the choice they were traced with."""
    global _plain
    _plain += 1
    try:
        yield
    finally:
        _plain -= 1


def _build_for_load(source: str) -> Path:
    """The library ``_load`` uses: with ``-fopenmp`` for the sources that have OpenMP entries (see
    :class:`_TeamSplit`), else, or where that build fails (a compiler without OpenMP), without it."""
    if source in _OPENMP_SOURCES:
        with contextlib.suppress(NativeBuildError):
            return build_library(_SOURCE_DIR / source, extra_flags=("-fopenmp",))
    return build_library(_SOURCE_DIR / source)


def _load(source: str, wrapper, self_check):  # noqa: ANN001, ANN202
    """Build, wrap and self-check one kernel library once per process; None where that fails or is disabled."""
    if _disabled or _disabled_sources.get(source):
        return None
    if source in _loaded:
        return _loaded[source]
    with _load_lock:
        if source in _loaded:
            return _loaded[source]
        result = None
        if os.environ.get("FFNET_NATIVE", "1") != "0" and os.name == "posix":
            try:
                result = wrapper(ctypes.CDLL(str(_build_for_load(source))))
                # the self-checks compare against autograd: the caller's first use may sit under no_grad() or
                # inference_mode() (an evaluation script), which must neither break the check nor be changed by it
                with torch.inference_mode(False), torch.enable_grad():
                    self_check(result)
            except (NativeBuildError, OSError, AttributeError, RuntimeError) as exc:
                _LOG.warning("metamixer: fused C kernels (%s) unavailable, using the PyTorch path (%s)", source, exc)
                result = None
        _loaded[source] = result
        return result


def select(native: bool | None, getter, name: str, *tensors: torch.Tensor | None) -> bool:  # noqa: ANN001
    """The one rule for a caller's ``native=`` argument, answering whether to run ``getter``'s kernels: False ->
    False; None -> whether every given tensor is float32 on CPU (None entries ignored) and the kernels are
    available; True -> the same, but an error naming ``name`` where the answer is no. Traceable by
    ``torch.compile`` (the availability is a constant of the process)."""
    if native is False:
        return False
    fits = all(t is None or (t.dtype == torch.float32 and t.device.type == "cpu") for t in tensors)
    ok = fits and _AVAILABLE[getter.__name__]()
    if native and not ok:
        raise RuntimeError(f"native=True: {name} needs float32 CPU tensors and a C build that works here (see "
                           "metamixer.kernels.native); " + ("it is not available" if fits else "got other tensors"))
    return ok


def ffn_gelu_kernels() -> FFNGeluKernels | None:
    """The fused GELU/mask/regroup kernels, built on first call; None where they are not available (see the module
    docstring). Thread-safe; the result is cached for the process."""
    return _load("ffn_gelu.c", FFNGeluKernels, _ffn_gelu_self_check)


def _offered(source: str, built):  # noqa: ANN001, ANN202
    """``built`` where its ISA pays (:data:`OFFERED_ISAS`) or inside :func:`plain_builds`, else None."""
    return built if built is not None and (built.isa in OFFERED_ISAS[source] or _plain) else None


def small_bmm_kernel() -> SmallBmmKernel | None:
    """The register-blocked small-matrix product, built on first call; None where it is not available or its ISA
    is not one it is offered for (see the module docstring)."""
    return _offered("small_bmm.c", _load("small_bmm.c", SmallBmmKernel, _small_bmm_self_check))


def dwconv_kernels() -> DwConvKernels | None:
    """The short-kernel depthwise conv kernels, built on first call; None where they are not available or their ISA
    is not one they are offered for (see the module docstring)."""
    return _offered("dwconv_small.c", _load("dwconv_small.c", DwConvKernels, _dwconv_self_check))


def batch_norm_kernels() -> BatchNormKernels | None:
    """The training-mode BatchNorm kernels, built on first call; None where they are not available or their ISA is
    not one they are offered for (see the module docstring)."""
    return _offered("batchnorm.c", _load("batchnorm.c", BatchNormKernels, _batch_norm_self_check))


# Availability as constants for torch.compile: evaluated once while tracing, so a compiled graph neither traces
# the build/self-check nor breaks on it (a graph keeps the choice it was compiled with, even inside disabled()).
@torch.compiler.assume_constant_result
def _ffn_gelu_available() -> bool:
    return ffn_gelu_kernels() is not None


@torch.compiler.assume_constant_result
def _small_bmm_available() -> bool:
    return small_bmm_kernel() is not None


@torch.compiler.assume_constant_result
def _dwconv_available() -> bool:
    return dwconv_kernels() is not None


@torch.compiler.assume_constant_result
def _batch_norm_available() -> bool:
    return batch_norm_kernels() is not None


_AVAILABLE = {"ffn_gelu_kernels": _ffn_gelu_available, "small_bmm_kernel": _small_bmm_available,
              "dwconv_kernels": _dwconv_available, "batch_norm_kernels": _batch_norm_available}
