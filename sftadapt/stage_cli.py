"""The CLI commands built from the stage registry: one command per row, its flags from the config dataclass.

Every top-level option of a stage's config is a flag (`--max-new-tokens`, `--lora/--no-lora`; a list option is
repeatable), with the dataclass's help and default; nested sections (`grpo.beta`, `engine.options`) are set with
`--set KEY=VALUE` or `--config FILE`, and the help's epilog lists every option, nested ones included. A config
with a field map (`fields`) gets its flags (`--problem-field` ...), one with an engine `--engine NAME` and
`--engine-option KEY=VALUE`; a stage's `aliases` keep older spellings (`map train --steps`). A command's
parameters are built only when it is run or its help is shown: most stage modules import torch.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, List, Optional

import typer
from typer.core import TyperCommand, TyperGroup

# the field-map options (sftadapt.data.formats.FieldOptions) as flags, for every command that reads data;
# `--set fields.KEY=VALUE` reaches the same options
FIELD_FLAGS = {
    "format": "--format",
    "problem": "--problem-field",
    "answer": "--answer-field",
    "solution": "--solution-field",
    "id": "--id-field",
    "answer_rule": "--answer-rule",
}


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def progress_on() -> bool:
    return os.environ.get("SFTADAPT_QUIET") != "1"


def guard(fn):
    """Run a stage, turning the errors a user can fix into one red line instead of a traceback
    (runtime/user_errors.py: which errors, and SFTADAPT_DEBUG=1 for the traceback)."""
    from sftadapt.runtime.user_errors import one_line

    return one_line(fn, fail)


def build(cls, values: dict, overrides: list[str] | None = None, config: Path | None = None):
    """`cls` from flag values <- --config file <- --set overrides, validated; its `online` opens the network."""
    from sftadapt.config import ConfigError, load_config

    try:
        cfg = load_config(cls, config, overrides, base=values)
    except ConfigError as err:
        fail(str(err))
    from sftadapt.runtime import offline

    offline.honour(getattr(cfg, "online", False))  # `online: true` in --config / --set = --online
    return cfg


def options_epilog(formatter, cls, command: str) -> None:
    """The help section listing every option of `cls` (nested sections flattened) with its default; for `run`,
    also every option of each stage section, read from the stage's config class."""
    from sftadapt.config import option_rows

    rows = option_rows(cls)
    if command == "run":
        from sftadapt import registry

        plain = {r[0] for r in rows}  # a section typed as a mapping is one row: list its stage's options after it
        for section, row in registry.section_rows().items():
            if section in plain:
                rows += option_rows(registry.load(row.name).config, f"{section}.")
    with formatter.section(
        f"All options (--set KEY=VALUE; YAML: --config FILE; resolved: sftadapt config show {command})"
    ):
        formatter.write_dl([(key, f"{text} [default: {default}]".strip()) for key, default, text in rows])


def _plain(hint: Any) -> Any:
    """The type without None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _resolve(cls, dotted: str) -> tuple[Any, dataclasses.Field]:
    """The type hint and field of a dotted option of `cls` (`grpo.lr`)."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        cls = typing.get_type_hints(cls)[part]
    field = {f.name: f for f in dataclasses.fields(cls)}[leaf]
    return typing.get_type_hints(cls)[leaf], field


def _param(name: str, flag: str, hint: Any, help_text: str) -> inspect.Parameter | None:
    """A typer option for one config option, or None for a mapping or a nested section (reached with --set).
    Every option defaults to None (unset: the config's default, or what --config / --set say, applies)."""
    plain = _plain(hint)
    if dataclasses.is_dataclass(plain) or plain is dict or typing.get_origin(plain) is dict:
        return None
    if plain is bool:
        decls = flag.split("/") if "/" in flag else [flag, "--no-" + flag[2:]]
        kind, default = Optional[bool], typer.Option(None, f"{decls[0]}/{decls[1]}", help=help_text)
    elif typing.get_origin(plain) is list:
        kind, default = List[str], typer.Option([], flag, help=help_text + " (repeatable)")
    else:
        kind = Optional[plain if plain in (int, float) else str]
        default = typer.Option(None, flag, help=help_text)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)


def _flag_value(hint: Any, value: Any) -> Any:
    """A flag's value for the config: a union other than X | None is read as YAML (`--resume false`)."""
    if isinstance(value, str) and _plain(hint) not in (str, int, float):
        from sftadapt.config import parse_override

        return parse_override(f"v={value}")[1]
    return value


def stage_params(stage) -> tuple[list[inspect.Parameter], dict[str, tuple[str, Any]]]:
    """The parameters of a stage's command, and parameter name -> (dotted config key, type hint)."""
    cls = stage.config
    hints = typing.get_type_hints(cls)
    params: list[inspect.Parameter] = []
    targets: dict[str, tuple[str, Any]] = {}

    def add(name: str, flag: str, key: str, hint: Any, text: str) -> None:
        param = _param(name, flag, hint, text)
        if param is not None:
            params.append(param)
            targets[name] = (key, hint)

    for f in dataclasses.fields(cls):
        add(f"o_{f.name}", "--" + f.name.replace("_", "-"), f.name, hints[f.name], _help(f))
    for i, (spelling, key) in enumerate(stage.aliases.items()):
        hint, field = _resolve(cls, key)
        add(
            f"a_{i}",
            "/".join("--" + w.replace("_", "-") for w in spelling.split("/")),
            key,
            hint,
            f"{key}: {_help(field)}",
        )
    if "fields" in hints:
        from sftadapt.data.formats import FieldOptions

        for f in dataclasses.fields(FieldOptions):
            if f.name in FIELD_FLAGS:
                add(f"f_{f.name}", FIELD_FLAGS[f.name], f"fields.{f.name}", str, f"fields.{f.name}: {_help(f)}")
    if "engine" in hints:
        add("e_backend", "--engine", "engine.backend", str, "engine.backend: the backend (hf, vllm, openai)")
        params.append(_list_param("e_options", "--engine-option", "engine.options: a backend option KEY=VALUE"))
    params.append(
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[Path],
            default=typer.Option(None, "--config", help="YAML file of the options"),
        )
    )
    params.append(_list_param("set_", "--set", "override any option listed below: key=value (nested: section.key)"))
    return params, targets


def _help(field: dataclasses.Field) -> str:
    from sftadapt.config import default_text

    return f"{field.metadata.get('help', '')} [default: {default_text(field)}]".strip()


def _list_param(name: str, flag: str, text: str) -> inspect.Parameter:
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=List[str],
        default=typer.Option([], flag, help=text + " (repeatable; value read as YAML)"),
    )


def given_values(kwargs: dict[str, Any], targets: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """The flags given on the command line as a nested dict of config values."""
    from sftadapt.config import ConfigError, parse_override, set_dotted

    values: dict[str, Any] = {}
    for name, (key, hint) in targets.items():
        value = kwargs.get(name)
        if value is None or (isinstance(value, list) and not value):
            continue
        set_dotted(values, key, _flag_value(hint, value))
    for item in kwargs.get("e_options") or ():
        try:
            key, value = parse_override(item)
        except ConfigError as err:
            fail(f"--engine-option: {err}")
        set_dotted(values, f"engine.options.{key}", value)
    return values


def _aliased(overrides: list[str], stage) -> list[str]:
    """--set items with an older key spelling (a stage alias) rewritten to the config key."""
    keys = {spelling.split("/")[0]: key for spelling, key in stage.aliases.items()}
    out = []
    for item in overrides:
        key, sep, rest = item.partition("=")
        out.append(f"{keys.get(key.strip(), key)}{sep}{rest}" if sep else item)
    return out


def stage_command(row) -> TyperCommand:
    """The typer command of one registry row (imports its stage)."""
    from sftadapt import registry

    stage = registry.load(row.name)
    params, targets = stage_params(stage)

    def command(**kwargs) -> None:
        config, overrides = kwargs.pop("config", None), list(kwargs.pop("set_", None) or [])
        cfg = build(stage.config, given_values(kwargs, targets), _aliased(overrides, stage), config)
        from sftadapt.runtime import launch

        summary = guard(lambda: launch.run(row.name, cfg, stage.run, progress_on()))
        for line in stage.echo(cfg, summary) if stage.echo else [json.dumps(summary, indent=2, default=str)]:
            typer.echo(line)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}

    class WithOptions(TyperCommand):
        def format_epilog(self, ctx, formatter):
            super().format_epilog(ctx, formatter)
            options_epilog(formatter, stage.config, row.name)

    one = typer.Typer(add_completion=False, rich_markup_mode=None)
    one.command(row.name.split()[-1], help=row.help, cls=WithOptions)(command)
    return typer.main.get_command(one)


class LazyStageCommand(TyperCommand):
    """A registry command as listed in `--help` (its row's help only); the real command, whose options need the
    stage's config class, is built when it runs or shows its own help."""

    def __init__(self, row):
        super().__init__(row.name.split()[-1], help=row.help, short_help=row.help.split(";")[0].rstrip("."))
        self.row = row

    def make_context(self, info_name, args, parent=None, **extra):
        return stage_command(self.row).make_context(info_name, args, parent=parent, **extra)


class StageGroup(TyperGroup):
    """A group of registry commands sharing a first word (`map train`, `map synthesize`)."""

    def __init__(self, word: str, help_text: str):
        super().__init__(name=word, help=help_text, no_args_is_help=True)
        self.word = word

    def list_commands(self, ctx) -> list[str]:
        from sftadapt import registry

        return [r.name.split()[1] for r in registry.ROWS if r.name.split()[0] == self.word and " " in r.name]

    def get_command(self, ctx, name):
        from sftadapt import registry

        try:
            return LazyStageCommand(registry.row(f"{self.word} {name}"))
        except KeyError:
            return None


GROUP_HELP = {"map": "DART: train a mapper with RL, then synthesise adapted data with it."}


def registry_command(name: str) -> TyperCommand | None:
    """The command (or group) a registry row's first word names, or None."""
    from sftadapt import registry

    for r in registry.ROWS:
        if r.name.split()[0] == name:
            return StageGroup(name, GROUP_HELP.get(name, f"{name} stages")) if " " in r.name else LazyStageCommand(r)
    return None


def registry_words() -> list[str]:
    from sftadapt import registry

    return list(dict.fromkeys(r.name.split()[0] for r in registry.ROWS))


def reference_markdown() -> str:
    """docs/reference.md: every registry stage (command, help, outputs, its section and steps in `run`, every
    option with its default and help) and `run`'s own options, from the registry and the config classes only."""
    from sftadapt import registry
    from sftadapt.config import option_rows
    from sftadapt.run_config import run_config_class

    def table(rows) -> list[str]:
        cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
        return [
            "| option | default | what |",
            "|---|---|---|",
            *[f"| `{k}` | `{cell(d)}` | {cell(h)} |" for k, d, h in rows],
        ]

    out = [
        "# Reference: every stage and its options",
        "",
        "Written by `sftadapt config reference > docs/reference.md` from the stage registry (sftadapt/registry.py)",
        "and the config classes; a test keeps it current. Nested options are set with `--set section.key=value`,",
        "or in the `--config` YAML file.",
    ]
    for row in registry.ROWS:
        stage = registry.load(row.name)
        out += [
            "",
            f"## sftadapt {row.name}",
            "",
            row.help,
            "",
            f"- writes: {', '.join(f'`{o}`' for o in stage.outputs)}",
        ]
        if stage.record:
            out.append(f"- rows: `{stage.record}` records (sftadapt/data/records.py)")
        if row.section:
            out.append(f"- in `sftadapt run`: options section `{row.section}:`")
        for step in row.steps:
            after = f", after `{step.after}`" if step.after else ""
            out.append(f"- `run` step `{step.name}`: builds training set `{step.source}`{after}")
        if stage.aliases:
            out.append("- older spellings: " + ", ".join(f"`--{a}` = `{k}`" for a, k in stage.aliases.items()))
        out += ["", *table(option_rows(stage.config))]
    out += [
        "",
        "## sftadapt run",
        "",
        "The whole study (pipeline.py); each stage section above takes that stage's options.",
        "",
    ]
    out += table(option_rows(run_config_class()))
    from sftadapt import arms

    out += [
        "",
        "## Arms (`run`'s `arms:`)",
        "",
        "The arm table (sftadapt/arms.py); * = run unless the config lists arms.",
        "",
    ]
    out += ["| arm | label | training set | loss | fallback rows | own train options |", "|---|---|---|---|---|---|"]
    for arm in arms.TABLE:
        star = "*" if arm.name in arms.DEFAULT_ARMS else ""
        own = ", ".join(f"`{k}: {v}`" for k, v in arm.train.items()) or ""
        source = f"`{arm.source}`" if arm.source else "(none)"
        out.append(
            f"| `{arm.name}`{star} | {arm.label} | {source} | {arm.loss or ''} | {arm.fallback if arm.source else ''} | {own} |"
        )
    from sftadapt.train.losses import LOSSES

    out += ["", "## Losses (`train --loss`)", "", "The loss registry (sftadapt/train/losses.py: `register_loss`).", ""]
    out += ["| loss | formula | options |", "|---|---|---|"]
    for name, loss in LOSSES.items():
        opts = ", ".join(f"`{k}` ({v})" for k, v in loss.options.items()) or "none"
        out.append(f"| `{name}` | {loss.formula.replace('|', chr(92) + '|')} | {opts} |")
    return "\n".join(out) + "\n"
