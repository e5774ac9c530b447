"""Export the fused (deploy) model: ``ffnet-cls-export --checkpoint best.pth --output-dir exports [--formats onnx torchscript]``.

The model is re-parameterized first (one DW conv per RepVGG block, BN folded) and put in eval mode, so the
graph holds no BatchNorm of the mixers and no DropPath/``bernoulli``. ONNX comes from torch's
``torch.export``-based exporter (``dynamo=True``, needs ``onnxscript``) with a dynamic batch axis and is checked
in onnxruntime; TorchScript is checked by reloading; the max abs difference to the PyTorch fused model is
reported for both. ``--formats timm`` writes the run's train-form weights and EMA weights as a timm-style file
(``state_dict`` / ``state_dict_ema``, see :mod:`ffnet_classification.timm_checkpoint`), which timm's own
``load_checkpoint(use_ema=True)`` reads.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metamixer.train.cli import build_eval_parser, positive_int
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.outputs import check_output_file, check_output_folder
from metamixer.train.results import write_json

from .models.registry import load_model
from .timm_checkpoint import write_timm_checkpoint


def _forbidden_ops(graph_text: str) -> list[str]:
    return sorted({op for op in ("bernoulli", "dropout", "Dropout", "RandomUniform", "Bernoulli") if op in graph_text})


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Trace + freeze. TorchScript is deprecated upstream (torch 2.13 warns) but still what C++/mobile
    deployments and the authors' CoreML path consume, so it stays, with the deprecation warnings silenced."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
        traced = torch.jit.freeze(traced.eval())
    traced.save(str(path))
    bad = _forbidden_ops(str(traced.inlined_graph))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reloaded = torch.jit.load(str(path))
        diff = float((reloaded(example) - model(example)).abs().max())
    return {"path": str(path), "max_abs_diff": diff, "forbidden_ops": bad}


#: torch 2.13's own ``ExportedProgram.run_decompositions`` deep-copies a deprecated pytree ``LeafSpec`` and
#: warns (FutureWarning) on every export, for any model; the user cannot act on it, so only this message is muted.
_TORCH_INTERNAL_NOISE = r"`isinstance\(treespec, LeafSpec\)` is deprecated"

#: torch's ONNX op registry logs one warning per torchvision op when torchvision is absent; this app never
#: uses torchvision (and does not depend on it), so the lines are noise on every export.
_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"


class _DropTorchvisionMissing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("torchvision is not installed")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Mute only the two known, non-actionable messages of torch's exporter; everything else still shows."""
    log, flt = logging.getLogger(_REGISTRY_LOGGER), _DropTorchvisionMissing()
    log.addFilter(flt)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TORCH_INTERNAL_NOISE, category=FutureWarning)
            yield
    finally:
        log.removeFilter(flt)


#: the lowest opset torch's dynamo exporter has native implementations for; lower ones go through a lossy
#: version converter, so it is the default (onnxruntime runs opset 18 since 1.14).
DEFAULT_OPSET = 18


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True) -> dict[str, Any]:
    """Export with the ``torch.export``-based (dynamo) exporter and check the file in onnxruntime.

    The legacy TorchScript-based exporter (``dynamo=False``) is deprecated in torch 2.13. With
    ``dynamic_batch`` the batch axis is a symbolic ``torch.export.Dim`` (named ``batch`` in the ONNX graph),
    and the check runs a batch of 2 while the example has 1, so a graph specialized to the example's batch
    fails here, not in deployment. Weights are stored inside the ``.onnx`` file (``external_data=False``):
    one self-contained file; the largest variant (FFNet-4, ~320 MB in fp32) is far below protobuf's 2 GB.
    """
    try:
        import onnx
        import onnxruntime as ort
        import onnxscript  # noqa: F401 - the dynamo exporter needs it; fail here with the install hint
    except ImportError:
        raise FFNetError("ONNX export needs onnx, onnxruntime and onnxscript "
                         "(pip install ffnet-classification[export])") from None
    kwargs: dict[str, Any] = {"input_names": ["images"], "output_names": ["logits"], "opset_version": opset}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1)},)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False, **kwargs)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = sorted({n.op_type for n in proto.graph.node})
    bad = _forbidden_ops(" ".join(ops))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.cat([example, torch.randn_like(example)]) if dynamic_batch else example
    (out,) = sess.run(None, {"images": batch.numpy()})
    with torch.no_grad():
        ref = model(batch).numpy()
    diff = float(abs(out - ref).max())
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    return {"path": str(path), "max_abs_diff": diff, "forbidden_ops": bad, "ops": ops,
            "num_nodes": len(proto.graph.node), "opset": int(opset_used), "dynamic_batch": dynamic_batch,
            "checked_batch": int(batch.shape[0])}


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (what a failure must remove again)."""
    missing = None
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        missing = candidate
    return missing


def export_model(
    model: nn.Module,
    output_dir: str | Path,
    name: str = "model",
    input_size: int = 256,
    formats: Sequence[str] = ("onnx", "torchscript"),
    tolerance: float = 1e-4,
    report_path: str | Path | None = None,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Fuse ``model`` (if needed), export it, verify, and return a report (also saved as ``export.json``, or
    ``report_path``). The ``timm`` format re-reads ``checkpoint`` (it needs the EMA weights too).

    The files are written into a hidden staging folder inside ``output_dir`` and moved into place only after
    every check passed, so a failed export (a graph with training-only ops, outputs beyond ``tolerance``, a
    missing exporter) leaves no file behind, and no ``output_dir`` either when it did not exist before.
    """
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown:
        raise FFNetError(f"unknown export format(s) {', '.join(map(repr, unknown))}; expected {' or '.join(FORMATS)}")
    if "timm" in formats and checkpoint is None:
        raise FFNetError("the timm format is written from a run checkpoint (its EMA weights too): give --checkpoint")
    fused = model.fuse() if hasattr(model, "fuse") and not getattr(model, "is_fused", True) else model.eval()
    fused = fused.cpu().float().eval()
    example = torch.randn(1, getattr(fused, "in_chans", 3), input_size, input_size, generator=torch.Generator().manual_seed(0))
    out_dir = Path(output_dir)
    created = _first_missing(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", suffix=".tmp", dir=out_dir))
    try:
        report: dict[str, Any] = {"model": name, "input_size": input_size, "tolerance": tolerance}
        for fmt in formats:
            if fmt == "onnx":
                report["onnx"] = export_onnx(fused, example, staging / f"{name}_{input_size}.onnx")
            elif fmt == "timm":
                report["timm"] = write_timm_checkpoint(checkpoint, staging / f"{name}_timm.pth",  # type: ignore[arg-type]
                                                       getattr(model, "model_name", None))
            else:
                report["torchscript"] = export_torchscript(fused, example, staging / f"{name}_{input_size}.pt")
        for fmt in formats:
            r = report[fmt]
            if r["forbidden_ops"]:
                raise FFNetError(f"{fmt} graph contains training-only ops {r['forbidden_ops']}")
            if r["max_abs_diff"] > tolerance:
                raise FFNetError(f"{fmt} output differs from PyTorch by {r['max_abs_diff']:.3g} > {tolerance}")
        for fmt in formats:
            final = out_dir / Path(report[fmt]["path"]).name
            os.replace(report[fmt]["path"], final)  # same folder tree: an atomic rename per file
            report[fmt]["path"] = str(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    write_json(report_path if report_path is not None else out_dir / "export.json", report)
    return report


#: the formats ``--formats`` accepts
FORMATS = ("onnx", "torchscript", "timm")
#: what ``--formats`` writes when not given (the timm file is asked for explicitly)
DEFAULT_FORMATS = ("onnx", "torchscript")


def main(argv: Sequence[str] | None = None) -> int:
    p = build_eval_parser("ffnet-cls-export", "Fuse and export to ONNX / TorchScript (verified); nothing is left "
                          "in --output-dir unless every check passed.", checkpoint_required=False, overrides=False)
    p.add_argument("--model", default=None, help="architecture (required for official files, or to export random init)")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="with --model and no checkpoint")
    p.add_argument("--ema", action="store_true")
    p.add_argument("--input-size", type=positive_int, default=None, help="default: the model's (256; 384 for *_384)")
    p.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS), choices=FORMATS,
                   help="timm: the train-form weights + EMA weights as state_dict / state_dict_ema (timm's loader)")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--output-dir", required=True, help="folder for the exported files and export.json")
    a = p.parse_args(argv)
    if not (math.isfinite(a.tolerance) and a.tolerance >= 0):
        raise FFNetError(f"--tolerance must be a finite number >= 0, got {a.tolerance}")
    check_output_folder(a.output_dir, "--output-dir")
    check_output_file(a.output, "--output")
    run_cfg: dict[str, Any] = {}
    if a.checkpoint:
        loaded = load_model(a.checkpoint, model_name=a.model, use_ema=a.ema)
        model, run_cfg = loaded.model, loaded.config or {}
    elif a.model:
        from .models import create_model

        model = create_model(a.model, num_classes=a.num_classes)
    else:
        raise FFNetError("give --checkpoint PATH and/or --model NAME")
    name = getattr(model, "model_name", a.model or "model")
    size = a.input_size
    if size is None:
        size = run_cfg.get("data", {}).get("input_size") or model.pretrained_cfg["input_size"][-1]
    report = export_model(model, a.output_dir, name, size, a.formats, a.tolerance, report_path=a.output,
                          checkpoint=a.checkpoint)
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "ops"} if isinstance(v, dict) else v)
                      for k, v in report.items()}, indent=2))
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
