"""Config machinery shared by every stage: dataclasses with help text, YAML, `key=value` overrides, hashing.

Each stage keeps its own config dataclass beside its code (TRL style: `RewriteConfig` in rewrite.py,
`TrainConfig` in train.py ...); this module only loads, overrides, validates and hashes them.

    cfg = load_config(RewriteConfig, "configs/rewrite.yaml", ["k=8", "keep=first"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader (no tags that build objects), refusing a mapping that names a key twice: plain
    YAML keeps the last value silently, so `lr: 1e-5` ... `lr: 1e-3` would train with the one you missed."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first at line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def safe_yaml(text: str) -> Any:
    """Parse YAML safely (no object-building tags) and refuse duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    try:
        data = safe_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    except (UnicodeDecodeError, RecursionError) as err:
        raise ConfigError(f"{path}: not readable as YAML text ({type(err).__name__})") from None
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
    try:
        return key.strip(), safe_yaml(raw) if raw != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{item}': the value is not valid YAML: {' '.join(str(err).split())}") from None


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
    check_values(cfg, where)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, AssertionError) as err:
            raise ConfigError(f"{where}: {err}") from None
    return cfg


def _rule(name: str) -> tuple[str, float] | None:
    """The bound every config's option of this name must meet, whichever stage it belongs to."""
    if name.endswith("temperature"):
        return ">=", 0.0  # a negative temperature was silently greedy
    if "timeout" in name:
        return ">", 0.0  # 0 s or NaN: nothing could ever be verified
    if name in (
        "limit",
        "max_new_tokens",
        "max_completion_length",
        "max_length",
        "n",
        "k",
        "num_generations",
        "batch_size",
        "shard_size",
        "max_prompt_tokens",
    ) or name.endswith("_workers"):
        return ">=", 1.0
    return None


def check_values(cfg: Any, where: str = "config") -> None:
    """Bounds shared by every stage config: no NaN or infinite float; temperatures >= 0; timeouts > 0;
    limits, token budgets, counts and sizes >= 1 (a negative --limit was read as 1). Raises ConfigError."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value) and f.default != value:
            raise ConfigError(f"{where}: option '{f.name}' = {value}: must be a finite number")
        rule = _rule(f.name)
        if rule is None:
            continue
        op, bound = rule
        if (op == ">=" and not value >= bound) or (op == ">" and not value > bound):
            raise ConfigError(f"{where}: option '{f.name}' = {value}: must be {op} {bound:g}")


def check_passthrough(values: dict[str, Any], cls: type, what: str, ours: dict[str, str] | None = None) -> None:
    """Keys of a pass-through dict (`trainer_args`, `trl_args`) must be fields of the library's argument class
    `cls`; a misspelling is refused with the closest field, and a field we already expose names our option."""
    import difflib

    fields = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key in (ours or {}):
            raise ValueError(f"{what}.{key}: set it with our option '{ours[key]}' instead")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            raise ValueError(
                f"{what}.{key} is not a {cls.__name__} field" + (f" (did you mean '{close[0]}'?)" if close else "")
            )


def set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    node = values
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
    node[parts[-1]] = value


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> C:
    """YAML file (optional) -> base dict -> `key=value` overrides -> validated dataclass."""
    values: dict[str, Any] = dict(base or {})
    if path is not None:
        values.update(read_yaml(path))
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(values, key, value)
    return build_config(cls, values, str(path) if path else "config")


# options of a sharded stage (rewrite, map synthesize) left out of its run id: where the output goes, speed knobs,
# tracking, and how the problems were found (the problems themselves are hashed). Batch size can change float
# rounding in batched forward passes, but it is a speed knob users expect to change on resume; byte identity of a
# resumed run needs the same size (adapt/rewrite.py's docstring).
NOT_HASHED = (
    "out",
    "force",
    "batch_size",
    "verifier_workers",
    "data",
    "data_dir",
    "limit",
    "report_to",
    "tracking_dir",
    "online",
    "max_prompt_tokens",
    "fields",
)  # (the problems kept are hashed themselves)


def config_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def decided_options(cfg: Any) -> dict[str, Any]:
    """The options of a sharded stage its run id covers: all but NOT_HASHED, with every engine block reduced to
    its backend (`without_engine_options`)."""
    return without_engine_options({k: v for k, v in config_dict(cfg).items() if k not in NOT_HASHED})


def without_engine_options(values: Any) -> Any:
    """`values` with the `options` of every engine block ({backend, options}, at any depth) left out.

    An engine's options say where and how to run (server URLs, concurrency, retries, timeouts, memory share,
    tensor parallelism), not what: a run resumed against other servers, or with more concurrency, keeps its
    shards. The backend itself stays decided (hf and a server round differently). What an option could change
    downstream is hashed where it lands: the problems a length budget keeps are part of every run id."""
    if isinstance(values, dict):
        if set(values) == {"backend", "options"}:
            return {"backend": values["backend"]}
        # a `same` engine block (a scoring role served by the stage's engine) adds nothing to decide
        return {k: without_engine_options(v) for k, v in values.items() if not _same_engine(v)}
    return values


def _same_engine(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"backend", "options"} and value["backend"] == "same"


def config_hash(cfg: Any, exclude: tuple[str, ...] = ()) -> str:
    """A short hash of the options that decide a stage's output (`exclude` names those that don't)."""
    data = cfg if isinstance(cfg, dict) else config_dict(cfg)
    data = {k: v for k, v in data.items() if k not in exclude}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def option_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) of every option of a config class, nested sections flattened
    (`grpo.beta`): what `--help` lists and `sftadapt config show` resolves, from the one declaration."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if dataclasses.is_dataclass(hints.get(f.name)):
            rows.extend(option_rows(hints[f.name], key + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((key, json.dumps(default, default=str), f.metadata.get("help", "")))
    return rows
