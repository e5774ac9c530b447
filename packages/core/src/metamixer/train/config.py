"""Typed experiment configs: dataclasses + YAML files + dotted command-line overrides.

Every app describes its settings as (nested) dataclasses. A run is configured by a YAML recipe plus overrides
such as ``train.lr=3e-4 model.depths=[2,2,6,2]``; the values are parsed as YAML so lists, bools and ``null``
work without quoting. Unknown keys and wrongly typed values are rejected up front with a :class:`ConfigError`
naming the key, where it came from (file or command line) and what was expected — a typo must never silently
train the wrong model. The *resolved* config is written into the run folder (:func:`save_config`) so every run
can be reproduced from its own ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from metamixer.train.errors import FFNetError

__all__ = [
    "ConfigError",
    "bounded",
    "load_config",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "apply_overrides",
    "parse_override",
    "yaml_load",
]

T = TypeVar("T")
COMMAND_LINE = "command line"


class ConfigError(FFNetError):
    """A config file or override is invalid (unknown key, wrong type, unreadable YAML, missing field)."""


# --------------------------------------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4`` as a float.

    PyYAML follows YAML 1.1, where a float needs a dot (``3.0e-4``); ``lr: 3e-4`` would otherwise become the
    *string* "3e-4" — the most common config surprise in ML code.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text safely (no object construction), with ``1e-3``-style floats understood."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader


class _Dumper(yaml.SafeDumper):
    """Safe dumper that keeps field order and writes tuples as lists."""


_Dumper.add_representer(tuple, lambda dumper, data: dumper.represent_list(list(data)))


# ------------------------------------------------------------------------------------------ to / from dict
def config_to_dict(cfg: Any) -> Any:
    """Convert a (nested) dataclass config into plain YAML-friendly containers.

    Tuples become lists, paths become strings and enums their values, so the result can be saved as YAML or
    inside a ``weights_only`` checkpoint and read back by :func:`config_from_dict`.
    """
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {config_to_dict(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, PurePath):
        return str(cfg)
    if isinstance(cfg, enum.Enum):
        return cfg.value
    return cfg


def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved field annotations (handles ``from __future__ import annotations`` in user modules).

    If some annotation cannot be resolved (e.g. a dataclass defined inside a function), the others are still
    checked, and a field whose default is a dataclass instance is typed by that instance's class so nested
    sections keep working.
    """
    try:
        return typing.get_type_hints(cls)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    module = sys.modules.get(cls.__module__)
    module_ns = dict(vars(module)) if module is not None else {}
    for f in dataclasses.fields(cls):
        tp: Any = f.type
        if isinstance(tp, str):
            try:
                tp = eval(tp, module_ns, {})  # noqa: S307 - annotations of the user's own config class
            except Exception:
                default = f.default
                if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
                    default = f.default_factory()
                tp = type(default) if dataclasses.is_dataclass(default) else Any
        hints[f.name] = tp
    return hints


def _init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _type_name(tp: Any) -> str:
    """Human-readable type for error messages (``list[int]``, ``Optional[float]``, ``one of 'a', 'b'``)."""
    if tp is Any:
        return "any value"
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in non_none)
        return f"{inner} or null" if len(non_none) < len(args) else inner
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]" if args else name
    if dataclasses.is_dataclass(tp):
        return f"a mapping for {tp.__name__}"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _where(source: str) -> str:
    return source if source else "config"


class _Mismatch(Exception):
    """Internal: value does not fit the annotation (converted into a ConfigError with context)."""


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it converted (int->float, list->tuple, dict->dataclass).

    Raises :class:`_Mismatch` for simple mismatches (caller adds field context) and :class:`ConfigError`
    directly from nested dataclasses (which already carry their own context).
    """
    if tp is Any or isinstance(tp, (str, typing.ForwardRef)) or isinstance(tp, TypeVar):
        return value  # unresolvable annotation: nothing to check against
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Annotated:
        return _coerce(value, args[0], key, source)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):  # True must not match Literal[1]
            return value
        raise _Mismatch
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return config_from_dict(tp, value, source=source, _prefix=f"{key}.")
        raise _Mismatch
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        item_tp = args[0] if args else Any
        return [_coerce_item(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item_tp = args[0] if args else Any
            return tuple(_coerce_item(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(args) != len(value):
            raise _Mismatch
        return tuple(_coerce_item(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        val_tp = args[1] if len(args) == 2 else Any
        return {k: _coerce_item(v, val_tp, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `3e-4` and `nan` as strings; range checks then judge the value
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # e.g. `name=2024` on the command line; lossless, unlike floats
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)):
            return tp(value)
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if value == member.value or value == member.name:
                return member
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value


def _coerce_item(value: Any, tp: Any, key: str, source: str) -> Any:
    """Like :func:`_coerce` but reports the element path (``depths[2]``) on mismatch."""
    try:
        return _coerce(value, tp, key, source)
    except _Mismatch:
        raise ConfigError(
            f"{_where(source)}: field '{key}' expects {_type_name(tp)}, got {_describe(value)}"
        ) from None


def _unknown_key_error(cls: type, key: str, prefix: str, source: str) -> ConfigError:
    valid = [f.name for f in _init_fields(cls)]
    hint = difflib.get_close_matches(str(key), valid, n=1)
    did_you_mean = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
    section = f" in section '{prefix[:-1]}'" if prefix else ""
    return ConfigError(
        f"{_where(source)}: unknown key '{prefix}{key}'{section}{did_you_mean}; "
        f"valid keys {'there' if prefix else 'at top level'}: {', '.join(valid)}"
    )


def config_from_dict(cls: type[T], d: Mapping[str, Any] | None, source: str = "", _prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrongly typed values.

    ``source`` (a file name or ``"command line"``) is named in every error so the user knows where to fix it.
    Keys absent from ``d`` keep their dataclass defaults; a missing field without default is an error.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"config_from_dict needs a dataclass type, got {cls!r}")
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        where = f"section '{_prefix[:-1]}'" if _prefix else "the top level"
        raise ConfigError(f"{_where(source)}: {where} must be a mapping of keys to values, got {_describe(d)}")
    fields = {f.name: f for f in _init_fields(cls)}
    hints = _type_hints(cls)
    for key in d:
        if key not in fields:
            raise _unknown_key_error(cls, key, _prefix, source)
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        tp = hints.get(name, Any)
        key = f"{_prefix}{name}"
        try:
            kwargs[name] = _coerce(value, tp, key, source)
        except _Mismatch:
            raise ConfigError(
                f"{_where(source)}: field '{key}' expects {_type_name(tp)}, got {_describe(value)}"
            ) from None
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"{_where(source)}: missing required key(s) {', '.join(_prefix + m for m in missing)}"
        )
    try:
        built = cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation in user dataclasses
        raise ConfigError(f"{_where(source)}: invalid {cls.__name__}{' ' + _prefix[:-1] if _prefix else ''}: {exc}") from None
    _check_ranges(built, source, _prefix)
    return built


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None) -> Any:
    """A dataclass field whose numeric value must lie in the given range (``None`` passes: it means "off").

    Checked when the config is built (:func:`config_from_dict`), so ``train.batch_size=0`` or ``optim.lr: nan``
    stops at once with the dotted key named, not as a traceback in the middle of a run. NaN and infinities never
    pass a bounded field.
    """
    rule = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    factory = (lambda: list(default)) if isinstance(default, list) else None
    metadata = {"bounds": {k: v for k, v in rule.items() if v is not None}}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_BOUND_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _in_bounds(value: float, bounds: Mapping[str, float]) -> bool:
    import math

    if isinstance(value, bool) or not math.isfinite(value):
        return False
    return all({"ge": value >= b, "gt": value > b, "le": value <= b, "lt": value < b}[k] for k, b in bounds.items())


def _check_ranges(obj: Any, source: str, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        bounds = f.metadata.get("bounds")
        value = getattr(obj, f.name)
        if not bounds or value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(item, (int, float)) or not _in_bounds(item, bounds):
                rule = " and ".join(f"{_BOUND_WORDS[k]} {b:g}" for k, b in bounds.items())
                raise ConfigError(f"{_where(source)}: field '{prefix}{f.name}' must be a finite number {rule}, "
                                  f"got {_describe(value)}")


# -------------------------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into (``["a","b","c"]``, YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"{COMMAND_LINE}: override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"{COMMAND_LINE}: override '{text}' has an empty key part")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{COMMAND_LINE}: cannot parse the value of override '{text}' as YAML: {problem}") from None
    return parts, value


def _unwrap_dataclass(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (``Foo`` or ``Optional[Foo]``), else None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return _unwrap_dataclass(inner[0])
    return None


def _is_free_mapping(tp: Any) -> bool:
    """True for ``dict[...]``/``Any`` fields, whose sub-keys are not part of the schema."""
    if tp is Any or tp is dict:
        return True
    if get_origin(tp) in (dict, Mapping):
        return True
    if get_origin(tp) in (Union, types.UnionType):
        return any(_is_free_mapping(a) for a in get_args(tp) if a is not type(None))
    return False


def _deep_merge(base: Any, update: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(update, Mapping):
        merged = dict(base)
        for k, v in update.items():
            merged[k] = _deep_merge(merged.get(k), v)
        return merged
    return update


def _default_dict(cls: type, parent: type | None = None, name: str = "") -> dict[str, Any]:
    """The default contents of section ``name`` (of dataclass ``cls``) in ``parent``: the parent's own default
    for the field where it has one (``train: X = field(default_factory=lambda: X(steps=10))``), else ``cls()``."""
    if parent is not None:
        for f in _init_fields(parent):
            if f.name == name and f.default_factory is not dataclasses.MISSING:
                return config_to_dict(f.default_factory())
            if f.name == name and f.default is not dataclasses.MISSING and f.default is not None:
                return config_to_dict(f.default)
    try:
        return config_to_dict(cls())
    except (TypeError, ValueError):  # required or interdependent fields: start empty, validation reports them
        return {}


def apply_overrides(
    d: Mapping[str, Any],
    overrides: Iterable[str] = (),
    cls: type | None = None,
    source: str = COMMAND_LINE,
) -> dict[str, Any]:
    """Return a copy of ``d`` with dotted overrides (``["train.lr=3e-4", "model.depths=[2,2,6,2]"]``) applied.

    Values are parsed as YAML. A mapping value assigned to a section is deep-merged into it (``train={lr: 1}``
    changes only ``lr``). With ``cls`` given, every key path is checked against the dataclass schema so a typo
    fails here, naming the command line rather than a file.
    """
    result = config_to_dict(dict(d))
    for text in overrides:
        parts, value = parse_override(text)
        node: dict[str, Any] = result
        schema: type | None = cls
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[:depth])
            prefix = prefix + "." if prefix else ""
            field_tp: Any = Any
            if schema is not None:
                hints = _type_hints(schema)
                if part not in {f.name for f in _init_fields(schema)}:
                    raise _unknown_key_error(schema, part, prefix, source)
                field_tp = hints.get(part, Any)
            last = depth == len(parts) - 1
            if last:
                node[part] = _deep_merge(node.get(part), value) if isinstance(value, Mapping) else value
                break
            sub_schema = _unwrap_dataclass(field_tp) if schema is not None else None
            if schema is not None and sub_schema is None and not _is_free_mapping(field_tp):
                raise ConfigError(
                    f"{source}: '{prefix}{part}' is a {_type_name(field_tp)} value, not a section; "
                    f"cannot set '{'.'.join(parts)}'"
                )
            child = node.get(part)
            if not isinstance(child, dict):
                child = _default_dict(sub_schema, schema, part) if sub_schema is not None else {}
                node[part] = child
            node = child
            schema = sub_schema
    return result


# -------------------------------------------------------------------------------------------- file I/O
def _read_yaml_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got {_describe(data)}")
    return dict(data)


def load_config(
    cls: type[T], path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()
) -> T:
    """Load dataclass ``cls`` from an optional YAML file, then apply dotted overrides.

    The file is validated on its own first so an unknown key is reported against the file; overrides are then
    checked against the schema and reported against the command line.
    """
    overrides = list(overrides)
    if path is not None:
        file_path = Path(path).expanduser()
        cfg = config_from_dict(cls, _read_yaml_file(file_path), source=str(file_path))
        if not overrides:
            return cfg
        base = config_to_dict(cfg)
    else:
        base = {}
        if not overrides:
            return config_from_dict(cls, base, source="defaults (no --config given)")
    merged = apply_overrides(base, overrides, cls=cls, source=COMMAND_LINE)
    return config_from_dict(cls, merged, source=COMMAND_LINE)


def save_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config (dataclass or mapping) as YAML, creating the folder; returns the path.

    Written via a temp file + rename so a crash never leaves a truncated ``config.yaml`` in a run folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
