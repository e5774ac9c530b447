"""Distributed data-parallel helpers for ``torchrun`` launches (and a no-op single-process fallback).

Training scripts call :func:`init_distributed` once; it reads the environment ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), picks NCCL on GPUs and Gloo on CPU, and returns
a :class:`DistInfo`. Without those variables everything degrades to a single process, so the same script runs
unchanged on a laptop, a CPU CI box and a multi-GPU node. All helpers are safe to call when not distributed.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from metamixer.train.errors import FFNetError

__all__ = [
    "DistInfo",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "get_rank",
    "get_world_size",
    "barrier",
    "all_reduce_mean",
    "all_gather_object",
    "wrap_ddp",
    "unwrap_model",
    "cleanup_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: rank, world size, local rank and the device it should use."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_distributed: bool

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints and results; other ranks stay silent."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise FFNetError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from None


def init_distributed(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the default process group from torchrun's environment, or do nothing for one process.

    ``device`` forces ``"cpu"``/``"cuda"``; by default CUDA is used when available (one GPU per local rank,
    NCCL backend), else CPU with Gloo. Calling it again when already initialised just returns the info.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    want = torch.device(device) if device is not None else None
    use_cuda = torch.cuda.is_available() if want is None else want.type == "cuda"
    if use_cuda:
        index = local_rank if world_size > 1 or want is None or want.index is None else want.index
        dev = torch.device("cuda", index % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world_size <= 1:
        return DistInfo(rank=0, world_size=1, local_rank=0, device=dev, is_distributed=False)
    if not dist.is_available():
        raise FFNetError("WORLD_SIZE>1 but this torch build has no torch.distributed support")
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s),
                                  "rank": rank, "world_size": world_size}
        if dev.type == "cuda":
            kwargs["device_id"] = dev  # lets NCCL bind eagerly and avoids a rank->GPU guessing warning
        dist.init_process_group(**kwargs)
    return DistInfo(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev,
        is_distributed=True,
    )


def is_distributed() -> bool:
    """True inside an initialised multi-process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 — the only process that should write files or print progress."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for all ranks (no-op single-process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Return the mean of ``tensor`` over all ranks (a new tensor; the input is left untouched).

    Used for metrics: each rank averages its shard, then this averages across ranks (equal shard sizes assumed;
    weight by counts with a SUM reduce otherwise).
    """
    if not is_distributed():
        return tensor.detach().clone()
    out = tensor.detach().clone()
    if not out.is_floating_point():
        out = out.double()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    out /= dist.get_world_size()
    return out


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank; returns ``[obj_rank0, obj_rank1, ...]`` on all ranks."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: nn.Module, info: DistInfo, **ddp_kwargs: Any) -> nn.Module:
    """Move ``model`` to ``info.device`` and wrap it in DistributedDataParallel when distributed.

    Returns the model unchanged (but moved) for a single process, so training code has one path.
    """
    model = model.to(info.device)
    if not info.is_distributed:
        return model
    if info.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [info.device.index])
        ddp_kwargs.setdefault("output_device", info.device.index)
    return nn.parallel.DistributedDataParallel(model, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP/DataParallel and ``torch.compile`` wrappers, giving the module whose state_dict has clean keys."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def cleanup_distributed() -> None:
    """Destroy the process group if one exists (call at the end of a distributed run).

    Ranks first meet at a barrier: a rank that tears its gloo group down while a peer is still sending (rank 0
    writing a checkpoint, say) can make the peer's process abort at exit, rarely and only under load.
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()
