"""FID / IS of generated samples, and the model size / cost report.

``ffnet-gen-eval --samples samples.npz --reference VIRTUAL_imagenet256_labeled.npz --inception pt_inception.pth``
computes FID (against a folder of images, an ``.npz`` of images ``arr_0``, or precomputed ``mu``/``sigma``) and
the Inception Score (10 splits) with the FID InceptionV3 loaded from a local weights file, and writes JSON.
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
from metamixer.train.errors import FFNetError, run_cli
from metamixer.train.results import write_json

from .data.images import list_images, load_image
from .metrics.fid import FeatureStats, frechet_distance, inception_score, load_reference_stats, save_stats
from .metrics.inception import FID_WEIGHTS_NAME, load_fid_inception

__all__ = ["evaluate_samples", "model_info", "iter_image_batches", "main", "cli"]


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


def iter_image_batches(source: str | Path, batch_size: int) -> Iterator[torch.Tensor]:
    """Float [0, 1] NCHW batches from an ``.npz`` (arr_0) or an image folder (each image resized to 299)."""
    source = Path(source)
    if source.suffix == ".npz":
        arr = _npz_images(source)
        for i in range(0, len(arr), batch_size):
            yield torch.from_numpy(arr[i:i + batch_size]).permute(0, 3, 1, 2).float() / 255.0
        return
    files = list_images(source)
    for i in range(0, len(files), batch_size):
        batch = []
        for f in files[i:i + batch_size]:
            x = torch.from_numpy(np.asarray(load_image(f, 3)).copy()).permute(2, 0, 1).float()[None] / 255.0
            batch.append(torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
        yield torch.cat(batch)


@torch.no_grad()
def _features(model, source, batch_size: int, device) -> tuple[FeatureStats, np.ndarray]:
    stats, logits = FeatureStats(), []
    for batch in iter_image_batches(source, batch_size):
        pool, lg = model(batch.to(device))
        stats.update(pool.double().cpu().numpy())
        logits.append(lg.double().cpu().numpy())
    if stats.n == 0:
        raise FFNetError(f"no images in {source}")
    return stats, np.concatenate(logits)


def _reference_stats(model, reference: str | Path, batch_size: int, device) -> tuple[np.ndarray, np.ndarray, str]:
    reference = Path(reference)
    if reference.suffix == ".npz":
        with np.load(reference) as data:
            has_stats = "mu" in data and "sigma" in data
        if has_stats:
            mu, sigma = load_reference_stats(reference)
            return mu, sigma, f"precomputed mu/sigma from {reference.name}"
    stats, _ = _features(model, reference, batch_size, device)
    mu, sigma = stats.mean_cov()
    return mu, sigma, f"{stats.n} reference images from {reference.name}"


def evaluate_samples(samples: str | Path, *, inception: str, reference: str | None = None, batch_size: int = 50,
                     device: str = "cpu", save_sample_stats: str | None = None, splits: int = 10) -> dict:
    """FID (if ``reference``) and IS of ``samples``; every number carries the extractor and protocol used."""
    if batch_size < 1:
        raise FFNetError(f"--batch-size must be >= 1, got {batch_size}")
    model = load_fid_inception(inception, device)
    stats, logits = _features(model, samples, batch_size, device)
    mu, sigma = stats.mean_cov()
    if save_sample_stats:
        save_stats(save_sample_stats, mu, sigma)
    is_mean, is_std = inception_score(logits, splits=splits)
    extractor = f"FID InceptionV3 ({Path(inception).name}; pool3 2048-d, bilinear resize to 299)"
    result: dict = {"num_samples": stats.n, "feature_extractor": extractor,
                    "inception_score": is_mean, "inception_score_std": is_std,
                    "is_protocol": f"{splits} splits, softmax of unbiased 1008-way logits"}
    if stats.n < 10_000:
        result["warning"] = (f"only {stats.n} samples: FID is biased upwards for small N; published numbers "
                             "use 50,000 (FID-50K)")
    if reference:
        ref_mu, ref_sigma, ref_desc = _reference_stats(model, reference, batch_size, device)
        result["fid"] = frechet_distance(mu, sigma, ref_mu, ref_sigma)
        result["fid_reference"] = ref_desc
    return result


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


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="ffnet-gen-eval", description="FID / IS of samples, or model size and cost")
    p.add_argument("--samples", help="samples.npz (ADM layout) or an image folder")
    p.add_argument("--reference", help="reference: image folder, .npz of images (arr_0) or of mu/sigma")
    p.add_argument("--inception", help=f"local path of {FID_WEIGHTS_NAME}")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--save-stats", default=None, help="also write the samples' mu/sigma to this .npz")
    p.add_argument("--output", default=None, help="JSON result file (default: print only)")
    p.add_argument("--model-info", nargs="+", metavar="NAME", help="print params / GMACs of registered models")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--in-channels", type=int, default=4)
    a = p.parse_args(argv)
    if a.model_info:
        rows = model_info(a.model_info, a.input_size, a.in_channels)
        print(f"{'model':<12} {'params(M)':>10} {'deploy(M)':>10} {'GMACs':>8} {'deploy GMACs':>13}  input")
        for r in rows:
            print(f"{r['model']:<12} {r['params_M']:>10.2f} {r['params_deploy_M']:>10.2f} {r['gmacs']:>8.2f} "
                  f"{r['gmacs_deploy']:>13.2f}  {r['input']}")
        result: object = rows
    else:
        if not a.samples:
            raise FFNetError("give --samples (and --inception, optionally --reference), or --model-info NAME")
        result = evaluate_samples(a.samples, inception=a.inception, reference=a.reference, batch_size=a.batch_size,
                                  device=a.device, save_sample_stats=a.save_stats)
        for key in ("fid", "inception_score"):
            if key in result:
                print(f"{key}: {result[key]:.4f}  [{result['feature_extractor']}; {result['num_samples']} samples"
                      + (f"; reference {result['fid_reference']}" if key == "fid" else
                         f"; {result['is_protocol']}") + "]")
    if a.output:
        write_json(a.output, result)
    return 0


cli = run_cli(main)

if __name__ == "__main__":
    raise SystemExit(cli())
