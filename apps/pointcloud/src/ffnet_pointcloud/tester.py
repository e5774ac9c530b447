"""Whole-scene inference: test-time-augmentation views x grid fragments, softmax voting onto every input point.

For each view (a rotation/scale/flip of the scene) the scene is voxelized in test mode into fragments: fragment
i holds the (i mod count)-th point of every voxel (:class:`~ffnet_pointcloud.data.transforms.GridSample`), so
together they contain every original point, points of sparse voxels several times. Each fragment is segmented
and its softmax scores are added to the rows of the points it holds (``index``); after all views every original
point has at least ``len(views)`` votes and the prediction is the argmax. No nearest-neighbour up-sampling is
involved: every point is seen by the network itself in some fragment.

``data.test_post_transforms`` runs on each fragment and may itself split it (``SphereCrop`` mode ``all``: crops
of at most ``point_max`` points covering the fragment, for scenes too large for one forward pass); the crops'
``index`` arrays point back into the original scene, so the votes land on the same points. The test pipelines'
random generators are re-seeded per scene, so a scene's prediction never depends on what was predicted before.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from metamixer.train.amp import autocast

from .data.collate import collate_scenes
from .data.transforms import GridSample, build_transforms, check_single_output, set_rng

__all__ = ["SceneTester"]


class SceneTester:
    """``tester(model, scene) -> (probs [N, K] summed over views, votes [N])`` for one raw (validated) scene."""

    def __init__(
        self,
        num_classes: int,
        grid_size: float,
        pre: Sequence[dict[str, Any]],
        views: Sequence[Sequence[dict[str, Any]]] | None,
        post: Sequence[dict[str, Any]],
        feat_keys: Sequence[str],
        fragments_per_batch: int = 4,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.num_classes = num_classes
        self.pre = build_transforms(pre, where="data.test_pre_transforms")
        self.views = [build_transforms(v, where=f"data.tta_views[{j}]") for j, v in enumerate(views or [[]])]
        self.post = build_transforms(post, where="data.test_post_transforms")
        check_single_output(self.pre, "data.test_pre_transforms", "split fragments in data.test_post_transforms")
        for j, view in enumerate(self.views):
            check_single_output(view, f"data.tta_views[{j}]", "split fragments in data.test_post_transforms")
        self.voxelize = GridSample(grid_size=grid_size, mode="test")
        self.feat_keys = list(feat_keys)
        self.fragments_per_batch = max(1, fragments_per_batch)
        self.device = torch.device(device)
        self.precision = precision

    @torch.no_grad()
    def __call__(
        self, model: Callable[[Any], torch.Tensor], scene: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(scene["coord"])
        probs = torch.zeros((n, self.num_classes), dtype=torch.float64)
        votes = torch.zeros(n, dtype=torch.int64)
        rng = np.random.default_rng(0)
        for pipeline in (self.pre, *self.views, self.post):
            set_rng(pipeline, rng)
        base = self.pre({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in scene.items()})
        for view in self.views:
            data = view(copy.deepcopy(base))
            fragments = []
            for fragment in self.voxelize(data):
                out = self.post(fragment)
                fragments.extend(out if isinstance(out, list) else [out])
            for start in range(0, len(fragments), self.fragments_per_batch):
                chunk = fragments[start : start + self.fragments_per_batch]
                point = collate_scenes(chunk, self.feat_keys)
                index = point.pop("index")
                point.pop("segment", None)
                point = type(point)(
                    {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in point.items()}
                )
                with autocast(self.device, self.precision):
                    logits = model(point)
                probs.index_add_(0, index, logits.float().softmax(1).double().cpu())
                votes.index_add_(0, index, torch.ones_like(index))
        return probs.numpy(), votes.numpy()
