"""Training-mode BatchNorm over ``[G, C, S]`` through core's C kernel, with nn.BatchNorm's running statistics.

Why: PyTorch's CPU BatchNorm runs ~10x below the memory rate at FFNet-TS's shapes (``[7, 64, 24576]`` channel-major
activations, ``[1, 448, 24576]`` in the re-param branches: five of them were a quarter of the training step);
``csrc/batchnorm.c`` keeps each channel in cache across its passes (see that file). :func:`batch_norm` is a drop-in
for calling an ``nn.BatchNorm1d`` module on a 3-D input: same output, gradients, running mean/var (unbiased, with the
module's momentum, or a cumulative average when ``momentum`` is None) and ``num_batches_tracked``. Where the kernel
does not apply (evaluation with running statistics, other dtypes or devices, no C build, a 2-D input) it calls the
module itself.
"""

from __future__ import annotations

import torch
from torch import nn

from metamixer.kernels.native import batch_norm_kernels, select

__all__ = ["batch_norm"]


def _kernels():  # noqa: ANN202
    kernels = batch_norm_kernels()
    if kernels is None:
        raise RuntimeError("metamixer::batch_norm_train needs the C BatchNorm kernels, which are not available here")
    return kernels


@torch.library.custom_op("metamixer::batch_norm_train", mutates_args=())
def _batch_norm_train(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y, mean, var, invstd)`` of a training-mode BatchNorm over ``[G, C, S]`` (var biased), one operator."""
    return _kernels().forward(x, weight, bias, eps)


@_batch_norm_train.register_fake
def _(x, weight, bias, eps):  # noqa: ANN001, ANN202
    c = x.shape[1]
    return x.new_empty(x.shape), x.new_empty(c), x.new_empty(c), x.new_empty(c)


@torch.library.custom_op("metamixer::batch_norm_train_backward", mutates_args=())
def _batch_norm_train_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, mean: torch.Tensor,
                               invstd: torch.Tensor, need_x: bool, need_params: bool
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_x, grad_w, grad_b = _kernels().backward(grad.contiguous(), x, weight, mean, invstd, need_x, need_params)
    return tuple(t if t is not None else x.new_empty(0) for t in (grad_x, grad_w, grad_b))  # no shared outputs


@_batch_norm_train_backward.register_fake
def _(grad, x, weight, mean, invstd, need_x, need_params):  # noqa: ANN001, ANN202
    c = x.shape[1]
    return (x.new_empty(x.shape) if need_x else x.new_empty(0), x.new_empty(c) if need_params else x.new_empty(0),
            x.new_empty(c) if need_params else x.new_empty(0))


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    x, weight, _, _ = inputs
    _, mean, _, invstd = output
    ctx.save_for_backward(x, weight, mean, invstd)
    ctx.mark_non_differentiable(mean, output[2], invstd)


def _backward(ctx, grad_y: torch.Tensor, *unused: torch.Tensor):  # noqa: ANN001, ANN202
    x, weight, mean, invstd = ctx.saved_tensors
    need_x, need_w, need_b, _ = ctx.needs_input_grad
    grad_x, grad_w, grad_b = _batch_norm_train_backward(grad_y, x, weight, mean, invstd, need_x, need_w or need_b)
    return (grad_x if need_x else None), (grad_w if need_w else None), (grad_b if need_b else None), None


_batch_norm_train.register_autograd(_backward, setup_context=_setup_context)


def _update_running_stats(norm: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor,
                          count: int) -> None:
    """What ``nn.BatchNorm`` does to its buffers in a training forward (unbiased variance in the running one)."""
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
        norm.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        norm.running_var.mul_(1 - factor).add_(var * (count / max(count - 1, 1)), alpha=factor)


def batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, native: bool | None = None) -> torch.Tensor:
    """``norm(x)`` for ``x = [G, C, S]`` (statistics per channel over G and S), through the C kernel when ``norm``
    uses batch statistics (training, or no running statistics), ``x`` is float32 on CPU with contiguous rows and
    the kernel is available; else ``norm(x)``. ``native``: see :func:`metamixer.kernels.native.select`."""
    batch_stats = norm.training or not norm.track_running_stats
    fits = x.dim() == 3 and x.numel() > 0 and (x.stride(2) == 1 or x.shape[2] == 1)
    if not (batch_stats and fits and select(native, batch_norm_kernels, "batch_norm", x, norm.weight, norm.bias)):
        return norm(x)
    if x.shape[0] * x.shape[2] < 2 and norm.training:
        return norm(x)  # nn.BatchNorm's own error for one value per channel
    y, mean, var, _ = _batch_norm_train(x, norm.weight, norm.bias, norm.eps)
    if norm.training and norm.track_running_stats:
        _update_running_stats(norm, mean, var, x.shape[0] * x.shape[2])
    return y
