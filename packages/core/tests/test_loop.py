"""metamixer.train.loop: the one training loop (resume, accumulation, limits, signals, NaN, failed writes)."""

from __future__ import annotations

import os
import re
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from metamixer.train.checkpoint import load_checkpoint
from metamixer.train.config import ConfigError, config_from_dict
from metamixer.train.errors import FFNetError, RunInterrupted
from metamixer.train.loop import Task, Trainer, prepare_run
from metamixer.train.sections import OptimConfig, RunConfig, TrainConfig


class ToyTask(Task):
    """Regression with dropout (uses the global RNG every step) and batches drawn from a per-epoch generator."""

    monitor, monitor_mode = "mse", "min"

    def __init__(self, batch: int = 8, n: int = 96, nan_at: int | None = None, on_step=None) -> None:  # noqa: ANN001
        torch.manual_seed(0)
        super().__init__(nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, 1)))
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
        self.batch, self.nan_at, self.on_step, self.calls = batch, nan_at, on_step, 0

    def steps_per_epoch(self) -> int:
        return len(self.x) // self.batch

    def epoch_batches(self, epoch: int):  # noqa: ANN201
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(100 + epoch))
        for i in range(self.steps_per_epoch()):
            idx = order[i * self.batch:(i + 1) * self.batch]
            yield self.x[idx], self.y[idx]

    def training_step(self, model: nn.Module, batch):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.on_step is not None:
            self.on_step(self.calls)
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        if self.nan_at is not None and self.calls == self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"mse": float(nn.functional.mse_loss(model(self.x), self.y))}


def _fit(tmp: Path, name: str, task: Task | None = None, resume: Path | None = None, **train: object):
    run = RunConfig(output_dir=str(tmp / name), seed=3, max_steps=train.pop("max_steps", None),
                    max_time=train.pop("max_time", None))
    optim = OptimConfig(name="adamw", lr=3e-3, weight_decay=0.01, clip_grad=1.0, warmup_steps=3, min_lr=1e-4)
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 8, "accum_steps": 2, "ema_decay": 0.9, "progress": False,
                         "log_every": 2, **train})
    task = task or ToyTask()
    ctx = prepare_run(run, {"toy": True}, quiet=True)
    return Trainer(task, ctx, optim, cfg, run, config={"toy": True}).fit(resume=resume), task


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {**ckpt["model"], **{f"ema.{k}": v for k, v in ckpt["ema"].items()}}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_mid_epoch_equals_uninterrupted_bit_for_bit(tmp_path: Path) -> None:
    full, _ = _fit(tmp_path, "full")
    assert full.stopped == "completed" and full.step == 3 * 6 and full.epoch == 3
    assert "step 2/18 (epoch 1): loss " in (tmp_path / "full" / "log.txt").read_text()
    part, _ = _fit(tmp_path, "split", max_steps=8)  # 8 steps = epoch 2, window 2 of 6: mid-epoch
    assert part.stopped == "max_steps" and part.step == 8
    assert load_checkpoint(tmp_path / "split" / "last.pth")["extra"]["loop"]["batch"] == 4
    rest, _ = _fit(tmp_path, "split", resume=tmp_path / "split" / "last.pth")
    assert rest.step == full.step and rest.history == full.history
    _same(_weights(tmp_path / "full" / "last.pth"), _weights(tmp_path / "split" / "last.pth"))
    assert full.best_step is not None and (tmp_path / "full" / "best.pth").exists()


def test_accumulation_equals_one_big_batch() -> None:
    """Two micro-batches of 8 with accum 2 give the gradient of one batch of 16 (no dropout, mean loss)."""
    model = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)

    class Two(Task):
        def steps_per_epoch(self) -> int:
            return 2

        def epoch_batches(self, epoch: int):  # noqa: ANN201
            yield x[:8], y[:8]
            yield x[8:], y[8:]

        def training_step(self, m: nn.Module, batch):  # noqa: ANN001, ANN201
            return {"loss": nn.functional.mse_loss(m(batch[0]), batch[1])}

        def build_optimizer(self, m: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
            return torch.optim.SGD(m.parameters(), lr=cfg.lr)

    import copy
    import tempfile

    reference = copy.deepcopy(model)
    nn.functional.mse_loss(reference(x), y).backward()
    expected = [p.detach() - 0.1 * p.grad for p in reference.parameters()]
    with tempfile.TemporaryDirectory() as tmp:
        run = RunConfig(output_dir=tmp)
        cfg = TrainConfig(steps=1, accum_steps=2, progress=False, val_every=None)
        Trainer(Two(model), prepare_run(run, {}, quiet=True), OptimConfig(lr=0.1, schedule="constant"), cfg, run).fit()
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-6, atol=1e-7)


def test_step_run_validates_on_cadence_and_stops_early(tmp_path: Path) -> None:
    class Worse(ToyTask):
        def evaluate(self, model: nn.Module) -> dict[str, float]:
            self.evals = getattr(self, "evals", 0) + 1
            return {"mse": float(self.evals)}  # never improves after the first

    result, _ = _fit(tmp_path, "s", task=Worse(), epochs=None, steps=40, val_every=5, patience=2, keep_every=10)
    assert result.stopped == "early_stop" and result.step == 15
    assert sorted(p.name for p in (tmp_path / "s").glob("step_*.pth")) == ["step_0000010.pth"]
    assert load_checkpoint(tmp_path / "s" / "step_0000010.pth")["step"] == 10
    assert [h["step"] for h in result.history] == [5, 10, 15] and result.best_step == 5
    assert load_checkpoint(tmp_path / "s" / "best.pth")["step"] == 5
    assert "validation at step 5 (epoch 1)" in (tmp_path / "s" / "log.txt").read_text()  # mid-epoch 1 of 6 steps
    again, task = _fit(tmp_path, "s", task=Worse(), resume=tmp_path / "s" / "last.pth", epochs=None, steps=40,
                       val_every=5, patience=2)
    assert again.stopped == "early_stop" and again.step == 15 and task.calls == 0  # finished runs stay finished


def test_nonfinite_loss_stops_naming_the_step_or_skips_the_batch(tmp_path: Path) -> None:
    with pytest.raises(FFNetError, match=r"loss is nan at step 3 .*train.on_nonfinite=skip"):
        _fit(tmp_path, "stop", task=ToyTask(nan_at=5))
    result, _ = _fit(tmp_path, "skip", task=ToyTask(nan_at=5), on_nonfinite="skip")
    assert result.skipped_batches == 1 and result.stopped == "completed"
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "skip" / "last.pth").values())


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_resumes_exactly(tmp_path: Path) -> None:
    def kill(calls: int) -> None:
        if calls == 7:  # inside step 4's window
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(RunInterrupted, match="resume with") as info:
        _fit(tmp_path, "sig", task=ToyTask(on_step=kill))
    assert info.value.exit_code == 143
    assert load_checkpoint(tmp_path / "sig" / "last.pth")["step"] == 4
    _fit(tmp_path, "sig", resume=tmp_path / "sig" / "last.pth")
    _fit(tmp_path, "full")
    _same(_weights(tmp_path / "full" / "last.pth"), _weights(tmp_path / "sig" / "last.pth"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fit(tmp_path, "disk", epochs=1)
    before = _weights(tmp_path / "disk" / "last.pth")
    best_before = _weights(tmp_path / "disk" / "best.pth")
    original = torch.save

    def full_disk(obj, f, *a, **k):  # noqa: ANN001, ANN002, ANN003
        original(obj, f, *a, **k)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(FFNetError, match=r"could not write checkpoint .*(last|best).pth: No space left on "
                       r"device; the previous (last|best).pth is intact"):
        _fit(tmp_path, "disk", epochs=2, resume=tmp_path / "disk" / "last.pth")
    monkeypatch.undo()
    _same(before, _weights(tmp_path / "disk" / "last.pth"))
    _same(best_before, _weights(tmp_path / "disk" / "best.pth"))
    assert not list((tmp_path / "disk").glob(".*.tmp"))


def test_time_limit_stops_with_a_resumable_checkpoint(tmp_path: Path) -> None:
    result, _ = _fit(tmp_path, "t", max_time=1e-9)
    assert result.stopped == "max_time" and result.step == 1
    assert load_checkpoint(tmp_path / "t" / "last.pth")["step"] == 1


def test_stale_temporaries_are_removed_at_start(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    stale = tmp_path / "r" / ".last.pth.12345.deadbeef.tmp"
    stale.write_bytes(b"partial")
    _fit(tmp_path, "r", epochs=1)
    assert not stale.exists()


def test_sections_reject_out_of_range_values_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'train.batch_size' must be a finite number >= 1, got int 0"):
        config_from_dict(TrainConfig, {"epochs": 1, "batch_size": 0}, _prefix="train.")
    with pytest.raises(ConfigError, match=r"'optim.lr' must be a finite number > 0"):
        config_from_dict(OptimConfig, {"lr": float("nan")}, _prefix="optim.")
    with pytest.raises(ConfigError, match=r"'optim.lr' must be a finite number > 0"):
        config_from_dict(OptimConfig, {"lr": -1.0}, _prefix="optim.")
    with pytest.raises(ConfigError, match="exactly one of train.epochs and train.steps"):
        config_from_dict(TrainConfig, {"epochs": 2, "steps": 10}, _prefix="train.")
    assert replace(RunConfig(), max_time=None).max_time is None


def test_cli_shape_recipe_lookup_and_debug(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from metamixer.train.cli import build_eval_parser, build_train_parser, config_from_args
    from metamixer.train.errors import run_cli
    from metamixer.train.results import write_results

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "short.yaml").write_text("epochs: 2\nbatch_size: 4\n")
    args = build_train_parser("ffnet-x-train").parse_args(["short", "batch_size=6", "--resume", "r/last.pth"])
    cfg = config_from_args(TrainConfig, args, recipes)
    assert (cfg.epochs, cfg.batch_size, args.resume) == (2, 6, "r/last.pth")
    with pytest.raises(FFNetError, match="config file not found: nosuch; shipped recipes: short"):
        config_from_args(TrainConfig, build_train_parser("p").parse_args(["nosuch"]), recipes)
    ev = build_eval_parser("ffnet-x-eval").parse_args(["--checkpoint", "c.pth", "--output", "o.json", "a.b=1"])
    assert (ev.checkpoint, ev.output, ev.overrides) == ("c.pth", "o.json", ["a.b=1"])

    def main(argv):  # noqa: ANN001, ANN202
        raise FFNetError("bad field 'x'")

    with pytest.raises(SystemExit) as info:
        run_cli(main)([])
    assert info.value.code == 2 and capsys.readouterr().err.strip() == "error: bad field 'x'"
    with pytest.raises(FFNetError):  # --debug: the exception itself, traceback and all
        run_cli(main)(["--debug"])
    out = write_results(tmp_path / "res" / "results.json", metrics={"top1": 1.0}, data="d", checkpoint=tmp_path,
                        protocol={"crop": 4}, wall_s=0.5)
    import json

    record = json.loads(out.read_text())
    assert record["metrics"] == {"top1": 1.0} and record["versions"]["torch"] == torch.__version__
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_folder_runs_go_on_past_bad_inputs_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    from metamixer.train.errors import for_each_input, run_cli

    def action(name: str) -> str:
        if name.startswith("bad"):
            raise FFNetError(f"{name}: not a readable image")
        return name.upper()

    def main(argv):  # noqa: ANN001, ANN202
        return for_each_input(["a", "bad1", "b", "bad2"], action, "image")

    with pytest.raises(SystemExit) as info:
        run_cli(main)([])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 1
    assert err == ["error: bad1: not a readable image", "error: bad2: not a readable image",
                   "error: 2 of 4 images failed: bad1, bad2"]
    assert for_each_input(["x"], action) == ["X"]


def test_overrides_without_a_recipe_start_from_the_apps_section_defaults() -> None:
    """An app's ``train`` default (here: a step run) is where a ``train.*`` override starts, not ``TrainConfig()``
    (which has neither epochs nor steps)."""
    from dataclasses import dataclass, field

    from metamixer.train.config import load_config

    @dataclass
    class AppConfig:
        run: RunConfig = field(default_factory=RunConfig)
        train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=100))

    cfg = load_config(AppConfig, None, ["train.batch_size=4"])
    assert (cfg.train.steps, cfg.train.batch_size) == (100, 4)
    with pytest.raises(ConfigError, match="exactly one of train.epochs and train.steps"):
        load_config(AppConfig, None, ["train.epochs=3"])


def test_eval_parser_without_overrides_rejects_key_value_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    from metamixer.train.cli import build_eval_parser

    parser = build_eval_parser("ffnet-x-eval", overrides=False)
    assert parser.parse_args(["--checkpoint", "c.pth"]).checkpoint == "c.pth"
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--checkpoint", "c.pth", "eval.batch_size=2"])
    assert info.value.code == 2 and "takes no key=value settings" in capsys.readouterr().err


def test_file_size_limit_keeps_the_previous_checkpoint_and_says_so(tmp_path: Path) -> None:
    """A real write failure, not a patched one: under ``ulimit -f`` (RLIMIT_FSIZE) in a fresh interpreter the
    kernel refuses the checkpoint write; the run stops with one message, last.pth stays the previous one."""
    import subprocess
    import sys
    import textwrap

    _fit(tmp_path, "fsize", epochs=1)
    last = tmp_path / "fsize" / "last.pth"
    before = _weights(last)
    limit = last.stat().st_size // 2
    child = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_loop import _fit
        from metamixer.train.errors import FFNetError
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        try:
            _fit(Path({str(tmp_path)!r}), "fsize", epochs=2, resume=Path({str(last)!r}))
        except FFNetError as exc:
            print(exc)
            sys.exit(2)
    """)
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert re.search(r"could not write checkpoint .*\.pth: File too large; the previous \S+ is intact", out.stdout)
    _same(before, _weights(last))
    assert not list((tmp_path / "fsize").glob(".*.tmp"))


def test_a_cli_run_that_fails_before_any_checkpoint_leaves_no_folder(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A user error after the run folder was made (bad data found while building the task) removes the folders
    this run created; a folder that existed before is kept."""
    from metamixer.train.errors import run_cli

    def main(argv):  # noqa: ANN001, ANN202
        prepare_run(RunConfig(output_dir=argv[0]), {"toy": True}, quiet=True)
        raise FFNetError("data.path: bad file")

    new = tmp_path / "new" / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)([str(new)])
    assert exit_info.value.code == 2 and "error: data.path: bad file" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(SystemExit):
        run_cli(main)([str(kept)])
    assert kept.is_dir()


def test_argparse_rejections_are_one_line_and_ranges_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from metamixer.train.cli import build_eval_parser, positive_float, positive_int

    parser = build_eval_parser("ffnet-x-eval")
    parser.add_argument("--tile", type=positive_int, default=None)
    parser.add_argument("--scale-factor", type=positive_float, default=1.0)
    ck = ["--checkpoint", "c.pth"]
    for argv, needle in ([[*ck, "--tile", "0"], "argument --tile: expected a value >= 1, got '0'"],
                         [[*ck, "--tile", "x"], "argument --tile: expected an integer >= 1, got 'x'"],
                         [[*ck, "--scale-factor", "nan"], "argument --scale-factor: expected a finite value > 0"],
                         [[*ck, "--nope"], "unrecognized arguments: --nope"],
                         [[], "the following arguments are required: --checkpoint"]):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: ffnet-x-eval: ") and needle in err, err
    assert parser.parse_args([*ck, "--tile", "3"]).tile == 3


def test_a_user_error_in_a_dataloader_worker_is_reported_as_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    from torch.utils.data import DataLoader, Dataset

    from metamixer.train.errors import run_cli

    class Corrupt(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):  # noqa: ANN204
            raise FFNetError("scene_0001.npy: corrupt file (expected 6 columns)")

    def main(argv):  # noqa: ANN001, ANN202
        list(DataLoader(Corrupt(), num_workers=1))

    with pytest.raises(SystemExit) as info:
        run_cli(main)([])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: scene_0001.npy: corrupt file (expected 6 columns)\n"
