"""What the SemanticKITTI quick start reports next to the network: per-class IoU over the classes the scan has,
two trivial baselines on the same points, and a bird's-eye-view picture a person can check at a glance.

Why baselines: with three training scans of one street, a number such as "13 mIoU" means nothing on its own;
the same metric for "every point is the most frequent training class" and "every point takes the class of the
nearest training point (sensor frame)" says how much the network learned beyond the layout of a lidar scan.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metamixer.train.atomic import atomic_write

from .data.semantic_kitti import KittiLabels
from .metrics import ConfusionMatrix

__all__ = ["present_classes", "present_metrics", "baseline_metrics", "write_bev"]


def present_classes(segment: np.ndarray, num_classes: int) -> list[int]:
    """Classes with at least one ground-truth point (the ignore index excluded)."""
    seg = np.asarray(segment)
    return [int(c) for c in np.unique(seg[(seg >= 0) & (seg < num_classes)])]


def present_metrics(metrics: dict[str, Any], names: Sequence[str], present: Sequence[int]) -> dict[str, Any]:
    """IoU per class present in the ground truth and their mean (``mIoU_present``): the benchmark averages over
    its 19 classes on 4,071 scans, which one scan cannot have; a class absent from the scan but predicted is a
    false positive of the present classes' IoU either way."""
    iou = {names[c]: metrics["per_class"][names[c]]["iou"] for c in present}
    values = [v for v in iou.values() if v is not None]
    return {"classes": [names[c] for c in present], "iou": iou,
            "mIoU_present": float(np.mean(values)) if values else None}


def _scores(pred: np.ndarray, segment: np.ndarray, num_classes: int, names: Sequence[str],
            present: Sequence[int]) -> dict[str, Any]:
    cm = ConfusionMatrix(num_classes, -1)
    cm.update(pred, segment)
    m = cm.compute(names)
    return {"mIoU": m["mIoU"], "mAcc": m["mAcc"], "allAcc": m["allAcc"],
            "mIoU_present": present_metrics(m, names, present)["mIoU_present"]}


def baseline_metrics(train_scans: Sequence[dict[str, Any]], scan: dict[str, Any], num_classes: int,
                     names: Sequence[str]) -> dict[str, Any]:
    """``majority``: the most frequent training class everywhere; ``nearest_training_point``: the label of the
    nearest labelled training point in sensor coordinates (a scan-layout prior: road below, buildings at the
    sides). Both scored like the network, on every labelled point of ``scan``."""
    from scipy.spatial import cKDTree

    coords = np.concatenate([s["coord"] for s in train_scans])
    labels = np.concatenate([s["segment"] for s in train_scans])
    keep = labels >= 0
    coords, labels = coords[keep], labels[keep]
    present = present_classes(scan["segment"], num_classes)
    majority = int(np.bincount(labels, minlength=num_classes).argmax())
    _, nearest = cKDTree(coords).query(scan["coord"], k=1)
    return {
        "majority": {"class": names[majority],
                     **_scores(np.full(len(scan["coord"]), majority), scan["segment"], num_classes, names, present)},
        "nearest_training_point": _scores(labels[nearest], scan["segment"], num_classes, names, present),
    }


def _panel(coord: np.ndarray, colors: np.ndarray, extent: float, pixel: float, background: int) -> np.ndarray:
    """Top view: points painted low to high (roofs and tree tops over the ground), each as a 2x2 pixel dot."""
    size = int(round(2 * extent / pixel))
    img = np.full((size, size, 3), background, dtype=np.uint8)
    order = np.argsort(coord[:, 2], kind="stable")
    row = np.floor((extent - coord[order, 0]) / pixel).astype(np.int64)  # x (forward) points up
    col = np.floor((extent - coord[order, 1]) / pixel).astype(np.int64)  # y (left) points left
    painted = colors[order]
    for dr, dc in ((1, 1), (0, 1), (1, 0), (0, 0)):
        r, c = row + dr, col + dc
        ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
        img[r[ok], c[ok]] = painted[ok]
    return img


def write_bev(path: str | os.PathLike[str], coord: np.ndarray, segment: np.ndarray, pred: np.ndarray,
              meta: KittiLabels, title: str = "", extent: float = 35.2, pixel: float = 0.08) -> Path:
    """A PNG with ground truth | prediction | errors seen from above (the sensor at the centre, driving direction
    up), in the official colours (``color_map`` via ``learning_map_inv``), and a legend; written atomically."""
    from PIL import Image, ImageDraw, ImageFont

    ignore = np.array([70, 70, 70], dtype=np.uint8)
    palette = np.vstack([meta.colors, ignore])  # index -1 -> the last row
    gt_colors = palette[np.where(segment < 0, -1, segment)]
    pred_colors = palette[pred]
    wrong = np.where((segment >= 0) & (pred != segment), 1, np.where(segment < 0, 2, 0))
    err_colors = np.array([[60, 200, 90], [230, 40, 40], [70, 70, 70]], dtype=np.uint8)[wrong]
    panels = [_panel(coord, c, extent, pixel, 0) for c in (gt_colors, pred_colors, err_colors)]
    size, gap, header, line = panels[0].shape[0], 12, 36, 30
    shown = sorted(set(np.unique(segment[segment >= 0]).tolist()) | set(np.unique(pred).tolist()))
    per_row = 7
    legend_rows = (len(shown) + per_row - 1) // per_row
    width, height = 3 * size + 4 * gap, header + size + gap + line * (legend_rows + 1) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    try:  # a scalable font where Pillow has FreeType (>= 10.1), else its small bitmap font
        font = ImageFont.load_default(size=20)
    except (TypeError, OSError, ImportError):
        font = ImageFont.load_default()
    captions = ("ground truth (gray: ignored)", "prediction", "errors (green right, red wrong, gray ignored)")
    for k, (panel, caption) in enumerate(zip(panels, captions)):
        x = gap + k * (size + gap)
        canvas.paste(Image.fromarray(panel), (x, header))
        draw.text((x, 6), caption, fill=(0, 0, 0), font=font)
    y = header + size + gap
    draw.text((gap, y), title or f"bird's-eye view, {2 * extent:.1f} m square, {pixel} m/pixel", fill=(0, 0, 0),
              font=font)
    cell = (width - 2 * gap) // per_row
    for i, c in enumerate(shown):
        x, yy = gap + (i % per_row) * cell, y + line * (1 + i // per_row)
        draw.rectangle([x, yy + 2, x + 20, yy + 22], fill=tuple(int(v) for v in meta.colors[c]), outline=(0, 0, 0))
        draw.text((x + 28, yy), meta.names[c], fill=(0, 0, 0), font=font)
    return atomic_write(path, lambda handle: canvas.save(handle, format="PNG"))
