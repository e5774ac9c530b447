"""Classify images: ``ffnet-cls-predict --checkpoint best.pth img1.jpg dir/ [--topk 5] [--classes names.txt]``.

Runs the fused (deploy) form by default, like ffnet-cls-eval; ``--unfused`` runs the train form.

Prints one JSON line per image with the top-k class names and probabilities (``--output FILE`` also writes
them, with the failed files, as one results.json). Class names come from the checkpoint (our runs store them) or a
text file with one name per line (e.g. for official ImageNet weights).

Every image is read with core's ``open_image``: EXIF orientation applied (a phone photo is classified upright),
grey / palette / RGBA / CMYK / 16-bit converted to RGB, decompression bombs refused before decoding. A file that
cannot be read gets one ``error:`` line and the run goes on; at the end the failed files are listed and the exit
code is 1 (every good image was still predicted). Wrong arguments stop before any work with exit code 2.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from metamixer.train.cli import build_eval_parser, positive_int
from metamixer.train.device import resolve_device
from metamixer.train.errors import FFNetError, SomeInputsFailed, for_each_input, run_cli
from metamixer.train.images import DEFAULT_MAX_PIXELS
from metamixer.train.outputs import check_output_file
from metamixer.train.results import write_results

from .data import IMAGE_EXTENSIONS, BadImageError, bad_reason, build_transforms, is_image_file, load_rgb
from .models.registry import load_model


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given, folders searched recursively for images; every missing path is named at once."""
    paths: list[Path] = []
    missing = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.rglob("*") if q.is_file() and is_image_file(q))
        elif p.is_file():
            paths.append(p)
        else:
            missing.append(str(p))
    if missing:
        raise FFNetError(f"input not found: {', '.join(missing)}")
    if not paths:
        raise FFNetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(inputs)}")
    return paths


def read_class_names(path: str, n: int) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise FFNetError(f"--classes: file not found: {path}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FFNetError(f"{path}: not a UTF-8 text file (expected one class name per line)") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != n:
        raise FFNetError(f"{path}: {len(names)} class names but the model predicts {n} classes")
    return names


@torch.no_grad()
def predict(
    checkpoint: str,
    inputs: Sequence[str],
    topk: int = 5,
    classes_file: str | None = None,
    model_name: str | None = None,
    use_ema: bool = False,
    fused: bool = True,
    batch_size: int = 32,
    device: str = "auto",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Top-k of every image in ``inputs``, in order; ``on_result`` sees each result as soon as its batch ran.

    An unreadable image is reported (one ``error:`` line, and ``on_failure(path, reason)``) and skipped; if any
    was, :class:`SomeInputsFailed` is raised after all the others were predicted (its message lists them).
    """
    paths = expand_inputs(inputs)
    dev = resolve_device(device, key="--device")
    loaded = load_model(checkpoint, model_name=model_name, use_ema=use_ema, fused=fused)
    model = loaded.model.to(dev).eval()
    channels_last = False
    if fused and dev.type == "cpu":
        from .models.cpu_opt import prepare_for_inference

        model, channels_last = prepare_for_inference(model), True  # same function, faster on CPU
    n = model.num_classes
    names = read_class_names(classes_file, n) if classes_file else (loaded.classes or [str(i) for i in range(n)])
    pcfg = model.pretrained_cfg
    dcfg = (loaded.config or {}).get("data", {})
    tf = build_transforms(False, dcfg.get("input_size") or pcfg["input_size"][-1],
                          dcfg.get("crop_pct") or pcfg["crop_pct"], dcfg.get("interpolation") or pcfg["interpolation"],
                          tuple(dcfg.get("mean") or pcfg["mean"]), tuple(dcfg.get("std") or pcfg["std"]))
    k = min(topk, n)
    results: list[dict[str, Any]] = []
    pending: list[tuple[Path, torch.Tensor]] = []

    def run_pending() -> None:
        if not pending:
            return
        x = torch.stack([t for _, t in pending]).to(dev)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        top = model(x).float().softmax(-1).topk(k, dim=-1)
        for (p, _), vals, idx in zip(pending, top.values.tolist(), top.indices.tolist()):
            result = {"image": str(p), "top": [{"class": names[j], "index": j, "prob": round(v, 6)}
                                               for v, j in zip(vals, idx)]}
            results.append(result)
            if on_result is not None:
                on_result(result)
        pending.clear()

    def read(path: Path) -> None:
        try:
            image = load_rgb(path, max_pixels)
        except BadImageError as exc:
            if on_failure is not None:
                on_failure(str(path), bad_reason(str(path), exc))
            raise
        pending.append((path, tf(image)))
        if len(pending) == batch_size:
            run_pending()

    try:
        for_each_input(paths, read, what="image")
    except SomeInputsFailed:
        run_pending()  # the good images read after the last full batch
        raise
    run_pending()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = build_eval_parser("ffnet-cls-predict", "Top-k classes of images with probabilities (one JSON line per "
                          "image); unreadable files are reported and skipped (exit code 1).", overrides=False)
    p.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--classes", default=None, help="text file, one class name per line (index order)")
    p.add_argument("--model", default=None, help="architecture for official checkpoints (ffnet_1..4)")
    p.add_argument("--ema", action="store_true")
    p.add_argument("--unfused", action="store_true",
                   help="run the train form (default: the fused, re-parameterized deploy form)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images declaring more pixels (decompression bombs); default %(default)s")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps")
    a = p.parse_args(argv)
    check_output_file(a.output, "--output")
    t0 = time.time()
    results: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []

    def emit(result: dict[str, Any]) -> None:
        print(json.dumps(result), flush=True)
        results.append(result)

    failed: SomeInputsFailed | None = None
    try:
        predict(a.checkpoint, a.inputs, a.topk, a.classes, a.model, a.ema, not a.unfused, a.batch_size, a.device,
                a.max_pixels, on_result=emit, on_failure=lambda path, why: failures.append({"path": path, "reason": why}))
    except SomeInputsFailed as exc:
        failed = exc
    if a.output:  # also when some failed: every good image was predicted, and the failed ones are listed
        write_results(a.output, metrics={"images": len(results), "failed": len(failures)}, data=list(a.inputs),
                      checkpoint=a.checkpoint, wall_s=time.time() - t0, predictions=results, failed=failures)
    if failed is not None:
        raise failed
    return 0

cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
