"""metamixer.train — the one run engine every FFNet app uses.

``config`` (dataclasses + YAML + dotted overrides), ``cli`` (the console-script shape), ``checkpoint`` (one
format, atomic writes, ``weights_only`` loads), ``logger`` (tensorboard + tqdm), ``ema``, ``amp``, ``distributed``
(DDP), ``seed``, ``errors`` (one-line user errors), ``atomic`` (the one atomic file writer), ``results`` (result files), ``datadir`` (where the
apps' CLIs and tests find the shared datasets) and ``allocator`` (an opt-in glibc tweak for CPU training CLIs).
"""
from __future__ import annotations

from metamixer._lazy import lazy_exports

_EXPORTS = {
    "FFNetError": "errors", "run_cli": "errors", "load_config": "config", "save_config": "config",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "restore_checkpoint": "checkpoint",
    "RunLogger": "logger", "ModelEMA": "ema", "seed_everything": "seed", "write_json": "results",
    "data_root": "datadir", "data_path": "datadir", "build_parser": "cli", "autocast": "amp", "open_image": "images",
    "make_grad_scaler": "amp", "write_results": "results", "build_train_parser": "cli",
    "build_eval_parser": "cli", "Task": "loop", "Trainer": "loop", "FitResult": "loop", "RunContext": "loop",
    "prepare_run": "loop", "build_optimizer": "loop", "RunConfig": "sections", "OptimConfig": "sections",
    "TrainConfig": "sections", "resolve_device": "device", "build_schedule": "schedules", "bounded": "config",
    "atomic_write": "atomic",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
