"""Config machinery shared by every stage: dataclasses with help text, YAML, `key=value` overrides, hashing.

Each stage keeps its own config dataclass beside its code (TRL style: `RewriteConfig` in rewrite.py,
`TrainConfig` in train.py ...); this module only loads, overrides, validates and hashes them.

    cfg = load_config(RewriteConfig, "configs/rewrite.yaml", ["k=8", "keep=first"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    pass


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs) -> Any:
    """A dataclass field with help text (shown by the CLI and the docs)."""
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of option: value")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (so `k=8` is an int, `stop=[a,b]` a list)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw != "" else ""


def _coerce(name: str, value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: option '{name}' = {value!r} is not a {hint}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads `1e-5` (no dot) as a string; a float option should still take it.
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: option '{name}' = {value!r} should be {hint.__name__}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: option '{name}' = {value!r} should be a list")
        return [_coerce(name, v, args[0], where) for v in value] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: option '{name}' = {value!r} should be a mapping")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: option '{name}' should be a mapping of {hint.__name__} options")
        return build_config(hint, value, f"{where}.{name}")
    return value


def build_config(cls: type[C], values: dict[str, Any], where: str = "config") -> C:
    """Make `cls` from a dict, naming unknown options (with the closest known ones) and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        import difflib

        hints_txt = []
        for key in unknown:
            close = difflib.get_close_matches(key, fields, n=1)
            hints_txt.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(f"{where}: unknown option {', '.join(hints_txt)}; known: {', '.join(fields)}")
    kwargs = {k: _coerce(k, v, hints[k], where) for k, v in values.items()}
    try:
        cfg = cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, AssertionError) as err:
            raise ConfigError(f"{where}: {err}") from None
    return cfg


def set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    node = values
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
    node[parts[-1]] = value


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> C:
    """YAML file (optional) -> base dict -> `key=value` overrides -> validated dataclass."""
    values: dict[str, Any] = dict(base or {})
    if path is not None:
        values.update(read_yaml(path))
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(values, key, value)
    return build_config(cls, values, str(path) if path else "config")


def config_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any, exclude: tuple[str, ...] = ()) -> str:
    """A short hash of the options that decide a stage's output (`exclude` names those that don't)."""
    data = cfg if isinstance(cfg, dict) else config_dict(cfg)
    data = {k: v for k, v in data.items() if k not in exclude}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def help_table(cls: type) -> str:
    """Markdown table of a config's options (used by docs and `--help` epilogs)."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        rows.append(f"| `{f.name}` | `{default}` | {f.metadata.get('help', '')} |")
    return "\n".join(rows)
