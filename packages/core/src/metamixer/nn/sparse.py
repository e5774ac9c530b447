"""Sparse 3-D building blocks: thin wrappers over spconv and the sparse FFNet block.

spconv is an optional dependency (``pip install metamixer[sparse]`` for the CPU build, ``metamixer[sparse-cu12]``
on a CUDA machine), so this module imports without it; the spconv-backed classes (``SubMConv3d``,
``SparseConv3d``, ``SparseInverseConv3d``, ``SparseConvTensor``) are resolved lazily on first attribute access
and :func:`require_spconv` turns a missing install into one clear :class:`~metamixer.train.errors.FFNetError`.

Three things about spconv's CPU build are handled here once so no app has to know them:

* its backward pass asks ``torch.cuda.current_stream()`` even for CPU tensors, which raises on a CPU-only torch;
  the stream getters are patched to return the null stream when CUDA is unavailable;
* only ``ConvAlgo.Native`` runs on CPU tensors, so the wrappers switch to it per call when the input is on CPU
  (a module built on a GPU machine therefore still runs on CPU);
* the CPU kernels race when torch runs them with more than one intra-op thread (we measured wrong outputs,
  max error 0.3 on unit-scale data, with 2 threads), so every spconv op on CPU tensors runs with one torch
  thread; the dense parts of a network (Linear, LayerNorm, BN) keep all threads.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import nn

from metamixer.nn.layers import DropPath
from metamixer.train.errors import FFNetError

__all__ = [
    "SPCONV_INSTALL_HINT",
    "spconv_available",
    "require_spconv",
    "sparse_tensor",
    "replace_feature",
    "SubMConv3d",  # noqa: F822 (resolved lazily by __getattr__)
    "SparseConv3d",  # noqa: F822 (resolved lazily by __getattr__)
    "SparseInverseConv3d",  # noqa: F822 (resolved lazily by __getattr__)
    "SparseConvTensor",  # noqa: F822 (resolved lazily by __getattr__)
    "SparseFFNetBlock",
    "sparse_bn",
    "init_sparse_weights",
]

SPCONV_INSTALL_HINT = (
    "spconv is required for sparse 3-D models: install it with `pip install metamixer[sparse]` (CPU build, "
    "spconv==2.3.8) or, on a CUDA 12 machine, `pip install metamixer[sparse-cu12]`"
)

#: BatchNorm settings of the official sparse FFNet (fact sheet §4.1).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

_SPCONV: ModuleType | None = None
_LAZY_CLASSES: dict[str, Any] = {}
# spconv.pytorch.ops entry points that run CPU kernels (forward, backward, indice generation).
_CPU_RACY_OPS = (
    "get_indice_pairs",
    "indice_conv",
    "indice_conv_backward",
    "indice_maxpool",
    "indice_maxpool_backward",
    "indice_avgpool",
    "indice_avgpool_backward",
)


def spconv_available() -> bool:
    """True when ``spconv.pytorch`` imports (without raising)."""
    try:
        require_spconv()
    except FFNetError:
        return False
    return True


def _null_stream() -> int:
    """Stand-in for spconv's CUDA stream getter on machines without CUDA (0 = the null stream)."""
    return 0


def _has_cuda_tensor(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.is_cuda:
            return True
    return False


def _single_threaded_on_cpu(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with one torch intra-op thread unless it is handed CUDA tensors (see module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        if threads == 1 or _has_cuda_tensor(args, kwargs):
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    wrapper.__metamixer_patched__ = True  # type: ignore[attr-defined]
    return wrapper


def _patch_spconv(ops: ModuleType) -> None:
    """Apply the CPU fixes described in the module docstring (idempotent)."""
    if not torch.cuda.is_available():
        for name in ("spconv.pytorch.ops", "spconv.pytorch.cppcore", "spconv.pytorch.hash"):
            module = importlib.import_module(name)
            if hasattr(module, "get_current_stream"):
                module.get_current_stream = _null_stream
    for name in _CPU_RACY_OPS:
        fn = getattr(ops, name, None)
        if fn is not None and not getattr(fn, "__metamixer_patched__", False):
            setattr(ops, name, _single_threaded_on_cpu(fn))


def require_spconv() -> ModuleType:
    """Return ``spconv.pytorch`` (patched for CPU use), or raise FFNetError with the install command."""
    global _SPCONV
    if _SPCONV is not None:
        return _SPCONV
    try:
        spconv = importlib.import_module("spconv.pytorch")
        ops = importlib.import_module("spconv.pytorch.ops")
    except Exception as exc:  # ImportError, or a broken binary (OSError / RuntimeError from its C++ core)
        raise FFNetError(f"{SPCONV_INSTALL_HINT} (import failed: {type(exc).__name__}: {exc})") from None
    _patch_spconv(ops)
    _SPCONV = spconv
    return spconv


def _native_algo() -> Any:
    return importlib.import_module("spconv.core").ConvAlgo.Native


def _make_conv_class(base_name: str) -> type:
    """Subclass an spconv conv so a CPU input always runs with ``ConvAlgo.Native``."""
    spconv = require_spconv()
    base = getattr(spconv, base_name)
    native = _native_algo()

    def forward(self: Any, input: Any, add_input: Any = None) -> Any:  # noqa: A002 (spconv's name)
        on_cpu = not input.features.is_cuda
        if on_cpu and self.algo != native:
            # spconv's implicit-GEMM algorithms are CUDA only; the weight layout (KRSC) is shared, so
            # switching per call is safe.
            self.algo = native
        # spconv's CPU kernel cannot add a bias itself, which it is asked to do in eval mode; its "training"
        # path adds the bias afterwards in torch and is otherwise identical for the Native algorithm.
        return self._conv_forward(
            self.training or on_cpu,
            input,
            self.weight,
            self.bias,
            add_input,
            name=self.name,
            sparse_unique_name=self._sparse_unique_name,
            act_type=self.act_type,
            act_alpha=self.act_alpha,
            act_beta=self.act_beta,
        )

    doc = (
        f"``spconv.pytorch.{base_name}`` that runs with ``ConvAlgo.Native`` on CPU tensors. Weight layout "
        "``[out, k, k, k, in]`` (spconv 2.x KRSC), so state_dicts are interchangeable with plain spconv."
    )
    return type(base_name, (base,), {"forward": forward, "__doc__": doc, "__module__": __name__})


def __getattr__(name: str) -> Any:
    """Resolve the spconv-backed names lazily so ``import metamixer.nn.sparse`` works without spconv."""
    if name in ("SubMConv3d", "SparseConv3d", "SparseInverseConv3d"):
        if name not in _LAZY_CLASSES:
            _LAZY_CLASSES[name] = _make_conv_class(name)
        return _LAZY_CLASSES[name]
    if name == "SparseConvTensor":
        return require_spconv().SparseConvTensor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _not_fx_tracing_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("is_fx_tracing will return true")


# spconv's SparseConvTensor has torch.fx's proxyable metaclass, whose first instance makes torch log a notice
# meant for fx developers onto stderr: noise to a user of any sparse network, and it breaks the CLIs' one-line
# error contract
logging.getLogger("torch.fx._symbolic_trace").addFilter(_not_fx_tracing_notice)


def sparse_tensor(
    features: torch.Tensor,
    indices: torch.Tensor,
    spatial_shape: Sequence[int] | None = None,
    batch_size: int | None = None,
    pad: int = 0,
) -> Any:
    """Build an spconv ``SparseConvTensor`` from ``features [N, C]`` and ``indices [N, 4]`` (batch, x, y, z).

    ``spatial_shape`` defaults to ``max(index) + 1 + pad`` per axis, ``batch_size`` to ``max(batch) + 1``.
    Indices must be non-negative and unique per batch (spconv silently produces garbage otherwise, so the
    cheap checks are done here).
    """
    spconv = require_spconv()
    if features.dim() != 2 or indices.dim() != 2 or indices.shape[1] != 4:
        raise FFNetError(
            f"sparse_tensor expects features [N, C] and indices [N, 4] (batch, x, y, z); got "
            f"{tuple(features.shape)} and {tuple(indices.shape)}"
        )
    if features.shape[0] != indices.shape[0]:
        raise FFNetError(f"sparse_tensor: {features.shape[0]} feature rows but {indices.shape[0]} indices")
    if indices.numel() and int(indices.min()) < 0:
        raise FFNetError("sparse_tensor: voxel indices must be non-negative (shift coordinates first)")
    indices = indices.to(device=features.device, dtype=torch.int32).contiguous()
    if spatial_shape is None:
        if indices.shape[0] == 0:
            raise FFNetError("sparse_tensor: cannot infer the spatial shape of an empty tensor")
        spatial_shape = (indices[:, 1:].max(0).values + 1 + pad).tolist()
    if batch_size is None:
        batch_size = int(indices[:, 0].max()) + 1 if indices.shape[0] else 1
    return spconv.SparseConvTensor(
        features.contiguous(), indices, [int(s) for s in spatial_shape], batch_size
    )


def replace_feature(x: Any, features: torch.Tensor) -> Any:
    """Return ``x`` with new features (same indices and cached index pairs), as spconv's ``replace_feature``."""
    return x.replace_feature(features)


def sparse_bn(channels: int) -> nn.BatchNorm1d:
    """BatchNorm1d over point features with the official sparse FFNet's eps/momentum."""
    return nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    raise FFNetError(f"sparse FFNet activation must be 'gelu' or 'relu', got {name!r}")


class SparseFFNetBlock(nn.Module):
    """The sparse-3D FFNet block (official §4.1 ``FFBlock``), operating on an spconv ``SparseConvTensor``.

    Token mixer (FFNified attention on voxels): ``x + DropPath(BN(SubM(act(BN(SubM(Linear(LN(x))))))))``.
    Channel mixer: ``x + DropPath(FFN(BN(SubM(LN(x)))))`` with ``FFN = Linear(C, rC) -> act -> Linear(rC, C)``.
    Submanifold convs are dense over channels (spconv has no depthwise SubM), which is why the kernel stays 3.
    ``indice_key`` lets all blocks of one resolution share the index pairs (identical for every SubM k3 on the
    same voxels), which only saves time. Attribute names: ``norm1, fc, conv1, bn1, act, conv2, bn2, norm2,
    conv3, bn3, mlp (fc1, act, fc2), drop_path``.
    """

    def __init__(
        self,
        dim: int,
        expansion: int = 4,
        kernel_size: int = 3,
        drop_path: float = 0.0,
        act: str = "gelu",
        indice_key: str | None = None,
    ) -> None:
        super().__init__()
        require_spconv()
        subm = __getattr__("SubMConv3d")
        self.dim = dim
        self.norm1 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.conv1 = subm(dim, dim, kernel_size, padding=kernel_size // 2, bias=True, indice_key=indice_key)
        self.bn1 = sparse_bn(dim)
        self.act = _activation(act)
        self.conv2 = subm(dim, dim, kernel_size, padding=kernel_size // 2, bias=True, indice_key=indice_key)
        self.bn2 = sparse_bn(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.conv3 = subm(dim, dim, kernel_size, padding=kernel_size // 2, bias=True, indice_key=indice_key)
        self.bn3 = sparse_bn(dim)
        hidden = dim * expansion
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, hidden))
        self.mlp.add_module("act", _activation(act))
        self.mlp.add_module("fc2", nn.Linear(hidden, dim))
        # per row of [N, C] = per point, as the official code (timm DropPath applied to point features)
        self.drop_path = DropPath(drop_path)

    def token_mixer(self, x: Any) -> Any:
        """The token-mixer branch as a sparse tensor (before DropPath and the residual add).

        Returned as the conv output tensor (not bare features) because it carries the index pairs computed by
        its SubM convs; building the residual from it lets later convs with the same ``indice_key`` reuse them.
        """
        h = self.fc(self.norm1(x.features))
        h = self.conv1(x.replace_feature(h))
        h = self.conv2(h.replace_feature(self.act(self.bn1(h.features))))
        return h.replace_feature(self.bn2(h.features))

    def channel_mixer(self, x: Any) -> Any:
        """The channel-mixer branch as a sparse tensor (before DropPath and the residual add)."""
        h = self.conv3(x.replace_feature(self.norm2(x.features)))
        return h.replace_feature(self.mlp(self.bn3(h.features)))

    def forward(self, x: Any) -> Any:
        # SubM outputs keep the input's voxel order, so the branch tensors line up row by row with x
        t = self.token_mixer(x)
        x = t.replace_feature(x.features + self.drop_path(t.features))
        c = self.channel_mixer(x)
        return c.replace_feature(x.features + self.drop_path(c.features))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def init_sparse_weights(module: nn.Module, std: float = 0.02) -> None:
    """Official init: trunc_normal(std) on Linear and sparse convs, zero bias; LayerNorm/BN weight 1 bias 0."""
    spconv = require_spconv()
    for m in module.modules():
        if isinstance(m, (nn.Linear, spconv.SubMConv3d, spconv.SparseConv3d, spconv.SparseInverseConv3d)):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
