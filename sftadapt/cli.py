"""The `sftadapt` command: one thin command per stage; the work lives in the stage modules.

    sftadapt data check FILE            validate a dataset, print counts, write rejects
    sftadapt sample --model M --data D  sample a model, verify, print accuracy
    sftadapt rewrite | map | train | eval | report | run | pool | quickstart

Nothing reaches the network unless you pass `--online` (then a hub model/dataset id may be downloaded, and an
`openai` engine may use servers off this machine; offline it uses loopback or `engine.options.allow_hosts` ones).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup


class _Command(TyperGroup):
    """The top command: `--online` is a global option, yet users write it after the subcommand too
    (`sftadapt sample --online ...`), so it is moved to the front wherever it stands (not after `--`)."""

    def parse_args(self, ctx, args):
        cut = args.index("--") if "--" in args else len(args)
        if "--online" in args[:cut]:
            args = ["--online"] + [a for i, a in enumerate(args) if not (a == "--online" and i < cut)]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_Command,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Adapt an SFT dataset to the model trained on it (Mind the Gap rewriting, DART mapping), "
    "then train (nll | dft | is) and evaluate.",
)
data_app = typer.Typer(no_args_is_help=True, help="Validate and convert datasets.")
app.add_typer(data_app, name="data")


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from sftadapt import __version__

        typer.echo(f"sftadapt {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    online: bool = typer.Option(
        False,
        "--online",
        help="allow the network: hub downloads of named models/datasets, openai-backend servers off this "
        "machine, hub pushes",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    from sftadapt.runtime import offline

    offline.apply(online)  # sets, not setdefault: an inherited HF_HUB_OFFLINE=0 does not open the network
    from sftadapt.runtime.memory import keep_freed_memory

    keep_freed_memory()  # CPU training steps re-fault gigabytes per step otherwise (runtime/memory.py)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sftadapt.runtime.models import cache_dir

    os.environ.setdefault("HF_DATASETS_CACHE", str(cache_dir() / "hf-datasets"))
    if quiet:
        os.environ["SFTADAPT_QUIET"] = "1"
    import warnings

    # deprecation notices from inside transformers/TRL that a user of sftadapt cannot act on
    warnings.filterwarnings("ignore", message=r".*(is_)?gradient_checkpointing.* is deprecated", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars on every model load drown our own progress
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


# the field-map options (sftadapt.data.formats.FieldOptions) as flags: one declaration for every command that reads
# data; `--set fields.KEY=VALUE` reaches the same options
FIELD_FLAGS = {
    "format": "--format",
    "problem": "--problem-field",
    "answer": "--answer-field",
    "solution": "--solution-field",
    "id": "--id-field",
    "answer_rule": "--answer-rule",
}


def field_options(fn):
    """Add the field-map options to a command: FIELD_FLAGS, with FieldOptions' help. The command receives them as
    `fields`: a dict of the ones given on the command line (what its config's `fields:` section takes)."""
    import dataclasses
    import functools
    import inspect

    from sftadapt.data.formats import FieldOptions

    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(FieldOptions)}
    sig = inspect.signature(fn, eval_str=True)  # typer reads the real types, not the strings of `annotations`
    extra = [
        inspect.Parameter(
            f"field_{name}",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[str],
            default=typer.Option(None, flag, help=helps[name]),
        )
        for name, flag in FIELD_FLAGS.items()
    ]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        given = {name: kwargs.pop(f"field_{name}", None) for name in FIELD_FLAGS}
        return fn(*args, fields={k: v for k, v in given.items() if v is not None}, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "fields"] + extra)
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


def progress_on() -> bool:
    return os.environ.get("SFTADAPT_QUIET") != "1"


def overrides_help() -> str:
    return "override any option listed below: --set key=value (repeatable; value read as YAML)"


# command -> the config class its --set / --config / YAML options fill (one source of truth for --help and
# `sftadapt config show`)
CONFIGS = {
    "sample": "sftadapt.eval.sample:SampleConfig",
    "rewrite": "sftadapt.adapt.rewrite:RewriteConfig",
    "train": "sftadapt.train.stage:TrainConfig",
    "map train": "sftadapt.adapt.mapper:MapperTrainConfig",
    "map synthesize": "sftadapt.adapt.mapper:SynthConfig",
    "eval": "sftadapt.eval.protocol:Protocol",
    "run": "sftadapt.pipeline:RunConfig",
}


def config_class(command: str):
    import importlib

    if command not in CONFIGS:
        fail(f"no config for '{command}': choose one of {', '.join(CONFIGS)}")
    module, name = CONFIGS[command].split(":")
    return getattr(importlib.import_module(module), name)


def _options_command(command: str):
    """A click command class whose --help ends with every option of `command`'s config (default and help),
    read from the config dataclass only when help is shown (importing it loads torch)."""
    from typer.core import TyperCommand

    class WithConfigOptions(TyperCommand):
        def format_epilog(self, ctx, formatter):
            from sftadapt.config import option_rows

            super().format_epilog(ctx, formatter)
            what = "protocol fields" if command == "eval" else "options"
            with formatter.section(
                f"All {what} (--set KEY=VALUE"
                + ("" if command == "eval" else "; YAML: --config FILE")
                + "; resolved: sftadapt config show "
                + command
                + ")"
            ):
                formatter.write_dl(
                    [
                        (key, f"{text} [default: {default}]".strip())
                        for key, default, text in option_rows(config_class(command))
                    ]
                )

    return WithConfigOptions


# ---------------------------------------------------------------- data
@data_app.command("check")
@field_options
def data_check(
    file: Path = typer.Argument(..., help="JSONL, JSON, Parquet file or save_to_disk folder (DIR[@split])"),
    training: bool = typer.Option(False, "--training", help="rows must have an expert solution"),
    rejects: Optional[Path] = typer.Option(
        None, help="write the rejected rows to this file (default: none; the data's folder is never written to)"
    ),
    max_row_bytes: int = typer.Option(1 << 20, help="reject rows larger than this"),
    strict: bool = typer.Option(False, "--strict", help="exit non-zero if any row is rejected"),
    fields: dict = None,
) -> None:
    """Validate a dataset: format, answer rule, counts, rejects (file:line field reason), answer coverage."""
    _check_or_convert(file, None, fields, training, rejects, max_row_bytes, strict)


@data_app.command("convert")
@field_options
def data_convert(
    file: Path = typer.Argument(..., help="JSONL, JSON, Parquet file or save_to_disk folder (DIR[@split])"),
    out: Path = typer.Argument(..., help="output file of Problem records (.jsonl or .parquet)"),
    training: bool = typer.Option(False, "--training", help="rows must have an expert solution"),
    max_row_bytes: int = typer.Option(1 << 20, help="reject rows larger than this"),
    strict: bool = typer.Option(False, "--strict", help="exit non-zero if any row is rejected"),
    force: bool = typer.Option(False, "--force", help="overwrite OUT even if sftadapt did not write it"),
    fields: dict = None,
) -> None:
    """Convert a dataset into `Problem` records; rejects go to OUT.rejects.jsonl."""
    _check_or_convert(file, out, fields, training, None, max_row_bytes, strict, force)


@data_app.command("export")
def data_export(
    source: Path = typer.Argument(..., help="an adapted set: a rewrite / map synthesize folder or its train.jsonl"),
    fmt: str = typer.Option(..., "--format", help="trl | llamafactory | verl | hf"),
    out: Path = typer.Option(..., help="output folder (new, or one `data export` made)"),
    model: Optional[str] = typer.Option(
        None, help="the target model whose chat template renders the prompt (default: the one the set records)"
    ),
    name: Optional[str] = typer.Option(None, help="dataset name (LLaMA-Factory's dataset_info.json key)"),
    data_source: str = typer.Option("lighteval/MATH", help="verl: data_source (picks verl's default scorer)"),
    push_to_hub: Optional[str] = typer.Option(
        None, help="upload the folder to this hub dataset repo (needs --online and a token)"
    ),
    force: bool = typer.Option(False, "--force", help="write into a folder sftadapt did not make"),
) -> None:
    """Export an adapted set for TRL, LLaMA-Factory, verl or `datasets`, with the exact training prompt and a
    dataset card (README.md)."""
    from sftadapt.data.export import export
    from sftadapt.data.export import push_to_hub as push

    result = _guard(lambda: export(source, fmt, out, model=model, force=force, name=name, data_source=data_source))
    typer.echo(f"{result['rows']} rows -> {', '.join(result['files'])} (card: {result['card']})")
    typer.echo(
        f"prompt: the SOLVE prompt through {result['model']}'s chat template; rows whose joint "
        f"tokenisation differs from training's: {result['token_mismatch_rows']}"
    )
    if push_to_hub:
        typer.echo(f"pushed -> {_guard(lambda: push(out, push_to_hub))}")


def _check_or_convert(file, out, fields, training, rejects, max_row_bytes, strict, force=False) -> None:
    from sftadapt.data.formats import FieldOptions
    from sftadapt.data.records import write_records
    from sftadapt.data.sources import SourceError, load_problems, write_rejects
    from sftadapt.runtime.outdir import OutDirError, check_output_file

    field_opts = _build(FieldOptions, fields or {})

    if max_row_bytes < 1:
        fail(f"--max-row-bytes must be at least 1, got {max_row_bytes}")
    try:
        if out:
            check_output_file(out, inputs=(file,), force=force)
        result = load_problems(
            file,
            fields=field_opts,
            require_solution=training,
            max_row_bytes=max_row_bytes,
            limit_hint="raise --max-row-bytes if it is real",
        )
        # rejects go where --rejects says, else beside the output; `data check` alone writes none (the data's
        # folder may be read-only, or someone else's)
        rejects_path = rejects or (out.with_name(out.stem + ".rejects.jsonl") if out else None)
        written = write_rejects(result.rejects, rejects_path, inputs=(file,)) if rejects_path else None
        if out:
            write_records(out, result.problems)
    except (SourceError, OutDirError) as err:
        fail(str(err))
    s = result.summary()
    with_solution = sum(1 for p in result.problems if p.solution)
    typer.echo(
        f"{file}: format {s['format']}, answer rule {result.answer_rule}, {s['rows']} rows, {s['ok']} ok, "
        f"{s['rejected']} rejected, {with_solution} with an expert solution"
    )
    for rej in result.rejects[:20]:
        where = f"field {rej['field']}" if rej["field"] else "whole row"
        typer.echo(f"  reject {rej['file']}:{rej['line']} {where}: {rej['reason']}")
    if len(result.rejects) > 20:
        typer.echo(f"  ... {len(result.rejects) - 20} more")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}")
    if written:
        typer.echo(f"rejects written to {written}")
    elif result.rejects and not out:
        typer.echo("(pass --rejects FILE to keep the rejected rows)")
    if not result.total_rows:
        typer.secho(
            f"error: {file}: no rows (the file is empty or blank)"
            if strict
            else f"warning: {file}: no rows (the file is empty or blank)",
            err=True,
        )
    if out:
        typer.echo(f"{s['ok']} problems written to {out}")
    if strict and (result.rejects or not result.total_rows):
        raise typer.Exit(1)


# ---------------------------------------------------------------- sample
@app.command(cls=_options_command("sample"))
@field_options
def sample(
    model: Optional[str] = typer.Option(None, help="HF id, local folder, smollm2-135m or tiny-random"),
    data: Optional[str] = typer.Option(None, help="file, dataset name (gsm8k, math500, synthetic_id, ...) or hf:id"),
    out: Optional[Path] = typer.Option(None, help="output folder (resumable)"),
    limit: Optional[int] = typer.Option(None, help="first N problems"),
    n: Optional[int] = typer.Option(None, help="samples per problem"),
    temperature: Optional[float] = typer.Option(None),
    top_p: Optional[float] = typer.Option(None),
    max_new_tokens: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None),
    dtype: Optional[str] = typer.Option(None, help="auto (bf16 only where native) | float32 | bfloat16"),
    batch_size: Optional[int] = typer.Option(None),
    data_dir: Optional[Path] = typer.Option(None),
    config: Optional[Path] = typer.Option(None, help="YAML file of SampleConfig options"),
    set_: List[str] = typer.Option([], "--set", help=overrides_help()),
    force: bool = typer.Option(False, help="discard shards written with another config"),
    fields: dict = None,
) -> None:
    """Sample a model on a dataset; write verified Attempts and print the accuracy."""
    from sftadapt.eval.sample import SampleConfig
    from sftadapt.eval.sample import sample as run_sample

    given = dict(
        fields=fields or None,
        model=model,
        data=data,
        out=str(out) if out else None,
        limit=limit,
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        dtype=dtype,
        batch_size=batch_size,
        data_dir=str(data_dir) if data_dir else None,
        force=force or None,
    )
    cfg = _build(SampleConfig, {key: v for key, v in given.items() if v is not None}, set_, config)
    out = Path(cfg.out)
    summary = _guard(lambda: run_sample(cfg, progress=progress_on()))
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(
        f"accuracy {summary['accuracy']:.3f} ({summary['verdicts'].get('correct', 0)}/{summary['samples']} "
        f"samples) -> {out / 'attempts.jsonl'}"
    )


def _build(cls, values: dict, overrides: list[str] | None = None, config: Path | None = None):
    from sftadapt.config import ConfigError, load_config

    try:
        cfg = load_config(cls, config, overrides, base=values)
    except ConfigError as err:
        fail(str(err))
    from sftadapt.runtime import offline

    offline.honour(getattr(cfg, "online", False))  # `online: true` in --config / --set = --online
    return cfg


def _guard(fn):
    """Run a stage, turning the errors a user can fix into one red line instead of a traceback.

    The project's error types (config, model, record, source, store, data, report, output folder, length
    budget) are all ValueErrors or carry a message meant for the user; a stage's own `ValueError` (a config
    value checked late, "no usable problems") is one too. SFTADAPT_DEBUG=1 shows the traceback instead."""
    from sftadapt.data.store import StoreError
    from sftadapt.runtime.models import ModelError

    try:
        return fn()
    except (
        ValueError,
        ModelError,
        StoreError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    ) as err:
        if os.environ.get("SFTADAPT_DEBUG") == "1":
            raise
        fail(str(err).strip() or type(err).__name__)


# ---------------------------------------------------------------- stages added below (one block each)


# ---------------------------------------------------------------- rewrite
@app.command(cls=_options_command("rewrite"))
@field_options
def rewrite(
    model: Optional[str] = typer.Option(None, help="target model: HF id, local folder, smollm2-135m or tiny-random"),
    data: Optional[str] = typer.Option(None, help="SFT set: file, dataset name (gsm8k_train, ...) or hf:id"),
    out: Optional[Path] = typer.Option(None, help="output folder (resumable: re-run the same command after a kill)"),
    method: Optional[str] = typer.Option(None, help="mind_the_gap | prompted_rewrite | select_most_likely"),
    k: Optional[int] = typer.Option(None, help="stage 1 samples per problem (default 4)"),
    guided_tries: Optional[int] = typer.Option(None, help="stage 2 tries per unsolved problem (default 4)"),
    keep: Optional[str] = typer.Option(None, help="most_likely | first | all_distinct"),
    limit: Optional[int] = typer.Option(None, help="first N problems"),
    max_new_tokens: Optional[int] = typer.Option(None, help="generation budget per sample (default 512)"),
    seed: Optional[int] = typer.Option(None),
    dtype: Optional[str] = typer.Option(None, help="auto | float32 | bfloat16"),
    config: Optional[Path] = typer.Option(None, help="YAML file of RewriteConfig options"),
    set_: List[str] = typer.Option([], "--set", help=overrides_help()),
    force: bool = typer.Option(False, "--force", help="set aside shards written with another config"),
    max_row_bytes: Optional[int] = typer.Option(
        None, help="reject input rows larger than this many bytes (default 1 MiB)"
    ),
    fields: dict = None,
) -> None:
    """Mind the Gap rewriting (self -> guided -> expert fallback) or a cheap baseline; writes OUT/train.jsonl."""
    from sftadapt.adapt.rewrite import RewriteConfig
    from sftadapt.adapt.rewrite import rewrite as run_rewrite

    given = dict(
        fields=fields or None,
        model=model,
        data=data,
        out=str(out) if out else None,
        method=method,
        k=k,
        guided_tries=guided_tries,
        keep=keep,
        limit=limit,
        max_new_tokens=max_new_tokens,
        seed=seed,
        dtype=dtype,
        force=force or None,
        max_row_bytes=max_row_bytes,
    )
    cfg = _build(RewriteConfig, {key: v for key, v in given.items() if v is not None}, set_, config)
    summary = _guard(lambda: run_rewrite(cfg, progress=progress_on()))
    typer.echo(f"{summary['rows']} rows -> {Path(cfg.out) / 'train.jsonl'} (summary: {Path(cfg.out) / 'summary.json'})")


# ---------------------------------------------------------------- train (train.py)
@app.command("train", cls=_options_command("train"))
@field_options
def train_cmd(
    model: Optional[str] = typer.Option(None, help="base model: HF id, local folder, smollm2-135m or tiny-random"),
    data: List[str] = typer.Option(
        [],
        "--data",
        help="training file (repeatable): Example JSONL/Parquet from "
        "rewrite/map, or a raw expert set (file, gsm8k_train, math_train, hf:id)",
    ),
    out: Optional[Path] = typer.Option(None, help="output folder: checkpoints, train_log.jsonl, final model"),
    loss: Optional[str] = typer.Option(None, help="nll | dft | is"),
    config: Optional[Path] = typer.Option(None, help="YAML file of TrainConfig options"),
    set_: List[str] = typer.Option([], "--set", help=overrides_help()),
    force: bool = typer.Option(
        False, "--force", help="set aside checkpoints written with other options instead of refusing them"
    ),
    max_row_bytes: Optional[int] = typer.Option(
        None, help="reject input rows larger than this many bytes (default 1 MiB)"
    ),
    fields: dict = None,
) -> None:
    """Fine-tune a model on (adapted) examples with nll, dft or is; resumes from the last checkpoint in OUT."""
    from sftadapt.train.stage import TrainConfig, train

    given = dict(
        fields=fields or None,
        model=model,
        data=list(data) or None,
        out=str(out) if out else None,
        loss=loss,
        force=force or None,
        max_row_bytes=max_row_bytes,
    )
    cfg = _build(TrainConfig, {key: v for key, v in given.items() if v is not None}, set_, config)
    summary = _guard(lambda: train(cfg))  # DataError is a ValueError: one line
    typer.echo("\n".join(["| train | |", "|---|---|", *[f"| {k} | {v} |" for k, v in summary.items()]]))
    typer.echo(f"model -> {cfg.out} (log: {summary['log']})")


def _engine_config(backend: str, items: List[str]):
    """`--engine NAME --engine-option k=v ...` as the EngineConfig a stage config would hold; offline, its
    servers must be loopback or allow-listed (refused here, before the model is loaded)."""
    from sftadapt.config import build_config, parse_override
    from sftadapt.engines.base import EngineConfig
    from sftadapt.runtime import network

    cfg = build_config(
        EngineConfig, {"backend": backend, "options": dict(parse_override(i) for i in items)}, "--engine"
    )
    if cfg.backend == "openai":
        network.check_servers(
            cfg.options.get("base_urls"),
            cfg.options.get("allow_hosts"),
            network.online_now(),
            "--engine-option base_urls",
            "--engine-option allow_hosts=HOST,...",
        )
    return cfg


# ---------------------------------------------------------------- eval (evaluate.py)
@app.command("eval", cls=_options_command("eval"))
@field_options
def eval_cmd(
    model: str = typer.Option("smollm2-135m", help="HF id, local folder, smollm2-135m or tiny-random"),
    benchmarks: List[str] = typer.Option(
        ["gsm8k", "math500"],
        "--benchmarks",
        help="repeatable, or comma-separated: gsm8k, math500, aime24, amc23, "
        "minerva_math, olympiadbench, math_test, synthetic_id, synthetic_ood, or your "
        "own as a file / save_to_disk folder / hf:id (read with the field-map options, "
        "reported under the file's stem); a file whose name holds a comma is taken whole when it exists",
    ),
    protocol: str = typer.Option("quick", help="paper | quick | a YAML file of protocol fields"),
    set_: List[str] = typer.Option([], "--set", help="override a protocol field: --set n=4 (repeatable)"),
    limit: Optional[int] = typer.Option(None, help="first N problems of each benchmark"),
    out: Path = typer.Option(Path("runs/eval"), help="output folder (resumable; results.json at the end)"),
    dtype: str = typer.Option("auto", help="auto (bf16 only where native) | float32 | bfloat16"),
    batch_size: int = typer.Option(32, help="sequences per generate call"),
    engine: str = typer.Option("hf", help="engine backend (sftadapt.engines.BACKENDS)"),
    engine_option: List[str] = typer.Option(
        [], "--engine-option", help="a backend option: --engine-option key=value (repeatable; value read as YAML)"
    ),
    verify_timeout: float = typer.Option(5.0, help="seconds per verified answer before a timeout verdict"),
    data_dir: Optional[Path] = typer.Option(None, help="benchmark data folder (default: shared/data found nearby)"),
    force: bool = typer.Option(False, help="set aside shards written with another model/protocol/problem list"),
    max_prompt_tokens: Optional[int] = typer.Option(
        None, help="prompt budget in tokens (default: the model's context less max_new_tokens)"
    ),
    report_to: str = typer.Option("none", help="none | tensorboard | wandb | trackio | mlflow"),
    tracking_dir: Optional[Path] = typer.Option(None, help="tracker output folder (default: OUT/tracking)"),
    max_row_bytes: Optional[int] = typer.Option(
        None, help="reject benchmark-file rows larger than this many bytes (default 1 MiB)"
    ),
    fields: dict = None,
) -> None:
    """Evaluate a model on benchmarks under a protocol: avg@n, pass@k, maj@n with 95% intervals."""
    from sftadapt.eval.evaluate import evaluate
    from sftadapt.eval.protocol import load_protocol

    names = _benchmark_names(benchmarks)
    if limit is not None and limit < 1:
        fail(f"--limit = {limit}: must be >= 1")
    if max_row_bytes is not None and max_row_bytes < 1:
        fail(f"--max-row-bytes = {max_row_bytes}: must be >= 1")
    if not verify_timeout > 0 or verify_timeout == float("inf"):
        fail(f"--verify-timeout = {verify_timeout}: must be a finite number of seconds > 0")
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        fail(f"--max-prompt-tokens = {max_prompt_tokens}: must be >= 1")
    from sftadapt.runtime.tracking import check_report_to

    _guard(lambda: check_report_to(report_to, "--report-to"))
    proto = _guard(lambda: load_protocol(protocol, set_))
    engine_cfg = _guard(lambda: _engine_config(engine, engine_option))
    _guard(
        lambda: evaluate(
            model,
            names,
            proto,
            out,
            limit,
            dtype=dtype,
            batch_size=batch_size,
            data_dir=data_dir,
            engine_config=engine_cfg,
            max_prompt_tokens=max_prompt_tokens,
            report_to=report_to,
            tracking_dir=tracking_dir,
            verify_timeout=verify_timeout,
            force=force,
            fields=fields or None,
            progress=progress_on(),
            max_row_bytes=max_row_bytes,
            row_limit_hint="raise --max-row-bytes if it is real",
        )
    )
    typer.echo(f"results -> {out / 'results.json'}")


def _benchmark_names(values: List[str]) -> List[str]:
    """The --benchmarks values as names. Each value may list several, comma-separated; but a run of items that,
    joined back with their commas, names an existing file or folder is one item, so a file such as `a,b.jsonl`
    can be given (alone or in a list) although the comma also separates names."""
    names = []
    for value in values:
        pieces = value.split(",")
        i = 0
        while i < len(pieces):
            # the longest run from i that exists (os.path.exists swallows a name too long or a loop: not a file)
            j = next((j for j in range(len(pieces), i + 1, -1) if os.path.exists(",".join(pieces[i:j]).strip())), i + 1)
            if ",".join(pieces[i:j]).strip():
                names.append(",".join(pieces[i:j]).strip())
            i = j
    return names


# ---------------------------------------------------------------- report (report.py)
@app.command("report")
def report_cmd(
    runs: List[Path] = typer.Argument(..., help="run folders written by `sftadapt eval`"),
    baseline: Optional[str] = typer.Option(None, help="run (folder name) the deltas are measured against"),
    out: Path = typer.Option(Path("runs/report"), help="folder for report.md, report.json and the PNG plots"),
    metric: str = typer.Option("avg", help="avg (avg@n) | maj (maj@n) | pass@K"),
    gap: List[str] = typer.Option([], help="NAME=TRAIN_FILE: write NAME's gap.json from its training set"),
    html: bool = typer.Option(False, "--html", help="also write OUT/report.html: plots and a per-sample browser"),
) -> None:
    """Compare evaluated runs side by side (one protocol only), with deltas and plots."""
    from sftadapt.report.markdown import report

    gaps = dict(item.split("=", 1) for item in gap if "=" in item)
    if len(gaps) != len(gap):
        fail("--gap takes NAME=TRAIN_FILE")
    rep = _guard(lambda: report(runs, out, baseline=baseline, metric=metric, gaps=gaps))  # ReportError: one line
    if html:
        from sftadapt.report.html import write_report_html

        rep["files"]["html"] = str(write_report_html(rep, out))
    typer.echo((out / "report.md").read_text())
    typer.echo(f"report -> {', '.join(rep['files'].values())}")


# ---------------------------------------------------------------- map (mapper.py: DART)
map_app = typer.Typer(no_args_is_help=True, help="DART: train a mapper with RL, then synthesise adapted data with it.")
app.add_typer(map_app, name="map")


@map_app.command("train", cls=_options_command("map train"))
@field_options
def map_train(
    target: Optional[str] = typer.Option(None, help="frozen target model whose likelihood is the reward"),
    mapper: Optional[str] = typer.Option(None, help="policy to train (default: a copy of the target)"),
    data: Optional[str] = typer.Option(None, help="SFT set with expert solutions: file, dataset name or hf:id"),
    out: Optional[Path] = typer.Option(None, help="output folder: mapper model, rl_log.jsonl, compute.json"),
    steps: Optional[int] = typer.Option(None, help="optimiser steps (default 100)"),
    lora: Optional[bool] = typer.Option(None, "--lora/--full", help="LoRA adapter (merged at the end) or all weights"),
    num_generations: Optional[int] = typer.Option(None, help="rollouts per prompt, the GRPO group (default 8)"),
    max_completion_length: Optional[int] = typer.Option(None, help="tokens per rollout (default 256)"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default 1e-6 full, 1e-5 LoRA)"),
    variant: Optional[str] = typer.Option(None, help="r_align: mean | centered"),
    limit: Optional[int] = typer.Option(None, help="first N problems"),
    config: Optional[Path] = typer.Option(None, help="YAML file of MapperTrainConfig options"),
    set_: List[str] = typer.Option([], "--set", help=overrides_help() + " (nested: grpo.beta=0.001, reward.r_min=-5)"),
    force: bool = typer.Option(
        False, "--force", help="set aside checkpoints written with other options instead of refusing them"
    ),
    fields: dict = None,
) -> None:
    """Mapper RL: GRPO with the alignment reward behind the anti-cheating gate; saves the mapper in OUT."""
    from sftadapt.adapt.mapper import MapperTrainConfig, train_mapper

    grpo = {
        k: v
        for k, v in dict(
            max_steps=steps,
            lora=lora,
            num_generations=num_generations,
            max_completion_length=max_completion_length,
            lr=lr,
        ).items()
        if v is not None
    }
    given = dict(
        fields=fields or None,
        target=target,
        mapper=mapper,
        data=data,
        out=str(out) if out else None,
        limit=limit,
        grpo=grpo or None,
        reward={"variant": variant} if variant else None,
        force=force or None,
    )
    cfg = _build(MapperTrainConfig, {key: v for key, v in given.items() if v is not None}, set_, config)
    summary = _guard(lambda: train_mapper(cfg, progress=progress_on()))
    last = summary.get("last_log") or {}
    typer.echo(
        f"{summary['steps']} steps; last step: gate pass rate {last.get('gate_pass_rate')}, mean r_align of "
        f"passing rollouts {last.get('r_align_pass_mean')}"
    )
    typer.echo(f"mapper -> {cfg.out} (log: {summary['log']}, compute: {Path(cfg.out) / 'compute.json'})")


@map_app.command("synthesize", cls=_options_command("map synthesize"))
@field_options
def map_synthesize(
    mapper: Optional[str] = typer.Option(
        None, help="trained mapper folder, or 'untrained' (the target itself: the prompted-rewrite baseline)"
    ),
    target: Optional[str] = typer.Option(None, help="target model: scores the rewrites"),
    data: Optional[str] = typer.Option(None, help="SFT set with expert solutions: file, dataset name or hf:id"),
    out: Optional[Path] = typer.Option(None, help="output folder (resumable: re-run the same command after a kill)"),
    k: Optional[int] = typer.Option(None, help="rewrites per example (default 4)"),
    temperature: Optional[float] = typer.Option(None, help="rewrite temperature (default 0.7)"),
    limit: Optional[int] = typer.Option(None, help="first N problems"),
    max_new_tokens: Optional[int] = typer.Option(None, help="generation budget per rewrite (default 512)"),
    seed: Optional[int] = typer.Option(None),
    dtype: Optional[str] = typer.Option(None, help="auto | float32 | bfloat16"),
    config: Optional[Path] = typer.Option(None, help="YAML file of SynthConfig options"),
    set_: List[str] = typer.Option([], "--set", help=overrides_help() + " (nested: reward.max_length_ratio=3)"),
    force: bool = typer.Option(False, "--force", help="set aside shards written with another config"),
    fields: dict = None,
) -> None:
    """K rewrites per example, keep the best gate-passing one by r_align, else the expert; writes OUT/train.jsonl."""
    from sftadapt.adapt.mapper import SynthConfig, synthesize

    given = dict(
        fields=fields or None,
        mapper=mapper,
        target=target,
        data=data,
        out=str(out) if out else None,
        k=k,
        temperature=temperature,
        limit=limit,
        max_new_tokens=max_new_tokens,
        seed=seed,
        dtype=dtype,
        force=force or None,
    )
    cfg = _build(SynthConfig, {key: v for key, v in given.items() if v is not None}, set_, config)
    summary = _guard(lambda: synthesize(cfg, progress=progress_on()))
    typer.echo(f"{summary['rows']} rows -> {Path(cfg.out) / 'train.jsonl'} (summary: {Path(cfg.out) / 'summary.json'})")


# ---------------------------------------------------------------- the whole study
@app.command("run", cls=_options_command("run"))
def run_cmd(
    config: Path = typer.Argument(..., help="study config (YAML), e.g. configs/quickstart.yaml"),
    set_: List[str] = typer.Option([], "--set", help="override any option: --set eval.limit=100 (repeatable)"),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="validate every stage's config and list the stages: "
        "cached, would run, or would re-run (with the options that changed); writes nothing",
    ),
) -> None:
    """Run the whole study: (warm-up ->) baseline eval -> adapt -> train each arm -> eval -> report."""
    from sftadapt.pipeline import load_run_config, run

    cfg = _guard(lambda: load_run_config(config, set_))
    if dry_run:
        plan = _guard(lambda: run(cfg, progress=False, dry_run=True))["plan"]
        rows = [row for stages in plan.values() for row in stages]
        todo = sum(row["status"] != "cached" for row in rows)
        typer.echo(f"dry run: {len(rows)} stages, {len(rows) - todo} cached, {todo} to run; nothing was written")
        return
    _finish_study(_guard(lambda: run(cfg, progress=progress_on())))


@app.command("pool")
def pool_cmd(
    folders: List[Path] = typer.Argument(..., help="finished `sftadapt run` folders (single- or multi-seed)"),
    out: Path = typer.Option(..., "--out", help="folder for the pooled study.md, study.json and study.html"),
) -> None:
    """One study report over seeds run apart (other sittings, other machines): reads the runs' records,
    re-runs nothing, and refuses runs made with different options."""
    from sftadapt.pipeline import pool

    study = _guard(lambda: pool(folders, out))
    _finish_study(study)


@app.command()
def quickstart(
    set_: List[str] = typer.Option([], "--set", help="override any option of configs/quickstart.yaml"),
) -> None:
    """The embedded default study: SmolLM2-135M + the generated arithmetic task, every arm, on CPU (~15 min)."""
    from sftadapt.pipeline import quickstart_config, run

    cfg = _guard(lambda: quickstart_config(set_))
    _finish_study(_guard(lambda: run(cfg, progress=progress_on())))


def _finish_study(study: dict) -> None:
    typer.echo("\n" + study["markdown"])
    for seed, folders in (study.get("outputs") or {}).items():
        typer.echo(f"outputs (seed {seed}): " + ", ".join(f"{name} {path}" for name, path in folders.items()))
    for seed, files in study["plots"].items():
        typer.echo(f"plot (seed {seed}): {files.get('accuracy_plot')}")
    typer.echo(f"table: {study['markdown_path']}")
    if study.get("html_path"):
        typer.echo(f"html report: {study['html_path']}")
    if study.get("elapsed"):
        typer.echo(f"run time: {study['elapsed']}")


config_app = typer.Typer(no_args_is_help=True, help="Show the options a command resolves to.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    command: str = typer.Argument(..., help="one of: " + ", ".join(CONFIGS) + " (quote the two-word ones)"),
    config: Optional[Path] = typer.Option(
        None, help="YAML file of the command's options (eval: a protocol name or YAML file)"
    ),
    set_: List[str] = typer.Option([], "--set", help="override an option: --set key=value (repeatable)"),
) -> None:
    """Print the config COMMAND would run with (defaults <- --config file <- --set), as YAML, after validation."""
    import dataclasses

    import yaml

    cls = config_class(command)
    if command == "eval":
        from sftadapt.eval.protocol import load_protocol

        cfg = _guard(lambda: load_protocol(str(config) if config else "quick", set_))
    else:
        cfg = _build(cls, {}, set_, config)
    typer.echo(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(cfg), default=str)), sort_keys=False).rstrip())


@app.command("env")
def env_cmd() -> None:
    """What sftadapt sees here: versions, CPU capability, CUDA, the resolved dtype policy, caches, data folder."""
    import importlib.metadata as md
    import platform

    from sftadapt import __version__
    from sftadapt.runtime import memory
    from sftadapt.runtime.models import cache_dir
    from sftadapt.runtime.precision import capability, cpu_model_name, resolve_dtype

    lines = [f"sftadapt {__version__}", f"python {platform.python_version()} ({sys.executable})"]
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify", "vllm"):
        try:
            lines.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            lines.append(f"{pkg} not installed")
    cap = capability()
    lines += [
        f"cpu: {cpu_model_name()}; torch kernels {cap['cpu_capability']}, avx512_bf16={cap['avx512_bf16']}, "
        f"amx_bf16={cap['amx_bf16']}; bf16 native on cpu: {cap['cpu_bf16_native']}",
        f"cuda: {cap.get('cuda_device', 'none')}" + (f", bf16 {cap.get('cuda_bf16')}" if cap["cuda"] else ""),
        f"dtype auto -> {resolve_dtype('auto')} (sampling, eval, target scoring; rewrite scoring: float32; training: fp32 weights"
        f"{' + bf16 autocast' if resolve_dtype('auto') == 'bfloat16' else ''}; the is loss: float32)",
        f"malloc (SFTADAPT_MALLOC): {memory.applied()}",
        f"cache (SFTADAPT_CACHE): {cache_dir()}",
        f"HF_HOME: {os.environ.get('HF_HOME', '(default)')}",
        f"hub: {'offline' if os.environ.get('HF_HUB_OFFLINE') == '1' else 'online'}",
    ]
    try:
        from sftadapt.data.sources import find_data_dir

        lines.append(f"data folder: {find_data_dir()}")
    except Exception as err:  # noqa: BLE001 - reported, not raised: env is a diagnosis
        lines.append(f"data folder: none ({err})")
    typer.echo("\n".join(lines))


@app.command()
def clean(
    run_dir: Path = typer.Argument(..., help="a `sftadapt run` folder"),
    yes: bool = typer.Option(False, "--yes", "-y", help="free without asking"),
) -> None:
    """Free what a run set aside (<stage>.old-<time>, checkpoints.old-*, shards.old-*): only inside a folder that
    `sftadapt run` made, only folders it recorded as set aside, only the entries it wrote there (files of yours
    in them stay, and are named); lists them and their size first, follows no link."""
    from sftadapt.runtime import owned

    if run_dir.is_symlink() or not run_dir.is_dir():
        fail(
            f"{run_dir}: not a folder" + (" (a symbolic link; give the folder itself)" if run_dir.is_symlink() else "")
        )
    if not owned.is_run_folder(run_dir):
        fail(
            f"{run_dir}: not a folder that `sftadapt run` made (no {owned.MARKER} of `run` in it); clean frees only "
            "what a run set aside, so nothing was removed"
        )
    found = [(path, *owned.plan_free(path)) for path in owned.find_set_aside(run_dir)]
    if not found:
        typer.echo(f"{run_dir}: nothing set aside to free")
        return
    total = sum(size for _, size, _ in found)
    for path, size, left in found:
        keeps = f"  (keeps {len(left)} entries sftadapt did not write: {', '.join(left[:3])})" if left else ""
        typer.echo(f"{size / 2**20:10.1f} MiB  {path}{keeps}")
    typer.echo(f"{total / 2**20:10.1f} MiB in {len(found)} set-aside outputs")
    if not yes and not typer.confirm("free them?", default=False):
        typer.echo("nothing freed")
        return
    kept = [path for path, *_ in found if owned.free(path)]
    typer.echo(
        f"freed {total / 2**20:.1f} MiB"
        + (f"; {len(kept)} folders kept for files sftadapt did not write" if kept else "")
    )


if __name__ == "__main__":
    sys.exit(app())
