"""Config machinery shared by every stage: dataclasses with help text, YAML, `key=value` overrides, hashing.

Each stage keeps its own config dataclass beside its code (TRL style: `RewriteConfig` in adapt/rewrite.py,
`TrainConfig` in train/stage.py ...; the stage registry, registry.py, says which); this module only loads,
overrides, validates and hashes them. There is one validation path: `build_config` (types, then each
option's range in RANGES, then the class's `validate()`, then the network policy), used by the CLI, `--config`
files, `sftadapt run`'s sections and library callers alike.

    cfg = load_config(RewriteConfig, "configs/rewrite.yaml", ["k=8", "keep=first"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
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


# What a config's YAML may expand to. A config is a few hundred values; these bounds leave real configs ample room
# and refuse, while the text is still being composed into nodes, the inputs whose expansion would run a command
# without end: aliases nested n deep ("billion laughs") build 10^n values as soon as anything walks the dict
# (dataclasses.asdict, the stage hash's json.dumps), and an alias inside its own anchor is a cycle.
YAML_MAX_BYTES = 1 << 20  # a config file or --set value, in bytes
YAML_MAX_ALIASES = 1000  # alias uses (*name) per document
YAML_MAX_DEPTH = 64  # nesting of sequences and mappings, counted through aliases
YAML_MAX_VALUES = 100_000  # values (scalars, sequences, mappings) once every alias is expanded


class YAMLLimitError(yaml.MarkedYAMLError):
    """A document over one of the YAML_MAX_* bounds, or an alias to the value that contains it."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader (no tags that build objects), refusing a mapping that names a key twice (plain YAML keeps
    the last value silently, so `lr: 1e-5` ... `lr: 1e-3` would train with the one you missed) and any document
    over the YAML_MAX_* bounds.

    The bounds are counted while composing: an alias stands for the node of its anchor, so each node's size and
    depth after expansion are known, bottom-up, as soon as it is composed (a bomb is refused at its first level
    past the bound, before anything expands it), and an alias to an anchor still being composed is a cycle."""

    def __init__(self, stream):
        super().__init__(stream)
        self._expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once aliases are expanded
        self._open_anchors: set[str] = set()  # anchors of the collections being composed (ancestors)
        self._aliases = 0
        self._depth = 0

    def _refuse(self, problem: str, mark) -> None:
        raise YAMLLimitError(problem=problem, problem_mark=mark)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                self._refuse(f"alias *{event.anchor} refers to the value that contains it (a cycle)", event.start_mark)
            self._aliases += 1
            if self._aliases > YAML_MAX_ALIASES:
                self._refuse(f"more than {YAML_MAX_ALIASES} aliases (*name)", event.start_mark)
            return super().compose_node(parent, index)  # the anchor's node, already measured
        self._depth += 1
        if self._depth > YAML_MAX_DEPTH:
            self._refuse(f"nested more than {YAML_MAX_DEPTH} levels deep", event.start_mark)
        if event.anchor is not None:
            self._open_anchors.add(event.anchor)
        node = super().compose_node(parent, index)
        self._open_anchors.discard(event.anchor)
        self._depth -= 1
        self._measure(node, event.start_mark)
        return node

    def _measure(self, node, mark) -> None:
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        sizes = [self._expanded[id(child)] for child in children]
        values = 1 + sum(v for v, _ in sizes)
        depth = 1 + max((d for _, d in sizes), default=0)
        if values > YAML_MAX_VALUES:
            self._refuse(
                f"expands to more than {YAML_MAX_VALUES} values through its aliases (an alias bomb?); "
                "write the values out or use fewer aliases",
                mark,
            )
        if depth > YAML_MAX_DEPTH:
            self._refuse(f"nested more than {YAML_MAX_DEPTH} levels deep once its aliases are expanded", mark)
        self._expanded[id(node)] = (values, depth)

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base`: the base class merges it, and keys given beside it win (not duplicates)
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
    """Parse YAML safely: no object-building tags, no duplicate keys, nothing over the YAML_MAX_* bounds (raised
    as YAMLLimitError, a yaml.YAMLError, before any alias is expanded). A value Python cannot hold (an integer of
    more than 4300 digits) is a yaml.YAMLError too."""
    if len(text.encode("utf-8", "surrogatepass")) > YAML_MAX_BYTES:
        raise YAMLLimitError(problem=f"longer than {YAML_MAX_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except (ValueError, OverflowError) as err:
        raise YAMLLimitError(problem=f"a value cannot be read: {' '.join(str(err).split(';')[0].split())}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a YAML error: a YAMLLimitError as `line N: problem`, any other as yaml words it."""
    if isinstance(err, YAMLLimitError):
        mark = err.problem_mark
        return (f"line {mark.line + 1}: " if mark is not None else "") + str(err.problem)
    return "not valid YAML: " + " ".join(str(err).split())


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's top-level mapping; every problem (missing, a folder, not YAML, over the YAML_MAX_* bounds,
    empty, not a mapping, a name the file system cannot take) is one ConfigError naming the file."""
    from sftadapt.runtime.paths import path_problem, shown

    why = path_problem(path)  # before is_dir(): a name over the file system's limit raises there
    if why:
        raise ConfigError(f"{shown(path)}: {why}")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    try:
        with path.open("rb") as f:  # at most one byte past the bound: a huge file or a device is not read whole
            raw = f.read(YAML_MAX_BYTES + 1)
        if len(raw) > YAML_MAX_BYTES:
            raise ConfigError(f"{path}: longer than {YAML_MAX_BYTES} bytes: not a config file")
        data = safe_yaml(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {_yaml_problem(err)}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not readable as YAML text ({type(err).__name__})") from None
    if data is None:
        # an empty file (or comments only) would run every default, e.g. a whole default study into runs/study
        raise ConfigError(f"{path}: empty config: it sets no option (is it the file you meant?)")
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
        shown = item if len(item) <= 80 else item[:77] + "..."
        what = err.problem if isinstance(err, YAMLLimitError) else "the value is " + _yaml_problem(err)
        raise ConfigError(f"override '{shown}': {what}") from None


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
        return build_config(hint, value, f"{where}.{name}", nested=True)
    return value


def build_config(cls: type[C], values: dict[str, Any], where: str = "config", nested: bool = False) -> C:
    """Make `cls` from a dict, naming unknown options (with the closest known ones) and wrong types. A `nested`
    section (the study's `eval:`) is judged for the network by the config that holds it, whose switch counts."""
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
    if hasattr(cfg, "online") and not nested:
        # a config with its own network switch (a stage or a run): refuse now what it would send off this
        # machine while offline (remote engine servers, hub pushes), before any work and in `run --dry-run`;
        # a nested section is judged with the config that holds it, whose `online` it cannot see
        from sftadapt.runtime.network import check_config

        try:
            check_config(cfg)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return cfg


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric option may take: from `low` to `high` (None: no bound), each end included unless
    `low_open` / `high_open`. `unset` lists values outside it that keep a documented meaning ("not set", e.g.
    TrainConfig's max_steps -1 = train `epochs` passes); `why` ends the error message."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    unset: tuple[float, ...] = ()
    why: str = ""

    def admits(self, value: float) -> bool:
        if value in self.unset:
            return True
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else f"{x:g}"


_COUNT = Range(1)  # counts, sizes, token budgets, step intervals: 0 or less was read as 1 or ran nothing
_POSITIVE = Range(0, low_open=True)
_NON_NEGATIVE = Range(0)
_FRACTION = Range(0, 1)
_SEED = Range(0, 2**32 - 1, why="numpy's seed range")

# The one table of numeric bounds: every int or float option of every config class (a list of numbers, such as
# `seeds` or task `steps`, item by item). Looked up as "Class.option" first, then by the option's name (the same
# name means the same thing in every stage); names ending in temperature / top_p / _workers or holding `timeout`
# are matched in `_rule`. tests/hostile/test_hostile_config.py checks that no numeric option is missing here.
RANGES: dict[str, Range] = {
    **dict.fromkeys(
        (
            "limit",
            "n",
            "k",
            "batch_size",
            "grad_accum",
            "shard_size",
            "max_new_tokens",
            "max_completion_length",
            "max_prompt_tokens",
            "max_row_bytes",
            "prompts_per_step",
            "guided_tries",
            "max_keep",
            "near_copy_ngram",
            "repeat_ngram",
            "copy_ngram",
            "lora_r",
            "lora_alpha",
            "stop_window",
            "logging_steps",
            "save_steps",
            "save_total_limit",  # 0 would keep no checkpoint to resume from
            "vllm_tensor_parallel_size",
            "train_problems",
            "select_pool",
            "select_k",
            "problems",
            "steps",  # task: min and max reasoning steps of a generated problem
            "max_steps",
            "num_processes",  # launcher: accelerate's processes (ranks) of a training stage
        ),
        _COUNT,
    ),
    # transformers reads max_steps <= 0 as "from epochs"; 0 trained one step, so only -1 keeps that meaning
    "TrainConfig.max_steps": Range(1, unset=(-1,), why="or -1: train `epochs` passes"),
    "num_generations": Range(2, why="GRPO compares the rollouts of one prompt"),
    "max_length": Range(2, why="room for a prompt and a response"),
    "min_tokens": _NON_NEGATIVE,
    "keep_superseded": _NON_NEGATIVE,
    "seed": _SEED,
    "seeds": _SEED,
    "vllm_server_port": Range(1, 65535),
    "lr": _POSITIVE,
    "epochs": _POSITIVE,  # a negative count trained 0 steps and saved the untouched model as trained
    "max_length_ratio": _POSITIVE,
    "weight_decay": _NON_NEGATIVE,
    "max_grad_norm": Range(0, why="0 = no clipping"),
    "is_clip": Range(0, why="0 = no clipping"),
    "beta": _NON_NEGATIVE,
    "stop_plateau": _NON_NEGATIVE,
    "dist_weight": _NON_NEGATIVE,
    "div_weight": _NON_NEGATIVE,
    "diversity_weight": _NON_NEGATIVE,
    "min_length_ratio": _NON_NEGATIVE,
    "min_reasoning_frac": _FRACTION,  # the gate's no_reasoning rule: a share of the expert's computations
    "warmup_ratio": Range(0, 1, high_open=True),
    "lora_dropout": Range(0, 1, high_open=True),
    "stop_pass_rate": Range(0, 1, high_open=True),
    "dft_floor": _FRACTION,
    "select_band": _FRACTION,
    "max_repeat_frac": _FRACTION,
    "copy_jaccard": _FRACTION,
    "near_copy_threshold": Range(0, 1, low_open=True),
    "vllm_gpu_memory_utilization": Range(0, 1, low_open=True),
    "r_min": Range(),  # any finite reward (below the passing ones is the user's choice)
}


def _workers_range() -> Range:
    """Worker processes: at least one, at most 4 per CPU of this machine (more only thrash, and a typo such as
    verifier_workers: 2000 would start two thousand processes)."""
    cpus = os.cpu_count() or 1
    return Range(1, 4 * cpus, why=f"4 x os.cpu_count() = 4 x {cpus} on this machine")


def _rule(name: str, owner: str = "") -> Range | None:
    """The bound an option named `name` of config class `owner` must meet (see RANGES)."""
    for key in (f"{owner}.{name}", name):
        if key in RANGES:
            return RANGES[key]
    if name.endswith("temperature"):
        return _NON_NEGATIVE  # a negative temperature was silently greedy
    if "timeout" in name:
        return _POSITIVE  # 0 s or NaN: nothing could ever be verified
    if name.endswith("top_p"):
        return Range(0, 1, low_open=True)
    if name.endswith("_workers"):
        return _workers_range()
    return None


def check_values(cfg: Any, where: str = "config") -> None:
    """Every numeric option of `cfg` against its Range in RANGES (and no NaN or infinite float), lists of
    numbers item by item; raises a one-line ConfigError naming the option, its value and the range. A nested
    config section is checked when build_config builds it."""
    owner = type(cfg).__name__
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, list) else [value]
        numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers:
            continue
        for v in numbers:
            if isinstance(v, float) and not math.isfinite(v) and f.default != v:
                raise ConfigError(f"{where}: option '{f.name}' = {value}: must be a finite number")
        rule = _rule(f.name, owner)
        if rule is None:
            continue
        bad = [v for v in numbers if not rule.admits(v)]
        if bad:
            each = "each must be" if isinstance(value, list) else "must be"
            why = f" ({rule.why})" if rule.why else ""
            raise ConfigError(f"{where}: option '{f.name}' = {value}: {each} {rule}{why}")


def check_passthrough(
    values: dict[str, Any],
    cls: type,
    what: str,
    ours: dict[str, str] | None = None,
    fixed: dict[str, str] | None = None,
) -> None:
    """Keys of a pass-through dict (`trainer_args`, `trl_args`) must be fields of the library's argument class
    `cls`; a misspelling is refused with the closest field, a field we already expose names our option (`ours`:
    field -> option), and a field we must fix gives the reason (`fixed`: field -> reason). A
    field that needs a package this environment lacks (`deepspeed`) is refused here, in one line, instead of as
    transformers' PackageNotFoundError traceback when the trainer's arguments are built."""
    import difflib
    import importlib.util

    fields = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key in (ours or {}):
            raise ValueError(f"{what}.{key}: set it with our option '{ours[key]}' instead")
        if key in (fixed or {}):
            raise ValueError(f"{what}.{key}: {fixed[key]}")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            raise ValueError(
                f"{what}.{key} is not a {cls.__name__} field" + (f" (did you mean '{close[0]}'?)" if close else "")
            )
    if values.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ValueError(
            f"{what}.deepspeed: deepspeed is not installed; pip install deepspeed, or leave {what}.deepspeed out"
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
    "max_row_bytes",
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
    downstream is hashed where it lands: the problems a length budget keeps are part of every run id. An optional
    block that is off (the reward's `judge` without a model) is left out whole."""
    if isinstance(values, dict):
        if set(values) == {"backend", "options"}:
            return {"backend": values["backend"]}
        # a `same` engine block (a scoring role served by the stage's engine) adds nothing to decide, nor does an
        # optional block that is off (OFF_WHEN_NO_MODEL): left out, it keeps the hash of every run made before it
        return {k: without_engine_options(v) for k, v in values.items() if not (_same_engine(v) or _off_block(k, v))}
    return values


OFF_WHEN_NO_MODEL = ("judge",)  # optional sections off while their `model` is unset (the reward's reasoning judge)


def _off_block(key: str, value: Any) -> bool:
    return key in OFF_WHEN_NO_MODEL and isinstance(value, dict) and value.get("model") is None


def _same_engine(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"backend", "options"} and value["backend"] == "same"


def config_hash(cfg: Any, exclude: tuple[str, ...] = ()) -> str:
    """A short hash of the options that decide a stage's output (`exclude` names those that don't)."""
    data = cfg if isinstance(cfg, dict) else config_dict(cfg)
    data = {k: v for k, v in data.items() if k not in exclude}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_text(f: dataclasses.Field) -> str:
    """An option's default as `--help`, `config show` and the reference page print it (JSON)."""
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = "(required)"
    return json.dumps(default, default=str)


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
        rows.append((key, default_text(f), f.metadata.get("help", "")))
    return rows
