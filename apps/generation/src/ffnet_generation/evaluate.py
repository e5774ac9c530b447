"""Score a checkpoint's samples, score a samples file, or report model size and cost; writes ``results.json``.

``ffnet-gen-eval --checkpoint runs/x/last.pth [--output results.json] [--inception W --reference REF]
[eval.num_samples=... run.device=...]`` samples with the checkpoint's ``eval.*`` settings (EMA weights) and
scores them: FID / IS with the Inception weights, or, for a digits model without them, digits-FID.
``ffnet-gen-eval --samples samples.npz --reference VIRTUAL_imagenet256_labeled.npz --inception pt_inception.pth``
computes FID (against a folder of images, an ``.npz`` of images ``arr_0``, or precomputed ``mu``/``sigma``) and
the Inception Score (10 splits) with the FID InceptionV3 loaded from a local weights file.
``ffnet-gen-eval --model-info u_ffnet_b u_dit_b`` prints parameters and GMACs per 256x256 image (32x32x4 latent).

Protocol note: ADM's reference statistics were computed with the TensorFlow graph; this PyTorch port of the
same weights gives features that differ slightly (resize implementation), so FIDs against ADM's ``mu``/``sigma``
are close to, not identical with, ADM's evaluator. For exact paper comparisons use ADM's evaluator on the
``samples.npz`` written by ``ffnet-gen-sample`` (same layout).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from metamixer.nn.flops import count_macs, count_params
from metamixer.train.cli import build_eval_parser
from metamixer.train.errors import FFNetError, SomeInputsFailed, for_each_input, run_cli
from metamixer.train.outputs import check_output_file
from metamixer.train.results import write_results

from .data.images import DEFAULT_MAX_PIXELS, list_images, load_image
from .metrics.fid import FeatureStats, frechet_distance, inception_score, load_reference_stats, save_stats
from .metrics.inception import FID_WEIGHTS_NAME, FIDInceptionV3, load_fid_inception

__all__ = ["evaluate_samples", "evaluate_checkpoint", "model_info", "iter_image_batches", "main", "cli"]


def _npz_images(path: Path) -> np.ndarray:
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise FFNetError(f"cannot read {path}: {exc}") from None
    if "arr_0" not in data:
        raise FFNetError(f"{path}: expected images in 'arr_0' (ADM layout) or 'mu'/'sigma' statistics, "
                         f"found {list(data.keys())}")
    arr = data["arr_0"]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or arr.dtype != np.uint8:
        raise FFNetError(f"{path}: arr_0 must be uint8 NHWC images with 1 or 3 channels, got {arr.dtype} {arr.shape}")
    return arr


def _inception_input(path: Path, max_pixels: int | None) -> torch.Tensor:
    """One user image (core's reader: upright, RGB, pixel guard) as a float [0, 1] 1x3x299x299 tensor."""
    x = torch.from_numpy(np.asarray(load_image(path, 3, max_pixels)).copy()).permute(2, 0, 1).float()[None] / 255.0
    return torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)


def iter_image_batches(source: str | Path, batch_size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                       unreadable: list[Path] | None = None) -> Iterator[torch.Tensor]:
    """Float [0, 1] NCHW batches from an ``.npz`` (arr_0) or an image folder (each image resized to 299).

    A folder's unreadable images are reported one line each (core's ``for_each_input``), skipped, and
    appended to ``unreadable``; the batches hold every image that could be read."""
    source = Path(source)
    if source.suffix == ".npz":
        arr = _npz_images(source)
        for i in range(0, len(arr), batch_size):
            yield torch.from_numpy(arr[i:i + batch_size]).permute(0, 3, 1, 2).float() / 255.0
        return
    files = list_images(source)
    for i in range(0, len(files), batch_size):
        chunk, batch = files[i:i + batch_size], {}

        def read(path: Path, into: dict = batch) -> None:
            into[path] = _inception_input(path, max_pixels)

        try:  # for_each_input prints one line per bad file; its summary is replaced by the caller's
            for_each_input(chunk, read, what="image")
        except SomeInputsFailed:
            if unreadable is not None:
                unreadable.extend(f for f in chunk if f not in batch)
        if batch:
            yield torch.cat(list(batch.values()))


@torch.no_grad()
def _features(model, source, batch_size: int, device, max_pixels: int | None,
              unreadable: list[Path]) -> tuple[FeatureStats, np.ndarray]:
    stats, logits, before = FeatureStats(), [], len(unreadable)
    for batch in iter_image_batches(source, batch_size, max_pixels, unreadable):
        pool, lg = model(batch.to(device))
        stats.update(pool.double().cpu().numpy())
        logits.append(lg.double().cpu().numpy())
    if stats.n < 2:
        bad = f" ({len(unreadable) - before} unreadable, listed above)" if len(unreadable) > before else ""
        raise FFNetError(f"{source}: {stats.n} readable image(s){bad}; FID / IS need at least 2")
    return stats, np.concatenate(logits)


def _reference_stats(model, reference: str | Path, batch_size: int, device, max_pixels: int | None,
                     unreadable: list[Path]) -> tuple[np.ndarray, np.ndarray, str]:
    reference = Path(reference)
    if reference.suffix == ".npz":
        try:
            with np.load(reference) as data:
                has_stats = "mu" in data and "sigma" in data
        except (OSError, ValueError) as exc:
            raise FFNetError(f"--reference {reference}: cannot read it as .npz ({exc})") from None
        if has_stats:
            mu, sigma = load_reference_stats(reference)
            return mu, sigma, f"precomputed mu/sigma from {reference.name}"
    stats, _ = _features(model, reference, batch_size, device, max_pixels, unreadable)
    mu, sigma = stats.mean_cov()
    return mu, sigma, f"{stats.n} reference images from {reference.name}"


def evaluate_samples(samples: str | Path, *, inception: str, reference: str | None = None, batch_size: int = 50,
                     device: str = "cpu", save_sample_stats: str | None = None, splits: int = 10,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS, model: FIDInceptionV3 | None = None) -> dict:
    """FID (if ``reference``) and IS of ``samples``; every number carries the extractor and protocol used.

    ``model``: the Inception already loaded from ``inception`` (callers load it first, so that a wrong weights
    file stops them before any long work). Unreadable images of a folder are skipped (each reported) and listed
    in ``result["unreadable"]``: the scores are those of the images that could be read."""
    if batch_size < 1:
        raise FFNetError(f"--batch-size must be >= 1, got {batch_size}")
    name = Path(inception).name
    model = model if model is not None else load_fid_inception(inception, device)
    unreadable: list[Path] = []
    stats, logits = _features(model, samples, batch_size, device, max_pixels, unreadable)
    mu, sigma = stats.mean_cov()
    is_mean, is_std = inception_score(logits, splits=splits)
    extractor = f"FID InceptionV3 ({name}; pool3 2048-d, bilinear resize to 299)"
    result: dict = {"num_samples": stats.n, "feature_extractor": extractor,
                    "inception_score": is_mean, "inception_score_std": is_std,
                    "is_protocol": f"{splits} splits, softmax of unbiased 1008-way logits"}
    if stats.n < 10_000:
        result["warning"] = (f"only {stats.n} samples: FID is biased upwards for small N; published numbers "
                             "use 50,000 (FID-50K)")
    if reference:
        ref_mu, ref_sigma, ref_desc = _reference_stats(model, reference, batch_size, device, max_pixels, unreadable)
        result["fid"] = frechet_distance(mu, sigma, ref_mu, ref_sigma)
        result["fid_reference"] = ref_desc
    if save_sample_stats:  # last: a failure above leaves no statistics file behind
        save_stats(save_sample_stats, mu, sigma)
    result["unreadable"] = [str(p) for p in unreadable]
    return result


def _left_out(unreadable: Sequence[str], results: Path) -> SomeInputsFailed:
    listed = ", ".join(unreadable[:10]) + (f" and {len(unreadable) - 10} more" if len(unreadable) > 10 else "")
    return SomeInputsFailed(f"{len(unreadable)} unreadable image(s) were left out of the scores in {results} "
                            f"(listed there under 'unreadable'): {listed}")


def model_info(names: Sequence[str], input_size: int = 32, in_channels: int = 4, num_classes: int = 1000) -> list[dict]:
    """Params (train and deploy form) and MACs of one forward per image, built on the meta device (no memory)."""
    from . import create_model

    rows = []
    for name in names:
        with torch.device("meta"):
            model = create_model(name, input_size=input_size, in_channels=in_channels, num_classes=num_classes)
            fused = model.fuse()
            args = (torch.empty(1, in_channels, input_size, input_size), torch.zeros(1, dtype=torch.long),
                    torch.zeros(1, dtype=torch.long))
            rows.append({"model": name, "params_M": count_params(model) / 1e6,
                         "params_deploy_M": count_params(fused) / 1e6,
                         "gmacs": count_macs(model, *args) / 1e9, "gmacs_deploy": count_macs(fused, *args) / 1e9,
                         "input": f"{in_channels}x{input_size}x{input_size}"})
    return rows


def evaluate_checkpoint(checkpoint: str | Path, overrides: Sequence[str] = (), *, output: str | Path | None = None,
                        inception: str | None = None, reference: str | None = None, device: str | None = None,
                        batch_size: int = 50, max_pixels: int | None = DEFAULT_MAX_PIXELS
                        ) -> tuple[Path, dict, list[str]]:
    """Sample ``eval.num_samples`` images from a training checkpoint (EMA weights when ``train.eval_weights`` is
    ema) with the ``eval.*`` sampler of its config (plus ``overrides``), score them and write ``results.json``.

    Scores: FID / IS with ``inception`` (FID only with ``reference``); without it, digits-FID and class accuracy
    for a digits model (the quick start's metric). Everything that can be wrong (settings, output path, the
    Inception file) is checked before sampling starts. Returns the results path, the metrics and the
    unreadable images of a ``reference`` folder (left out of the FID).
    """
    import time

    from metamixer.train.checkpoint import load_checkpoint
    from metamixer.train.device import resolve_device

    from .builders import checkpoint_config
    from .sample import sample_to_npz
    from .sampling import EVAL_NAMES, check_sampler_options

    started = time.perf_counter()
    if batch_size < 1:
        raise FFNetError(f"--batch-size must be >= 1, got {batch_size}")
    if output:
        check_output_file(output)
    ckpt = load_checkpoint(checkpoint)
    cfg = checkpoint_config(ckpt, checkpoint, overrides)
    if inception is None and cfg.data.mode != "digits":
        raise FFNetError(f"{checkpoint}: a {cfg.data.mode}-mode model is scored with the FID Inception: give "
                         f"--inception {FID_WEIGHTS_NAME} (and --reference for FID)")
    if reference and not Path(reference).exists():
        raise FFNetError(f"--reference {reference}: not found (expected an image folder or an .npz)")
    out = Path(output) if output else Path(checkpoint).parent / f"eval_{Path(checkpoint).stem}" / "results.json"
    ev = cfg.eval
    check_sampler_options(num=ev.num_samples, labels=ev.labels, steps=ev.steps, cfg_scale=ev.cfg_scale, eta=ev.eta,
                          guided_channels=ev.guided_channels, batch_size=ev.batch_size, names=EVAL_NAMES)
    device = device or cfg.run.device
    scorer = None
    if inception is not None:  # a wrong weights file must stop us before hours of sampling, not after
        scorer = load_fid_inception(inception, resolve_device(device, key="--device"))
    weights = cfg.train.eval_weights if ckpt.get("ema") is not None else "model"
    info = sample_to_npz(str(checkpoint), out.parent / "samples", num=ev.num_samples, labels=ev.labels, seed=ev.seed,
                         steps=ev.steps, cfg_scale=ev.cfg_scale, eta=ev.eta, guided_channels=ev.guided_channels,
                         batch_size=ev.batch_size, vae_path=cfg.data.vae_path or "", use_ema=weights == "ema",
                         device=device, names=EVAL_NAMES)
    protocol: dict = {"sampler": ev.steps, "method": info["method"], "cfg_scale": ev.cfg_scale,
                      "guided_channels": ev.guided_channels or "all", "eta": ev.eta, "labels": ev.labels,
                      "seed": ev.seed, "weights": weights, "num_samples": ev.num_samples}
    unreadable: list[str] = []
    extra_record: dict = {}
    if scorer is not None:
        scored = evaluate_samples(info["npz"], inception=inception, model=scorer, reference=reference,
                                  batch_size=batch_size, device=str(resolve_device(device, key="--device")),
                                  max_pixels=max_pixels)
        metrics = {k: scored[k] for k in ("fid", "inception_score", "inception_score_std") if k in scored}
        protocol.update(feature_extractor=scored["feature_extractor"], is_protocol=scored["is_protocol"],
                        fid_reference=scored.get("fid_reference"))
        unreadable = scored["unreadable"]
    else:
        from .metrics.digits import DigitsReference

        data = np.load(info["npz"])
        yardstick = DigitsReference(cfg.model.input_size, seed=ev.seed)
        metrics = yardstick.score(data["arr_0"], data["arr_1"])
        extra_record["class_accuracy_per_class"] = metrics.pop("class_accuracy_per_class")
        protocol.update(feature_extractor=f"digits CNN trained on all 1797 real digits at {cfg.model.input_size}px "
                        f"(seed {ev.seed}; held-out accuracy {yardstick.classifier_accuracy:.3f})",
                        note="digits-FID is NOT comparable to ImageNet FID")
    extra = {"unreadable": unreadable, **extra_record} if unreadable else extra_record
    write_results(out, metrics=metrics, data=f"{ev.num_samples} samples of {checkpoint} ({info['npz']})",
                  checkpoint=checkpoint, protocol=protocol, wall_s=time.perf_counter() - started,
                  train_step=info["train_step"], **extra)
    return out, metrics, unreadable


def _print_model_info(rows: list[dict]) -> None:
    width = max([len("model"), *(len(r["model"]) for r in rows)])
    print(f"{'model':<{width}} {'params(M)':>10} {'deploy(M)':>10} {'GMACs':>8} {'deploy GMACs':>13}  input")
    for r in rows:
        print(f"{r['model']:<{width}} {r['params_M']:>10.2f} {r['params_deploy_M']:>10.2f} {r['gmacs']:>8.2f} "
              f"{r['gmacs_deploy']:>13.2f}  {r['input']}")


def main(argv: Sequence[str] | None = None) -> int:
    p = build_eval_parser("ffnet-gen-eval", "Score a checkpoint's samples (FID / IS, or digits-FID), score a "
                          "samples file, or report model size and cost", checkpoint_required=False)
    p.add_argument("--samples", help="instead of --checkpoint: samples.npz (ADM layout) or an image folder")
    p.add_argument("--reference", help="reference: image folder, .npz of images (arr_0) or of mu/sigma")
    p.add_argument("--inception", help=f"local path of {FID_WEIGHTS_NAME}")
    p.add_argument("--batch-size", type=int, default=50, help="images per Inception batch (>= 1)")
    p.add_argument("--device", default=None, help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps; "
                   "default: run.device of the checkpoint, cpu for --samples")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="image folders: refuse images with more pixels (decompression-bomb guard)")
    p.add_argument("--save-stats", default=None, help="also write the samples' mu/sigma to this .npz")
    p.add_argument("--model-info", nargs="+", metavar="NAME", help="print params / GMACs of registered models")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--in-channels", type=int, default=4)
    a = p.parse_args(argv)
    if a.batch_size < 1:
        raise FFNetError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.max_pixels < 1:
        raise FFNetError(f"--max-pixels must be >= 1, got {a.max_pixels}")
    if a.output:
        check_output_file(a.output)
    if a.model_info:
        for key, value in (("--input-size", a.input_size), ("--in-channels", a.in_channels)):
            if value < 1:
                raise FFNetError(f"{key} must be >= 1, got {value}")
        rows = model_info(a.model_info, a.input_size, a.in_channels)
        _print_model_info(rows)
        if a.output:
            write_results(a.output, metrics={r["model"]: r for r in rows}, data="model registry",
                          protocol="conv/linear/matmul MACs per image, FlopCounterMode on the meta device")
        return 0
    if a.checkpoint:
        path, metrics, unreadable = evaluate_checkpoint(a.checkpoint, a.overrides, output=a.output,
                                                        inception=a.inception, reference=a.reference,
                                                        device=a.device, batch_size=a.batch_size,
                                                        max_pixels=a.max_pixels)
        for key, value in metrics.items():
            print(f"{key}: {value:.4f}")
        print(f"results: {path}")
        if unreadable:
            raise _left_out(unreadable, path)
        return 0
    if a.overrides:
        raise FFNetError(f"overrides ({' '.join(a.overrides)}) apply to --checkpoint only")
    if not a.samples:
        raise FFNetError("give --checkpoint CKPT, or --samples (and --inception, optionally --reference), or "
                         "--model-info NAME")
    for key, value in (("--samples", a.samples), ("--reference", a.reference)):
        if value and not Path(value).exists():
            raise FFNetError(f"{key} {value}: not found (expected an image folder or an .npz)")
    if a.save_stats:
        check_output_file(a.save_stats, "--save-stats")
    from metamixer.train.device import resolve_device

    device = resolve_device(a.device or "cpu", key="--device")
    model = load_fid_inception(a.inception, device)
    result = evaluate_samples(a.samples, inception=a.inception, model=model, reference=a.reference,
                              batch_size=a.batch_size, device=device, save_sample_stats=a.save_stats,
                              max_pixels=a.max_pixels)
    for key in ("fid", "inception_score"):
        if key in result:
            print(f"{key}: {result[key]:.4f}  [{result['feature_extractor']}; {result['num_samples']} samples"
                  + (f"; reference {result['fid_reference']}" if key == "fid" else
                     f"; {result['is_protocol']}") + "]")
    out = Path(a.output) if a.output else Path(a.samples).parent / "results.json"
    metrics = {k: result[k] for k in ("fid", "inception_score", "inception_score_std") if k in result}
    protocol = {k: result[k] for k in ("feature_extractor", "is_protocol", "fid_reference") if k in result}
    extra = {"warning": result["warning"]} if "warning" in result else {}
    if result["unreadable"]:
        extra["unreadable"] = result["unreadable"]
    write_results(out, metrics=metrics, data=f"{result['num_samples']} images of {a.samples}", protocol=protocol,
                  num_samples=result["num_samples"], **extra)
    print(f"results: {out}")
    if result["unreadable"]:
        raise _left_out(result["unreadable"], out)
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
