"""Config loading/validation, CLI parsing and the run_cli error contract."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from metamixer.train.cli import build_parser, config_from_args
from metamixer.train.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from metamixer.train.errors import FFNetError, run_cli


@dataclass
class TrainCfg:
    lr: float = 1e-3
    epochs: int = 10
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    amp: bool = False


@dataclass
class ModelCfg:
    name: str = "ffnet_1"
    depths: tuple[int, ...] = (2, 2, 6, 2)
    drop_path: float | None = None
    kernel_sizes: list[int] = field(default_factory=lambda: [7, 7])


@dataclass
class EmaCfg:
    decay: float = 0.999


@dataclass
class Cfg:
    train: TrainCfg = field(default_factory=TrainCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    ema: EmaCfg | None = None
    output_dir: str = "runs/default"
    extra: dict = field(default_factory=dict)


@dataclass
class Required:
    data: str
    size: int = 3


def _write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_file(tmp_path: Path) -> None:
    assert load_config(Cfg) == Cfg()
    recipe = _write(tmp_path, "train:\n  lr: 3e-4\n  epochs: 5\nmodel:\n  depths: [1, 1]\n")
    cfg = load_config(Cfg, recipe)
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)  # YAML 1.1 would give the string "3e-4"
    assert cfg.train.epochs == 5 and cfg.model.depths == (1, 1) and cfg.model.name == "ffnet_1"


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    recipe = _write(tmp_path, "train:\n  lr: 0.1\n")
    cfg = load_config(Cfg, recipe, [
        "train.lr=3e-4", "train.amp=true", "model.depths=[3, 3]", "model.drop_path=null",
        "model.kernel_sizes=[5]", "train={epochs: 2}", "output_dir=runs/x", "extra.a.b=1",
    ])
    assert cfg.train == TrainCfg(lr=3e-4, epochs=2, precision="fp32", amp=True)  # dict merged, lr kept
    assert cfg.model.depths == (3, 3) and cfg.model.drop_path is None and cfg.model.kernel_sizes == [5]
    assert cfg.output_dir == "runs/x" and cfg.extra == {"a": {"b": 1}}
    assert load_config(Cfg, overrides=["train.epochs=3"]).train.epochs == 3


def test_int_accepted_for_float_and_optional_dataclass() -> None:
    cfg = load_config(Cfg, overrides=["train.lr=1", "ema.decay=0.9"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.ema == EmaCfg(decay=0.9)
    assert load_config(Cfg, overrides=["ema={decay: 0.5}"]).ema == EmaCfg(decay=0.5)


def test_unknown_key_in_file_names_key_file_and_valid_keys(tmp_path: Path) -> None:
    recipe = _write(tmp_path, "train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(Cfg, recipe)
    msg = str(info.value)
    assert str(recipe) in msg and "'train.lrr'" in msg and "did you mean 'train.lr'" in msg
    assert "lr, epochs, precision, amp" in msg
    top = _write(tmp_path, "modle: {}\n", "top.yaml")
    with pytest.raises(ConfigError, match=r"top.yaml: unknown key 'modle'.*train, model, ema, output_dir, extra"):
        load_config(Cfg, top)


def test_unknown_key_on_command_line() -> None:
    with pytest.raises(ConfigError, match=r"^command line: unknown key 'train.epoch' .*valid keys there: lr"):
        load_config(Cfg, overrides=["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"command line: unknown key 'ema.decy'"):
        load_config(Cfg, overrides=["ema.decy=3"])
    with pytest.raises(ConfigError, match=r"'output_dir' is a str value, not a section"):
        load_config(Cfg, overrides=["output_dir.sub=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'train.foo'"):
        load_config(Cfg, overrides=["train={foo: 1}"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=fast", "field 'train.lr' expects float, got str 'fast'"),
        ("train.epochs=2.5", "field 'train.epochs' expects int, got float 2.5"),
        ("train.epochs=true", "field 'train.epochs' expects int, got bool True"),
        ("train.amp=1", "field 'train.amp' expects bool, got int 1"),
        ("train.precision=fp8", "field 'train.precision' expects one of 'fp32', 'bf16', 'fp16'"),
        ("model.depths=[1, x]", "field 'model.depths[1]' expects int, got str 'x'"),
        ("model.depths=3", "field 'model.depths' expects tuple[int, ...]"),
        ("model.drop_path=high", "field 'model.drop_path' expects float or null"),
        ("train=3", "field 'train' expects a mapping for TrainCfg"),
    ],
)
def test_type_errors_name_field_and_type(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Cfg, overrides=[override])
    assert str(info.value).startswith("command line: ")
    assert expected in str(info.value)


def test_type_error_in_file_names_file(tmp_path: Path) -> None:
    recipe = _write(tmp_path, "train:\n  epochs: ten\n")
    with pytest.raises(ConfigError, match=rf"^{recipe}: field 'train.epochs' expects int, got str 'ten'"):
        load_config(Cfg, recipe)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train: [1, 2\n", r"invalid YAML \(line 2"),
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("train: 5\n", "field 'train' expects a mapping"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(Cfg, _write(tmp_path, text))


def test_missing_file_and_bad_override_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*absent.yaml"):
        load_config(Cfg, tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_config(Cfg, overrides=["train.lr"])
    with pytest.raises(ConfigError, match="empty key part"):
        load_config(Cfg, overrides=["train..lr=1"])
    with pytest.raises(ConfigError, match="cannot parse the value"):
        load_config(Cfg, overrides=["train.lr=[1,"])


def test_required_fields() -> None:
    with pytest.raises(ConfigError, match="missing required key.*data"):
        load_config(Required)
    assert load_config(Required, overrides=["data=/x"]) == Required(data="/x")


def test_save_round_trip(tmp_path: Path) -> None:
    cfg = load_config(Cfg, overrides=["train.lr=2e-4", "model.depths=[1,2,3]", "ema.decay=0.99",
                                      "extra.note=hello"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert path.read_text().startswith("train:\n  lr: 0.0002\n")
    assert load_config(Cfg, path) == cfg
    assert config_from_dict(Cfg, config_to_dict(cfg)) == cfg
    assert config_to_dict(cfg)["model"]["depths"] == [1, 2, 3]


def test_apply_overrides_without_schema() -> None:
    base = {"a": {"b": 1}, "c": 2}
    out = apply_overrides(base, ["a.b=3", "a.d=[1]", "e.f=null"])
    assert out == {"a": {"b": 3, "d": [1]}, "c": 2, "e": {"f": None}}
    assert base == {"a": {"b": 1}, "c": 2}  # input untouched


def test_fixed_tuple_path_and_locally_defined_sections(tmp_path: Path) -> None:
    @dataclass
    class Inner:  # defined in a function: its annotation string cannot be resolved by get_type_hints
        a: int = 1

    @dataclass
    class Outer:
        inner: Inner = field(default_factory=Inner)
        where: Path = Path("runs")
        pair: tuple[int, float] = (1, 2.0)

    cfg = load_config(Outer, overrides=["inner.a=3", "where=/tmp/y", "pair=[3, 4]"])
    assert cfg == Outer(Inner(3), Path("/tmp/y"), (3, 4.0)) and isinstance(cfg.pair[1], float)
    with pytest.raises(ConfigError, match=r"field 'pair' expects tuple\[int, float\], got list \[1, 2, 3\]"):
        load_config(Outer, overrides=["pair=[1, 2, 3]"])
    with pytest.raises(ConfigError, match="field 'pair\\[0\\]' expects int"):
        load_config(Outer, overrides=["pair=[a, 2]"])
    with pytest.raises(ConfigError, match="unknown key 'inner.b'"):
        load_config(Outer, overrides=["inner.b=1"])
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(Outer, path) == cfg


def test_frozen_and_post_init_validation() -> None:
    @dataclass(frozen=True)
    class Positive:
        n: int = 1

        def __post_init__(self) -> None:
            if self.n <= 0:
                raise ValueError("n must be positive")

    assert config_from_dict(Positive, {"n": 4}) == Positive(4)
    with pytest.raises(ConfigError, match="n must be positive"):
        config_from_dict(Positive, {"n": -1}, source="x.yaml")
    assert dataclasses.is_dataclass(Positive)


# --------------------------------------------------------------------------------------------- CLI
def _main(argv: list[str] | None) -> int:
    parser = build_parser("ffnet-test-train", "test")
    parser.add_argument("--resume", default=None)
    args = parser.parse_args(argv)
    cfg = config_from_args(Cfg, args)
    print(f"lr={cfg.train.lr} resume={args.resume}")
    return 0


def test_cli_builds_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write(tmp_path, "train:\n  lr: 0.5\n")
    assert run_cli(_main)(["--config", str(recipe), "train.epochs=2", "--resume", "last.pth"]) == 0
    assert capsys.readouterr().out.strip() == "lr=0.5 resume=last.pth"
    assert run_cli(_main)(["train.lr=0.25"]) == 0
    assert capsys.readouterr().out.strip() == "lr=0.25 resume=None"


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(_main)(["train.lrr=1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: command line: unknown key 'train.lrr'")
    with pytest.raises(SystemExit) as info:
        run_cli(_main)(["--config", str(tmp_path / "missing.yaml")])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: config file not found")


def test_overrides_after_a_list_option_stay_overrides() -> None:
    """argparse alone gives ``--seeds 1 2 train.lr=0.5`` all three tokens as seeds (and fails on ``type=int``)."""
    import argparse

    plain = argparse.ArgumentParser()
    plain.add_argument("--seeds", nargs="+", type=int, default=[0])
    plain.add_argument("overrides", nargs="*")
    with pytest.raises(SystemExit):  # the failure being fixed
        plain.parse_args(["--seeds", "1", "2", "train.lr=0.5"])
    parser = build_parser("ffnet-test-repro")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--output", default="runs")
    args = parser.parse_args(["train.epochs=2", "--seeds", "1", "2", "train.lr=0.5", "--output", "o"])
    assert args.seeds == [1, 2] and args.output == "o"
    assert args.overrides == ["train.epochs=2", "train.lr=0.5"]  # command-line order kept
    assert config_from_args(Cfg, args).train.lr == 0.5
    args = parser.parse_args(["--output", "runs/a", "output_dir=x", "model.dims=[64]"])
    assert args.output == "runs/a" and args.overrides == ["output_dir=x", "model.dims=[64]"]
    no_config = build_parser("ffnet-test-repro", config=False)
    assert not hasattr(no_config.parse_args([]), "config") and no_config.parse_args(["a.b=1"]).overrides == ["a.b=1"]


def test_run_cli_maps_exceptions(capsys: pytest.CaptureFixture[str]) -> None:
    def raises(exc: BaseException):
        def main(argv):
            raise exc
        return run_cli(main)

    with pytest.raises(SystemExit) as info:
        raises(FFNetError("bad thing\nsecond line"))([])
    assert info.value.code == 2 and capsys.readouterr().err == "error: bad thing second line\n"
    with pytest.raises(SystemExit) as info:
        raises(FileNotFoundError(2, "No such file", "/data/x.png"))([])
    assert info.value.code == 2 and capsys.readouterr().err == "error: file or folder not found: /data/x.png\n"
    with pytest.raises(SystemExit) as info:
        raises(PermissionError(13, "denied", "/root/x"))([])
    assert info.value.code == 2 and capsys.readouterr().err == "error: permission denied: /root/x\n"
    with pytest.raises(SystemExit) as info:
        raises(KeyboardInterrupt())([])
    assert info.value.code == 130
    with pytest.raises(ZeroDivisionError):  # bugs keep their traceback
        raises(ZeroDivisionError("bug"))([])
    assert run_cli(lambda argv: None)([]) == 0


def test_error_line_does_not_share_a_line_with_an_open_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from tqdm import tqdm

    def main(argv):  # noqa: ANN001, ANN202
        bar = tqdm(total=10, desc="epoch 1", file=sys.stderr)
        bar.update(1)  # a bar drawn mid-way, as when a data error surfaces inside the training loop
        raise FFNetError("data.csv: column 'OT' missing")

    with pytest.raises(SystemExit):
        run_cli(main)([])
    err = capsys.readouterr().err
    assert "\nerror: data.csv: column 'OT' missing\n" in err, repr(err)


def test_float_fields_take_yaml_strings_that_are_numbers(tmp_path: Path) -> None:
    """PyYAML reads ``3e-4`` (no dot) and ``nan`` as strings: a float field takes them as the numbers they
    spell, so a YAML ``lr: 3e-4`` works and ``lr: nan`` reaches the range check instead of a type error."""
    recipe = _write(tmp_path, "train:\n  lr: 3e-4\n")
    assert load_config(Cfg, recipe).train.lr == pytest.approx(3e-4)
    assert load_config(Cfg, overrides=["train.lr=1E-2"]).train.lr == pytest.approx(1e-2)
    from metamixer.train.sections import OptimConfig

    with pytest.raises(ConfigError, match=r"field 'lr' must be a finite number > 0, got float nan"):
        load_config(OptimConfig, overrides=["lr=nan"])
