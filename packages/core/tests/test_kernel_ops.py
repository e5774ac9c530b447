"""metamixer.kernels as torch custom operators: every entry validates its tensors, every fast path equals the
pure-torch path over random shapes (batch 0 and 1 included), and torch.compile traces them without graph breaks.

The product and short-conv kernels are only *offered* where their build is AVX-512 or AVX2 + FMA; inside
native.plain_builds() a plain C build (a CPU with neither) is offered too, so the operator plumbing (schemas, fake
tensors, autograd) is tested on every CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metamixer.kernels import fastconv, native
from metamixer.kernels.fastconv import direct_depthwise_conv1d_cbl, toeplitz_depthwise_conv1d_cbl
from metamixer.kernels.fused_ffn import grouped_ffn, grouped_ffn_reference

pytestmark = pytest.mark.skipif(native._compiler() is None, reason="no C compiler")


def _build(source: str):  # noqa: ANN202
    wrapper, check = {"small_bmm.c": (native.SmallBmmKernel, native._small_bmm_self_check),
                      "dwconv_small.c": (native.DwConvKernels, native._dwconv_self_check),
                      "ffn_gelu.c": (native.FFNGeluKernels, native._ffn_gelu_self_check)}[source]
    built = native._load(source, wrapper, check)
    assert built is not None, f"{source} did not build or self-check"
    return built


@pytest.fixture
def every_kernel() -> None:
    """Make the product kernel and the depthwise loop available whatever this CPU's SIMD."""
    with native.plain_builds():
        assert native.small_bmm_kernel() is not None and native.dwconv_kernels() is not None
        yield


def _grads(out: torch.Tensor, *tensors: torch.Tensor | None, seed: int = 0) -> list[torch.Tensor]:
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    present = [t for t in tensors if t is not None]
    return list(torch.autograd.grad(out, present, grad)) if out.numel() else [torch.zeros_like(t) for t in present]


@pytest.mark.usefixtures("every_kernel")
@pytest.mark.parametrize("trial", range(6))
def test_depthwise_paths_equal_conv1d_on_random_shapes(trial: int) -> None:
    g = torch.Generator().manual_seed(trial)
    channels = int(torch.randint(1, 20, (1,), generator=g))
    batch = [0, 1, 3, 8, 1, 5][trial]
    length = int(torch.randint(1, 65, (1,), generator=g))
    kernel = [3, 5, 7, 15, 51, 9][trial]
    with_bias = trial % 2 == 0
    x = torch.randn(channels, batch, length, generator=g, requires_grad=True)
    w = torch.randn(channels, 1, kernel, generator=g, requires_grad=True)
    b = torch.randn(channels, generator=g, requires_grad=True) if with_bias else None
    ref = F.conv1d(x.transpose(0, 1), w, b, padding=kernel // 2, groups=channels).transpose(0, 1)
    want = [ref, *_grads(ref, x, w, b)]
    paths = {"toeplitz": toeplitz_depthwise_conv1d_cbl(x, w, b, kernel // 2, native=True)}
    if kernel <= fastconv.DIRECT_MAX_KERNEL:
        paths["direct"] = direct_depthwise_conv1d_cbl(x, w, b, native=True)
    for name, out in paths.items():
        got = [out, *_grads(out, x, w, b)]
        for a, e in zip(got, want, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.usefixtures("every_kernel")
def test_direct_loop_declines_even_kernels_and_long_rows() -> None:
    x, w = torch.randn(4, 2, 20), torch.randn(4, 1, 4)
    assert direct_depthwise_conv1d_cbl(x, w, None) is None
    with pytest.raises(RuntimeError, match="odd kernels"):
        direct_depthwise_conv1d_cbl(x, w, None, native=True)
    assert direct_depthwise_conv1d_cbl(torch.randn(4, 2, 65), torch.randn(4, 1, 5), None) is None


@pytest.mark.usefixtures("every_kernel")
@pytest.mark.parametrize("g1,c1,p,q,c2,regroup,positions,drop", [
    (3, 4, 2, 3, 5, True, 0, 0.0), (3, 4, 2, 3, 5, True, 1, 0.3), (4, 8, 4, 2, 8, False, 77, 0.0),
    (7, 2, 3, 4, 6, True, 130, 0.2),
])
def test_grouped_ffn_operator_equals_reference(g1: int, c1: int, p: int, q: int, c2: int, regroup: bool,
                                               positions: int, drop: float) -> None:
    torch.manual_seed(0)
    conv1 = nn.Conv1d(g1 * c1, g1 * p * q, 1, groups=g1)
    conv2 = nn.Conv1d(p * q * g1 if regroup else g1 * p * q, (p if regroup else g1) * c2, 1, groups=p if regroup else g1)
    x = torch.randn(g1, c1, positions, requires_grad=True)
    params = [x, conv1.weight, conv1.bias, conv2.weight, conv2.bias]
    results = []
    for native_flag in (True, False):
        torch.manual_seed(5)  # the same dropout mask on both paths
        out = grouped_ffn(x, conv1, conv2, drop, training=True, regroup=regroup, slice_len=64, native=native_flag)
        results.append([out, *_grads(out, *params)])
    if drop == 0.0:
        ref = grouped_ffn_reference(x, conv1, conv2, regroup=regroup)
        results.append([ref, *_grads(ref, *params)])
    for other in results[1:]:
        for a, e in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


def test_every_entry_rejects_bad_tensors_with_a_value_error() -> None:
    bmm, dw, gelu = _build("small_bmm.c"), _build("dwconv_small.c"), _build("ffn_gelu.c")
    x, t = torch.randn(3, 5, 7), torch.randn(3, 7, 4)
    meta = torch.empty(3, 5, 7, device="meta")
    cases = {
        "bmm bias size": lambda: bmm(x, t, torch.randn(2)),
        "bmm weight shape": lambda: bmm(x, torch.randn(3, 6, 4)),
        "bmm dtype": lambda: bmm(x.double(), t.double()),
        "bmm device": lambda: bmm(meta, t),
        "bmm non-contiguous rows": lambda: bmm(x, torch.randn(3, 4, 7).transpose(1, 2)),
        "dw bias size": lambda: dw.forward(torch.randn(8, 2, 10), torch.randn(8, 5), torch.randn(2)),
        "dw weight size": lambda: dw.forward(torch.randn(8, 2, 10), torch.randn(7, 5)),
        "dw even kernel": lambda: dw.forward(torch.randn(8, 2, 10), torch.randn(8, 4)),
        "dw dtype": lambda: dw.forward(torch.randn(8, 2, 10).double(), torch.randn(8, 5).double()),
        "dw device": lambda: dw.forward(torch.empty(8, 2, 10, device="meta"), torch.randn(8, 5)),
        "dw non-contiguous rows": lambda: dw.forward(torch.randn(8, 10, 2).transpose(1, 2), torch.randn(8, 5)),
        "dw grad size": lambda: dw.grad_weight(torch.randn(8, 2, 10), torch.randn(8, 2, 9), 5, True),
        "gelu dtype": lambda: gelu.forward(x.double(), None, torch.empty_like(x).double(), 0, 1),
        "gelu device": lambda: gelu.forward(meta, None, meta, 0, 1),
        "gelu non-contiguous": lambda: gelu.forward(x.transpose(1, 2), None, torch.empty(3, 7, 5), 0, 1),
        "gelu mask shape": lambda: gelu.forward(x, torch.ones(3, 5, 6, dtype=torch.bool), torch.empty_like(x), 0, 1),
        "gelu size": lambda: gelu.forward(x, None, torch.empty(3, 5, 6), 0, 1),
        "gelu bias size": lambda: gelu.backward(x, None, torch.randn_like(x), torch.empty_like(x), torch.empty_like(x),
                                                torch.zeros(4), 0, 1),
    }
    for name, call in cases.items():
        with pytest.raises(ValueError):
            call()
            pytest.fail(name)


@pytest.mark.usefixtures("every_kernel")
def test_compile_traces_the_operators_without_graph_breaks_and_matches_eager() -> None:
    class Mixer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.long = nn.Conv1d(6, 6, 13, padding=6, groups=6)
            self.short = nn.Conv1d(6, 6, 5, padding=2, groups=6)
            self.conv1, self.conv2 = nn.Conv1d(6, 12, 1, groups=2), nn.Conv1d(12, 6, 1, groups=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = fastconv.depthwise_conv1d_cbl(x, self.long) + fastconv.depthwise_conv1d_cbl(x, self.short)
            return grouped_ffn(y.reshape(2, 3, -1), self.conv1, self.conv2, 0.0, training=True,
                               regroup=False).reshape(6, 4, -1)

    torch.manual_seed(0)
    model, x = Mixer(), torch.randn(6, 4, 24)
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    eager_out = model(x)
    eager = [eager_out, *torch.autograd.grad(eager_out.sum(), list(model.parameters()))]
    out = compiled(x)
    got = [out, *torch.autograd.grad(out.sum(), list(model.parameters()))]
    for a, e in zip(got, eager, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    for op in ("grouped_ffn", "grouped_ffn_backward", "toeplitz_product", "dwconv_cbl", "keep_mask", "masked_scale"):
        assert hasattr(torch.ops.metamixer, op), op


def _flops(fn) -> int:  # noqa: ANN001
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("native_path", [False, True])
def test_flop_counter_sees_inside_the_ffn_operator(native_path: bool, every_kernel: None) -> None:
    """torch's flop counter cannot look inside a custom operator; the registered formulas must report what the
    whole-tensor reference runs: its two products forward, and in backward the reference's four plus the
    recomputed first product."""
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv1d(12, 24, 1, groups=3), nn.Conv1d(24, 8, 1, groups=2)
    x = torch.randn(3, 4, 40, requires_grad=True)
    op_forward = _flops(lambda: grouped_ffn(x, conv1, conv2, native=native_path))
    ref_forward = _flops(lambda: grouped_ffn_reference(x, conv1, conv2))
    first_product = 2 * 3 * 8 * 4 * 40
    assert op_forward == ref_forward > 0
    op_train = _flops(lambda: grouped_ffn(x, conv1, conv2, native=native_path).sum().backward())
    ref_train = _flops(lambda: grouped_ffn_reference(x, conv1, conv2).sum().backward())
    assert op_train == ref_train + first_product
