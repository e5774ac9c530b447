"""torch.compile sees whole graphs: FFNet-TS in train mode with every native kernel on, FFNetSR-light and fused
FFNet-1 trace with 0 graph breaks, and their compiled outputs (and FFNet-TS's gradients) equal eager ones."""

from __future__ import annotations

import pytest
import torch

from metamixer.kernels import native

pytestmark = pytest.mark.skipif(native._compiler() is None, reason="no C compiler: the native paths are off")


def _no_breaks(model: torch.nn.Module, x: torch.Tensor) -> None:
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, [str(b.reason)[:300] for b in explained.break_reasons]


def test_ffnet_ts_train_mode_with_native_kernels() -> None:
    from ffnet_timeseries.models.ffnet_ts import FFNetTS

    torch.manual_seed(0)
    model = FFNetTS(7, 96, 24, dims=[32], num_blocks=[1], large_kernel=51, small_kernel=5, dropout=0.1).train()
    x = torch.randn(4, 96, 7)
    with native.plain_builds():  # every kernel library offered, whatever vector ISA this CPU has
        assert native.ffn_gelu_kernels() is not None and native.dwconv_kernels() is not None
        _no_breaks(model, x)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        outputs = []
        for run in (model, compiled):
            torch.manual_seed(1)  # the same dropout masks in both runs
            out = run(x)
            outputs.append([out, *torch.autograd.grad(out.square().mean(), list(model.parameters()))])
    for got, want in zip(outputs[1], outputs[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.parametrize("which", ["ffnetsr_light", "ffnet_1"])
def test_inference_models_trace_whole(which: str) -> None:
    torch.manual_seed(0)
    if which == "ffnetsr_light":
        from ffnet_sr.models import create_model

        model, x = create_model("ffnetsr_light", scale=2).eval(), torch.randn(1, 3, 24, 24)
    else:
        from ffnet_classification.models.registry import create_model

        model, x = create_model("ffnet_1").eval().fuse(), torch.randn(1, 3, 64, 64)
    _no_breaks(model, x)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="aot_eager", fullgraph=True)(x), model(x),
                                   rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


def test_sr_compiled_deploy_path_equals_the_plain_model(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """``ffnet_sr.prepare_for_inference(compile=True)``: inductor with frozen weights (constants folded, convs
    prepacked) under inference_mode gives the plain model's output; the training model is left untouched."""
    from ffnet_sr.inference import prepare_for_inference
    from ffnet_sr.models import create_model

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch.manual_seed(0)
    model = create_model("ffnetsr_light", scale=2, depth=2, dim=32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, 20, 28)
    compiled = prepare_for_inference(model, compile=True)
    with torch.inference_mode():
        reference = model(x)
        out = compiled(x)
        again = compiled(x)  # the cached graph
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)
    assert torch.equal(out, again)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    torch._dynamo.reset()
