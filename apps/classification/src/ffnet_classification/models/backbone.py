"""FFNet as a feature backbone (``create_model(..., features_only=True)``), in timm's ``features_only`` forms.

``FFNetFeatures`` returns the stage maps at ``out_indices`` as a list (timm's ``feature_cls='list'``, and what
its ``'getter'`` / ``'hook'`` / ``'fx'`` wrappers return for a network like this one), ``FFNetFeaturesDict`` as a
dict keyed by ``str(out_index)`` (``feature_cls='dict'``). Both carry a :class:`FeatureInfo`, keep the
classifier's parameter names minus ``norm``/``head`` (classification checkpoints load), drop the stages after the
last requested one, and script with ``torch.jit.script``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .features import FeatureInfo, OutIndices, feature_take_indices, out_indices_as_tuple
from .ffnet import FFNet

__all__ = ["FEATURE_CLS", "FFNetFeatures", "FFNetFeaturesDict"]

#: ``feature_cls`` names timm's builder knows; every one but ``dict`` returns a list of maps
FEATURE_CLS = ("list", "dict", "getter", "hook", "fx")


class FFNetFeatures(FFNet):
    """Backbone for dense tasks: ``forward`` returns the stage maps at ``out_indices`` (strides 4/8/16/32).

    ``out_indices``: an int ``n`` (the last n stages) or stage indices, negative ones from the end.
    ``output_fmt``: ``NCHW`` (default) or ``NHWC``.
    """

    def __init__(self, *args: Any, out_indices: OutIndices = (0, 1, 2, 3), output_fmt: str = "NCHW",
                 **kwargs: Any) -> None:
        kwargs["num_classes"] = 0
        kwargs.setdefault("global_pool", "avg")
        super().__init__(*args, **kwargs)
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be NCHW or NHWC, got {output_fmt!r}")
        take, last = feature_take_indices(len(self.stages), out_indices_as_tuple(out_indices))
        self.out_indices = take
        self.output_fmt = output_fmt
        self.stages = self.stages[: last + 1]
        del self.norm, self.head, self.head_drop
        self.feature_info = FeatureInfo(self.feature_info, out_indices)  # type: ignore[assignment]

    def _collect(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        outs: list[torch.Tensor] = []
        for i, stage in enumerate(self.stages):
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = self._checkpointed_stage(i, x)
            else:
                x = stage(x)
            if i in self.out_indices:
                outs.append(x.permute(0, 2, 3, 1) if self.output_fmt == "NHWC" else x)
        return outs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return self._collect(x)

    @torch.jit.ignore
    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,  # type: ignore[override]
                              **kwargs: Any) -> list[torch.Tensor]:
        raise NotImplementedError("a features_only model returns its maps from forward(); "
                                  "forward_intermediates() is on the classifier (features_only=False)")


class FFNetFeaturesDict(FFNetFeatures):
    """``feature_cls='dict'``: the same maps in a dict keyed like timm's ``FeatureDictNet`` (``str(out_index)``
    with the indices as given, so ``out_indices=2`` gives keys ``'-2'`` and ``'-1'``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out_keys = [str(i) for i in self.feature_info.out_indices]  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        out: dict[str, torch.Tensor] = {}
        for key, y in zip(self.out_keys, self._collect(x)):
            out[key] = y
        return out


