"""The `sftadapt` command: one thin command per stage; the work lives in the stage modules.

    sftadapt data check FILE            validate a dataset, print counts, write rejects
    sftadapt sample --model M --data D  sample a model, verify, print accuracy
    sftadapt rewrite | map | train | eval | report | run | quickstart

Nothing reaches the network unless you pass `--online` (then a hub model/dataset id may be downloaded).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Adapt an SFT dataset to the model trained on it (Mind the Gap rewriting, DART mapping), "
                       "then train (nll | dft | is) and evaluate.")
data_app = typer.Typer(no_args_is_help=True, help="Validate and convert datasets.")
app.add_typer(data_app, name="data")


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.callback()
def main(online: bool = typer.Option(False, "--online", help="allow hub downloads of named models/datasets"),
         quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars")) -> None:
    if not online:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sftadapt.models import cache_dir

    os.environ.setdefault("HF_DATASETS_CACHE", str(cache_dir() / "hf-datasets"))
    if quiet:
        os.environ["SFTADAPT_QUIET"] = "1"
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars on every model load drown our own progress
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def progress_on() -> bool:
    return os.environ.get("SFTADAPT_QUIET") != "1"


def overrides_help() -> str:
    return "override any option: --set key=value (repeatable)"


# ---------------------------------------------------------------- data
@data_app.command("check")
def data_check(
    file: Path = typer.Argument(..., help="JSONL or Parquet file"),
    fmt: str = typer.Option("auto", "--format", help="auto | gsm8k | math | aime | minerva | olympiadbench | records"),
    problem_field: Optional[str] = typer.Option(None, help="field holding the problem text"),
    answer_field: Optional[str] = typer.Option(None, help="field holding the gold answer"),
    solution_field: Optional[str] = typer.Option(None, help="field holding the expert solution"),
    id_field: Optional[str] = typer.Option(None, help="field holding a stable id"),
    training: bool = typer.Option(False, "--training", help="rows must have an expert solution"),
    rejects: Optional[Path] = typer.Option(None, help="rejects file (default: FILE.rejects.jsonl beside it)"),
    max_row_bytes: int = typer.Option(1 << 20, help="reject rows larger than this"),
    strict: bool = typer.Option(False, "--strict", help="exit non-zero if any row is rejected"),
) -> None:
    """Validate a dataset: counts, rejects (file:line field reason), answer coverage."""
    _check_or_convert(file, None, fmt, problem_field, answer_field, solution_field, id_field, training, rejects,
                      max_row_bytes, strict)


@data_app.command("convert")
def data_convert(
    file: Path = typer.Argument(..., help="JSONL or Parquet file"),
    out: Path = typer.Argument(..., help="output file of Problem records (.jsonl or .parquet)"),
    fmt: str = typer.Option("auto", "--format", help="auto | gsm8k | math | aime | minerva | olympiadbench | records"),
    problem_field: Optional[str] = typer.Option(None), answer_field: Optional[str] = typer.Option(None),
    solution_field: Optional[str] = typer.Option(None), id_field: Optional[str] = typer.Option(None),
    training: bool = typer.Option(False, "--training", help="rows must have an expert solution"),
    max_row_bytes: int = typer.Option(1 << 20, help="reject rows larger than this"),
    strict: bool = typer.Option(False, "--strict", help="exit non-zero if any row is rejected"),
) -> None:
    """Convert a dataset into `Problem` records; rejects go to OUT.rejects.jsonl."""
    _check_or_convert(file, out, fmt, problem_field, answer_field, solution_field, id_field, training, None,
                      max_row_bytes, strict)


def _check_or_convert(file, out, fmt, problem_field, answer_field, solution_field, id_field, training, rejects,
                      max_row_bytes, strict) -> None:
    from sftadapt.records import write_records
    from sftadapt.sources import FieldMap, SourceError, load_problems, write_rejects

    fmap = None
    if problem_field:
        fmap = FieldMap(problem=problem_field, answer=answer_field, solution=solution_field, id=id_field,
                        answer_rule="field" if answer_field else "boxed")
    elif answer_field or solution_field or id_field:
        fail("--answer-field/--solution-field/--id-field need --problem-field too")
    try:
        result = load_problems(file, fmt=fmt, fmap=fmap, require_solution=training, max_row_bytes=max_row_bytes)
    except SourceError as err:
        fail(str(err))
    base = out if out else file
    rejects_path = rejects or base.with_name(base.stem + ".rejects.jsonl")
    written = write_rejects(result.rejects, rejects_path)
    if out:
        write_records(out, result.problems)
    s = result.summary()
    with_solution = sum(1 for p in result.problems if p.solution)
    typer.echo(f"{file}: format {s['format']}, {s['rows']} rows, {s['ok']} ok, {s['rejected']} rejected, "
               f"{with_solution} with an expert solution")
    for rej in result.rejects[:20]:
        typer.echo(f"  reject {rej['file']}:{rej['line']} field {rej['field']!s}: {rej['reason']}")
    if len(result.rejects) > 20:
        typer.echo(f"  ... {len(result.rejects) - 20} more")
    if written:
        typer.echo(f"rejects written to {written}")
    if out:
        typer.echo(f"{s['ok']} problems written to {out}")
    if strict and result.rejects:
        raise typer.Exit(1)


# ---------------------------------------------------------------- sample
@app.command()
def sample(
    model: str = typer.Option("smollm2-135m", help="HF id, local folder, smollm2-135m or tiny-random"),
    data: str = typer.Option("gsm8k", help="file, dataset name (gsm8k, math500, synthetic_id, ...) or hf:id"),
    out: Path = typer.Option(Path("runs/sample"), help="output folder (resumable)"),
    limit: Optional[int] = typer.Option(None, help="first N problems"),
    n: int = typer.Option(1, help="samples per problem"),
    temperature: float = typer.Option(1.0), top_p: float = typer.Option(1.0),
    max_new_tokens: int = typer.Option(256), seed: int = typer.Option(0),
    dtype: str = typer.Option("bfloat16", help="float32 | bfloat16"),
    batch_size: int = typer.Option(32), data_dir: Optional[Path] = typer.Option(None),
    force: bool = typer.Option(False, help="discard shards written with another config"),
) -> None:
    """Sample a model on a dataset; write verified Attempts and print the accuracy."""
    from sftadapt.sample import SampleConfig, sample as run_sample

    cfg = _build(SampleConfig, dict(model=model, data=data, out=str(out), limit=limit, n=n, temperature=temperature,
                                    top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, dtype=dtype,
                                    batch_size=batch_size, data_dir=str(data_dir) if data_dir else None,
                                    force=force))
    summary = _guard(lambda: run_sample(cfg, progress=progress_on()))
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"accuracy {summary['accuracy']:.3f} ({summary['verdicts'].get('correct', 0)}/{summary['samples']} "
               f"samples) -> {out / 'attempts.jsonl'}")


def _build(cls, values: dict, overrides: list[str] | None = None, config: Path | None = None):
    from sftadapt.config import ConfigError, load_config

    try:
        return load_config(cls, config, overrides, base=values)
    except ConfigError as err:
        fail(str(err))


def _guard(fn):
    """Run a stage, turning the errors a user can fix into one red line instead of a traceback."""
    from sftadapt.config import ConfigError
    from sftadapt.models import ModelError
    from sftadapt.records import RecordError
    from sftadapt.sources import SourceError
    from sftadapt.store import StoreError

    try:
        return fn()
    except (ConfigError, ModelError, RecordError, SourceError, StoreError, FileNotFoundError) as err:
        fail(str(err))


# ---------------------------------------------------------------- stages added below (one block each)


if __name__ == "__main__":
    sys.exit(app())
