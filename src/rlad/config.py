"""Typed dataclass configs: YAML load/save, nested dict conversion and `--set a.b=c` overrides.

Every method defines one dataclass (nested dataclasses allowed). The CLI exposes each field as
`--set field.sub=value`; values are parsed as YAML scalars and then coerced to the field's type, so
`--set trainer.steps=100` and `--set backbone.weights=/path` both do the obvious thing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from rlad.errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A plain dict (paths and tuples turned into YAML-friendly values)."""

    def convert(value):
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(cfg)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot use {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
        item = args[0] if args else Any
        items = [_coerce(v, item, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if as_float != int(as_float):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    if annotation is Path:
        return Path(str(value))
    return value


def from_dict(cls: type[T], data: dict, where: str = "", types: dict[str, type] | None = None) -> T:
    """Build `cls` from a (possibly partial) dict; unknown keys are an error, not ignored.

    `types` gives the dataclass of fields annotated `Any` whose class depends on another field (a
    method's or a policy's own config), so their values are checked like every other field."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s): {', '.join(prefix + k for k in sorted(unknown))}; "
            f"valid keys{' under ' + where if where else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        annotation = (types or {}).get(name, hints[name])
        kwargs[name] = _coerce(value, annotation, f"{where}.{name}" if where else name)
    return cls(**kwargs)


def raise_if_problems(problems: Iterable[str | None]) -> None:
    """The one way configs are validated: each config's `validate()` lists every problem it finds
    (the keys as a user writes them in `--set`, e.g. "model.steps must be >= 1, got 0"; None for a
    check that passed) and hands the list here, so a user sees all of them in one ConfigError."""
    found = [p for p in problems if p]
    if found:
        raise ConfigError("; ".join(found))


def deep_merge(base: dict, updates: dict) -> dict:
    """`base` with `updates` applied: nested mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def merge(cfg: T, updates: dict, types: dict[str, type] | None = None) -> T:
    """`cfg` with `updates` (a nested dict) applied; nested dataclasses merge key by key."""
    return from_dict(type(cfg), deep_merge(to_dict(cfg), updates), types=types)


def parse_overrides(pairs: list[str]) -> dict:
    """`["a.b=3", "c=x"]` -> `{"a": {"b": 3}, "c": "x"}` (values parsed as YAML scalars)."""
    nested: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is set twice")
        node[parts[-1]] = value
    return nested


def save_yaml(cfg: Any, path: Path | str) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_yaml(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def build(cls: type[T], config_file: Path | str | None = None, overrides: list[str] | None = None,
          defaults: dict[str, Any] | None = None) -> T:
    """Defaults, then the YAML file, then `--set` overrides, in that order.

    `defaults` replaces field defaults of `cls` (e.g. `model=PatchCoreConfig()` for a field typed
    `Any`); a field given a dataclass this way keeps that class through the file and the overrides."""
    defaults = defaults or {}
    cfg = cls(**defaults)
    types = {name: type(value) for name, value in defaults.items() if dataclasses.is_dataclass(value)}
    if config_file is not None:
        cfg = merge(cfg, load_yaml(config_file), types)
    if overrides:
        cfg = merge(cfg, parse_overrides(overrides), types)
    return cfg
