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
from collections.abc import Mapping
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from sftadapt.stage_cli import FIELD_FLAGS, fail, progress_on, registry_command, registry_words
from sftadapt.stage_cli import build as _build
from sftadapt.stage_cli import guard as _guard


class _Command(TyperGroup):
    """The top command: the hand-written commands below and one per stage registry row (stage_cli.py).

    `--online` is a global option, yet users write it after the subcommand too (`sftadapt sample --online
    ...`), so it is moved to the front wherever it stands (not after `--`)."""

    def parse_args(self, ctx, args):
        cut = args.index("--") if "--" in args else len(args)
        if "--online" in args[:cut]:
            args = ["--online"] + [a for i, a in enumerate(args) if not (a == "--online" and i < cut)]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx):
        own = super().list_commands(ctx)
        return registry_words() + [c for c in own if c not in registry_words()]

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or registry_command(name)


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


def field_options(fn):
    """Add the field-map flags (stage_cli.FIELD_FLAGS, with FieldOptions' help) to a hand-written command; it
    receives them as `fields`: a dict of the ones given (what a config's `fields:` section takes)."""
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


class _Configs(Mapping):
    """command -> its config class path: every registry stage, and `run` (what `config show` and --help read)."""

    def _table(self) -> dict[str, str]:
        from sftadapt import registry

        return {**{r.name: r.target for r in registry.ROWS}, "run": "sftadapt.pipeline:RunConfig"}

    def __getitem__(self, command: str) -> str:
        return self._table()[command]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


CONFIGS = _Configs()


def config_class(command: str):
    from sftadapt import registry

    if command == "run":
        from sftadapt.pipeline import RunConfig

        return RunConfig
    if command not in CONFIGS:
        fail(f"no config for '{command}': choose one of {', '.join(CONFIGS)}")
    return registry.load(command).config


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
    from sftadapt.data.check import check_or_convert
    from sftadapt.data.formats import FieldOptions

    if max_row_bytes < 1:
        fail(f"--max-row-bytes must be at least 1, got {max_row_bytes}")
    field_opts = _build(FieldOptions, fields or {})
    lines, problems, failed = _guard(
        lambda: check_or_convert(file, out, field_opts, training, rejects, max_row_bytes, strict, force)
    )
    typer.echo("\n".join(lines))
    for line in problems:
        typer.secho(line, err=True)
    if failed:
        raise typer.Exit(1)


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


# ---------------------------------------------------------------- the whole study
class _RunCommand(TyperCommand):
    def format_epilog(self, ctx, formatter):
        from sftadapt.pipeline import RunConfig
        from sftadapt.stage_cli import options_epilog

        super().format_epilog(ctx, formatter)
        options_epilog(formatter, RunConfig, "run")


@app.command("run", cls=_RunCommand)
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
    from sftadapt.report.pool import pool

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
    config: Optional[Path] = typer.Option(None, help="YAML file of the command's options"),
    set_: List[str] = typer.Option([], "--set", help="override an option: --set key=value (repeatable)"),
) -> None:
    """Print the config COMMAND would run with (defaults <- --config file <- --set), as YAML, after validation."""
    import dataclasses

    import yaml

    cls = config_class(command)
    if command == "eval" and config is not None and not config.exists() and config.suffix not in (".yaml", ".yml"):
        fail(f"--config {config}: eval's --config is a YAML file of its options; a protocol is --set protocol={config}")
    cfg = _build(cls, {}, set_, config)
    typer.echo(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(cfg), default=str)), sort_keys=False).rstrip())


@config_app.command("reference")
def config_reference() -> None:
    """Print docs/reference.md: every stage, its outputs and every option, from the stage registry."""
    from sftadapt.stage_cli import reference_markdown

    typer.echo(reference_markdown(), nl=False)


@app.command("env")
def env_cmd() -> None:
    """What sftadapt sees here: versions, CPU capability, CUDA, the resolved dtype policy, caches, data folder."""
    from sftadapt.runtime.env_report import env_lines

    typer.echo("\n".join(env_lines()))


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
