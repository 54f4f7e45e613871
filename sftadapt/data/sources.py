"""Where problems come from: files with field mapping, the benchmark registry, the embedded generator, the hub.

Formats (auto-detected from the first good row, or named with `fmt`):
- `gsm8k`: `question`, `answer` = worked solution ending in `#### N` (the gold answer is N)
- `math`: `problem`, `solution`, `answer` (MATH, MATH-500, MATH train, AIME 1983-2023)
- `aime`: `problem`, `answer` (+ optional `solution`) (AIME24, AMC23)
- `minerva`: `problem`, `solution`; the answer is the last `\\boxed{}` of the solution (Minerva, MATH full test)
- `olympiadbench`: `question`, `final_answer` (list), `solution` (list)
- `records`: our own `Problem` records; a user `FieldMap` (`--problem-field` etc.) for anything else.

Bad rows (malformed JSON, non-UTF-8 bytes, missing or empty fields, duplicate ids, oversized rows, integers
past Python's 4300-digit limit, nesting deeper than 64 levels, lone surrogates, gold answers or ids that are
no string or finite number, a `meta` that is no object) never stop the read and are never dropped silently:
each becomes a reject naming file, line, field and reason, written to a rejects file beside the run's output
(never over an input, never over a file sftadapt did not write); `strict=True` makes any reject, and an empty
file, an error. A whole-file failure (a folder, a corrupt Parquet file, no row of a known format) is one
`SourceError` line. A UTF-8 byte-order mark before the first row is skipped. With `fmt="auto"` the format is
the one most of the first rows look like, and a file mixing formats says so in `warnings`.

Benchmarks (`load_benchmark("math500")`) are files of the shared data folder: `--data-dir`, else
`$SFTADAPT_DATA_DIR`, else a `shared/data` folder found beside or above the working directory or the package.

    sftadapt data check ../shared/data/gsm8k/test.jsonl
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftadapt.data.formats import (
    MISSING,
    READER_FORMATS,
    READER_MAP,
    READERS,
    FieldMap,
    FieldOptions,
    get_path,
    guess_reader,
    hf_folder_rows,
    is_hf_folder,
    iter_json_file,
    last_number,
    rule_name,
    top_key,
    with_rule,
)
from sftadapt.data.records import (
    Problem,
    RecordError,
    UnreadableFile,
    check_readable,
    iter_json_lines,
    scalar_text,
    stable_id,
)

MAX_ROW_BYTES = 1 << 20  # 1 MiB: a math problem row is a few KiB; anything bigger is almost surely broken
DETECT_ROWS = 50  # `auto` format: decided by the first this many rows that look like a known format


PRESETS: dict[str, FieldMap] = {
    "gsm8k": FieldMap(problem="question", answer="answer", solution="answer", answer_rule="gsm8k"),
    "math": FieldMap(problem="problem", answer="answer", solution="solution", id="unique_id"),
    "aime": FieldMap(problem="problem", answer="answer", solution="solution", id="id"),
    "minerva": FieldMap(problem="problem", answer=None, solution="solution", id="idx", answer_rule="boxed"),
    "olympiadbench": FieldMap(
        problem="question", answer="final_answer", solution="solution", id="id", answer_rule="list"
    ),
    "records": FieldMap(problem="problem", answer="answer", solution="solution", id="id"),
    # the readers of data/formats.py: each turns its rows into this flat map's fields first
    **{name: READER_MAP for name in READER_FORMATS},
}

# name -> (file under the data dir, format)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "gsm8k": ("gsm8k/test.jsonl", "gsm8k"),
    "math500": ("math500/test.jsonl", "math"),
    "aime24": ("aime24/test.jsonl", "aime"),
    "amc23": ("amc23/test.jsonl", "aime"),
    "minerva_math": ("minerva_math/test.jsonl", "minerva"),
    "olympiadbench": ("olympiadbench/test.jsonl", "olympiadbench"),
    "math_test": ("math_full_test/test.jsonl", "minerva"),
    # training sets
    "gsm8k_train": ("gsm8k_train/train.jsonl", "gsm8k"),
    "math_train": ("math_train/train.jsonl", "math"),
    "aime_train": ("aime_1983_2023_train/train.jsonl", "math"),
}
SYNTHETIC = ("synthetic_id", "synthetic_ood", "synthetic_ood4")
# a reader's flat field -> the field of the user's row it came from (what a reject names)
FLAT_NAMES: dict[str, dict[str, str]] = {
    "messages": {"problem": "messages (user turn)", "solution": "messages (assistant turn)"},
    "prompt_completion": {"problem": "prompt", "solution": "completion"},
    "alpaca": {"problem": "instruction", "solution": "output"},
    "sharegpt": {"problem": "conversations (human turn)", "solution": "conversations (gpt turn)"},
    "verl": {"problem": "prompt", "solution": "extra_info.answer", "answer": "reward_model.ground_truth"},
}


class SourceError(ValueError):
    pass


@dataclass
class LoadResult:
    problems: list[Problem]
    rejects: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    total_rows: int = 0
    fmt: str = ""
    answer_rule: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.total_rows,
            "ok": len(self.problems),
            "rejected": len(self.rejects),
            "warnings": len(self.warnings),
            "format": self.fmt,
        }


# ---------------------------------------------------------------- answers
def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces included."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for k in range(brace, len(text)):
        depth += (text[k] == "{") - (text[k] == "}")
        if depth == 0:
            return text[brace + 1 : k]
    return None


def _answer(row: dict[str, Any], fmap: FieldMap) -> tuple[str | None, str]:
    """(answer, field it came from); None when the row has none. Raises RecordError for an answer that is
    there but is no string or finite number (an object, a list, a boolean, null, inf, NaN).

    `boxed` reads the solution (else the answer field); `gsm8k` and `last_number` read the answer field (else
    the solution): GSM8K keeps its worked solution in `answer`, a chat row its reply in the solution."""
    rule = fmap.answer_rule
    if rule == "answer_or_boxed":  # the chat-like readers: a gold answer column if there is one
        rule = "field" if get_path(row, fmap.answer, None) is not None else "boxed"
    if rule in ("gsm8k", "boxed", "last_number"):
        order = [fmap.solution, fmap.answer] if rule == "boxed" else [fmap.answer, fmap.solution]
        order = [n for n in order if n] or ["solution"]
        name = next((n for n in order if get_path(row, n) is not None), order[0])
        text = get_path(row, name)
        if text is None:
            return None, name
        if not isinstance(text, str):  # an object, a list, a number...: say so, not "missing"
            try:
                kind = f"the number {scalar_text(text)}"
            except ValueError as err:
                kind = str(err).split(", expected")[0]
            raise RecordError(
                "",
                0,
                name,
                f"{kind} where the {rule} rule reads the answer from text (a plain answer field: "
                f"--answer-rule field:{name})",
            )
        if rule == "gsm8k":
            return (text.split("####")[-1].strip().replace(",", "") if "####" in text else None), name
        return (last_boxed(text) if rule == "boxed" else last_number(text)), name
    value = get_path(row, fmap.answer, MISSING)
    if value is MISSING:
        return None, fmap.answer or "answer"
    try:
        if rule == "list":
            if not isinstance(value, list):
                value = [value]
            text = ", ".join(scalar_text(v).strip() for v in value)
        else:
            text = scalar_text(value)
    except ValueError as err:
        raise RecordError("", 0, fmap.answer, f"gold answer is {err}") from None
    return text.strip(), fmap.answer


def guess_format(row: dict[str, Any]) -> str | None:
    """The format a row looks like, or None."""
    keys = set(row)
    if {"id", "problem", "answer"} <= keys and ("source" in keys or "meta" in keys):
        return "records"  # our own Problem records (sftadapt data convert, synthetic --out)
    reader = guess_reader(row)  # chat, prompt/completion, alpaca, sharegpt, verl (data/formats.py)
    if reader:
        return reader
    if {"question", "final_answer"} <= keys:
        return "olympiadbench"
    if {"question", "answer"} <= keys and isinstance(row.get("answer"), str) and "####" in row["answer"]:
        return "gsm8k"
    if "problem" in keys and "answer" in keys:
        return "math" if "solution" in keys else "aime"
    if {"problem", "solution"} <= keys:
        return "minerva"
    return None


def _no_format(keys) -> SourceError:
    return SourceError(
        f"cannot tell the format from the fields {sorted(keys)}: name one with --format "
        f"({', '.join(PRESETS)}) or map fields with --problem-field/--answer-field/--solution-field"
    )


def detect_format(row: dict[str, Any]) -> str:
    fmt = guess_format(row)
    if fmt is None:
        raise _no_format(set(row))
    return fmt


def row_to_problem(
    row: dict[str, Any], fmap: FieldMap, source: str, path: str, line: int, require_solution: bool = False
) -> Problem:
    problem = get_path(row, fmap.problem)
    if problem is None:
        raise RecordError(path, line, fmap.problem, "missing required field")
    if not isinstance(problem, str) or not problem.strip():
        raise RecordError(path, line, fmap.problem, "empty or not a string")
    try:
        answer, answer_field = _answer(row, fmap)
    except RecordError as err:
        raise RecordError(path, line, err.field, err.reason) from None
    if answer is None or not answer.strip():
        raise RecordError(path, line, answer_field, "no gold answer (missing or empty)")
    solution = get_path(row, fmap.solution) if fmap.solution else None
    if isinstance(solution, list):
        if not all(isinstance(part, str) for part in solution):
            raise RecordError(path, line, fmap.solution, "a list solution must hold strings only")
        solution = "\n\n".join(solution) if solution else None
    if solution is not None and not isinstance(solution, str):
        raise RecordError(path, line, fmap.solution, f"expected a string, got {type(solution).__name__}")
    if require_solution and not (solution or "").strip():
        raise RecordError(path, line, fmap.solution or "solution", "training rows need an expert solution")
    pid = stable_id(problem)
    raw = get_path(row, fmap.id, MISSING) if fmap.id else MISSING
    if raw is not MISSING:
        try:
            raw_id = scalar_text(raw).strip()
        except ValueError as err:
            raise RecordError(path, line, fmap.id, f"id is {err}") from None
        pid = raw_id or pid  # an empty id is no id: the text's hash stands in
    if row.get("meta") is not None and not isinstance(row["meta"], dict):
        raise RecordError(path, line, "meta", f"meta must be an object, got {type(row['meta']).__name__}")
    used = {top_key(name) for name in (fmap.problem, fmap.solution, fmap.id, fmap.answer)} - {None}
    if fmap is PRESETS["records"] and isinstance(row.get("source"), str):
        source, used = row["source"], used | {"source"}  # our own records keep their source: a faithful copy
    meta = {k: v for k, v in row.items() if k not in used and k != "meta"}
    meta.update(row.get("meta") or {})
    return Problem(id=pid, problem=problem, answer=answer, solution=solution, source=source, meta=meta)


# ---------------------------------------------------------------- files
def load_problems(
    path: str | os.PathLike,
    fmt: str = "auto",
    fmap: FieldMap | None = None,
    limit: int | None = None,
    require_solution: bool = False,
    strict: bool = False,
    max_row_bytes: int = MAX_ROW_BYTES,
    source: str | None = None,
    fields: FieldOptions | None = None,
    answer_rule: str = "auto",
    limit_hint: str | None = None,
) -> LoadResult:
    """Read a JSONL/JSON/Parquet file or a `save_to_disk` folder (`DIR` or `DIR@split`) of problems; bad rows
    become rejects (see the module docstring). `fields` (the user's field-map options) replaces fmt/fmap.
    `limit_hint`: how the calling command raises `max_row_bytes`, said in the reject of a row over it."""
    if fields is not None:
        fmt, fmap, answer_rule = _field_options(fields, fmt, fmap)
    rule = answer_rule
    _check_path(path)
    path, split = _split_spec(Path(path))
    try:
        if is_hf_folder(path):
            try:
                rows, chosen = hf_folder_rows(path, split)
            except ValueError as err:
                raise SourceError(str(err)) from None
            where = f"{path}@{chosen}" if chosen else str(path)
            return _collect(rows, where, source or path.name, fmt, fmap, limit, require_solution, strict, rule)
        check_readable(path)
        if path.suffix == ".parquet":
            rows = _parquet_rows(path)
        elif path.suffix == ".json":
            rows = iter_json_file(path, max_row_bytes, limit_hint)  # a JSON array (alpaca, sharegpt) or JSON lines
        else:
            rows = iter_json_lines(path, max_row_bytes, limit_hint)
        return _collect(rows, str(path), source or path.stem, fmt, fmap, limit, require_solution, strict, rule)
    except (FileNotFoundError, UnreadableFile, OSError) as err:  # whole-file failures: one line, no traceback
        raise SourceError(
            str(err)
            if not isinstance(err, OSError) or isinstance(err, FileNotFoundError)
            else f"{path}: cannot read ({err.strerror or err})"
        ) from None


def _check_path(spec: str | os.PathLike) -> None:
    """Refuse a data path the file system cannot take (a name over its length limit, a symlink loop) in one
    line, before `exists()` raises on the first or answers "no such file" for the second."""
    from sftadapt.runtime.paths import path_problem, shown

    why = path_problem(spec)
    if why:
        raise SourceError(f"{shown(spec)}: {why}")


def max_row_bytes_option() -> Any:
    """The `max_row_bytes` option of a stage config that reads data files (unset: MAX_ROW_BYTES)."""
    from sftadapt.config import option

    return option(
        None,
        help=f"input rows larger than this many bytes are rejected (default {MAX_ROW_BYTES}: 1 MiB; a real math "
        "problem row is a few KiB)",
    )


ROW_LIMIT_HINT = "raise the max_row_bytes option if it is real"  # what a stage config's reject says: its option's name


def _field_options(fields: FieldOptions, fmt: str, fmap: FieldMap | None) -> tuple[str, FieldMap | None, str]:
    if fields.is_default():
        return fmt, fmap, "auto"
    try:
        fmt, fmap, rule = fields.resolve()
    except ValueError as err:
        raise SourceError(str(err)) from None
    return ("auto" if fmt == "custom" else fmt), fmap, rule


def _split_spec(path: Path) -> tuple[Path, str | None]:
    """`DIR@split` names a split of a `save_to_disk` DatasetDict (only when no file has that very name)."""
    text = str(path)
    if "@" in text and not path.exists():
        base, _, split = text.rpartition("@")
        if is_hf_folder(Path(base)):
            return Path(base), split
    return path, None


def _collect(
    rows,
    where: str,
    source: str,
    fmt: str,
    fmap: FieldMap | None,
    limit: int | None,
    require_solution: bool,
    strict: bool,
    answer_rule: str = "auto",
) -> LoadResult:
    """(line, row or RecordError) pairs -> problems and rejects: the one row loop of every source.

    With `fmt="auto"` the format is the most common one among the first DETECT_ROWS rows that look like a
    known format (so a bad first row costs only itself); rows that look like another format are counted and
    the mix is reported as a warning."""
    result = LoadResult(problems=[], fmt=fmt)
    seen: dict[str, int] = {}
    looks: dict[str, int] = {}
    rows = iter(rows)
    if fmap is None:
        if fmt == "auto":
            head, votes, keys = [], {}, None
            for line, row in rows:
                head.append((line, row))
                if isinstance(row, dict):
                    keys = keys or set(row)
                    guess = guess_format(row)
                    if guess:
                        votes[guess] = votes.get(guess, 0) + 1
                if sum(votes.values()) >= DETECT_ROWS:
                    break
            if votes:
                fmt = max(votes, key=lambda f: votes[f])
            elif keys is not None:
                raise _no_format(keys)
            import itertools

            rows = itertools.chain(head, rows)
        if fmt != "auto":
            if fmt not in PRESETS:
                raise SourceError(f"unknown format '{fmt}': choose one of {', '.join(PRESETS)}")
            fmap = PRESETS[fmt]
        result.fmt = fmt
    fmap = (
        with_rule(fmap, answer_rule) if fmap is not None else None
    )  # --answer-rule: the user's rule over the format's own
    result.answer_rule = rule_name(fmap)
    reader = READERS.get(result.fmt)
    for line, row in rows:
        result.total_rows += 1
        try:
            if isinstance(row, RecordError):
                raise row
            if not isinstance(row, dict):
                raise RecordError(where, line, None, f"expected a JSON object, got {type(row).__name__}")
            guess = guess_format(row)
            if guess:
                looks[guess] = looks.get(guess, 0) + 1
            flat = reader(row, (where, line)) if reader else row
            try:
                problem = row_to_problem(flat, fmap, source, where, line, require_solution)
            except RecordError as err:
                if reader:  # name the user's field, not the flat row's
                    err = RecordError(err.path, err.line, FLAT_NAMES[result.fmt].get(err.field, err.field), err.reason)
                raise err from None
            if problem.id in seen:
                raise RecordError(
                    where, line, fmap.id or "id", f"duplicate id '{problem.id}' (first seen at line {seen[problem.id]})"
                )
            seen[problem.id] = line
            problem.where = (where, line)  # not a field: never written out; budget.screen names it in a reject
            # the source's own names of the fields (a field map renames `question` to `problem`): a reject
            # names the field the user can find in the file (not an attribute of the record either)
            problem.fields = {
                "problem": fmap.problem,
                "solution": fmap.solution or "solution",
                "answer": fmap.answer or fmap.solution or "answer",
            }
        except RecordError as err:
            result.rejects.append(
                {"file": err.path, "line": err.line, "field": err.field, "reason": err.reason, "raw": _raw(row)}
            )
            continue
        result.problems.append(problem)
        if limit is not None and len(result.problems) >= limit:
            break
    if result.fmt in ("", "auto"):
        result.fmt = "custom" if fmap is not None else "unknown"
    if len(looks) > 1:
        mix = ", ".join(f"{n} like {f}" for f, n in sorted(looks.items(), key=lambda kv: -kv[1]))
        result.warnings.append(f"{where}: rows of mixed formats ({mix}); all were read as {result.fmt}")
    if strict and result.rejects:
        first = result.rejects[0]
        raise SourceError(
            f"{len(result.rejects)} rejected row(s) in {where} (--strict); first: "
            f"{reject_where(first)}: {first['reason']}"
        )
    if strict and not result.total_rows:
        raise SourceError(f"{where}: no rows (the file is empty or blank) (--strict)")
    return result


def no_rows_error(where: str, result: LoadResult) -> SourceError:
    """The error of a stage that needs rows and got none: says whether the input was empty or all rejected."""
    if not result.total_rows:
        return SourceError(f"{where}: no rows (the file is empty or holds only blank lines)")
    first = result.rejects[0] if result.rejects else None
    detail = f"; first: {reject_where(first)}: {first['reason']}" if first else ""
    return SourceError(f"{where}: no usable problems, all {result.total_rows} rows were rejected{detail}")


def reject_where(reject: dict[str, Any]) -> str:
    """`file:line field 'f'` of a reject row as a message names it; `whole row` for a row-level reason (an
    oversized or malformed line has no field, which read as field 'None')."""
    field_name = f"field '{reject['field']}'" if reject.get("field") else "whole row"
    return f"{reject['file']}:{reject['line']} {field_name}"


def _raw(row: Any) -> Any:
    if isinstance(row, RecordError):
        return getattr(row, "raw", None)
    return row


def _parquet_rows(path: Path):
    from sftadapt.data.records import iter_parquet_rows

    return iter_parquet_rows(path)


REJECT_KEYS = ("file", "line", "field", "reason")


def is_rejects_file(path: str | os.PathLike) -> bool:
    """True if `path` is a rejects file sftadapt wrote (its first line is a reject record)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(1 << 22)
        row = json.loads(first.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(row, dict) and all(k in row for k in REJECT_KEYS)


def read_rejects(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a rejects file sftadapt wrote ([] if there is none)."""
    path = Path(path)
    if not path.is_file() or not is_rejects_file(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_rejects(
    rejects: list[dict[str, Any]], path: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = ()
) -> Path | None:
    """Write rejected rows (with their raw text, each oversized value cut to an excerpt with its size and sha256:
    data/excerpt.py) to `path`; nothing when there are none.

    Never overwrites an input (`inputs`) nor a file sftadapt did not write: either is a SourceError. An older
    rejects file of ours at `path` is removed when this read has no rejects, so none is left stale."""
    _check_path(path)
    path = Path(path)
    for given in inputs:
        if Path(given).exists() and path.exists() and path.resolve() == Path(given).resolve():
            raise SourceError(f"{path}: the rejects file would overwrite the input; name another with --rejects")
    if path.exists():
        if path.is_dir():
            raise SourceError(f"{path}: the rejects file names a folder")
        if path.stat().st_size and not is_rejects_file(path):
            raise SourceError(
                f"{path}: exists and is not a rejects file written by sftadapt; refusing to "
                "overwrite it (name another with --rejects)"
            )
    if not rejects:
        if path.is_file():
            path.unlink()
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    from sftadapt.data.excerpt import bound_reject

    with open(tmp, "w", encoding="utf-8") as fh:
        for rej in rejects:
            fh.write(json.dumps(bound_reject(rej), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- registry
def find_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        _check_path(explicit)
        path = Path(explicit)
        if not path.is_dir():
            raise SourceError(f"{path}: data folder does not exist")
        return path
    if os.environ.get("SFTADAPT_DATA_DIR"):
        return find_data_dir(os.environ["SFTADAPT_DATA_DIR"])
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in [start, *start.parents]:
            for candidate in (folder / "shared" / "data", folder.parent / "shared" / "data"):
                if (candidate / "gsm8k").is_dir():
                    return candidate
    raise SourceError(
        "no benchmark data folder found: pass --data-dir, or set SFTADAPT_DATA_DIR, to a folder "
        "laid out like shared/data (gsm8k/test.jsonl, math500/test.jsonl, ...)"
    )


def is_registered(name: str) -> bool:
    """A benchmark or training set known by name (its own format), as opposed to a file, folder or hf: id."""
    return name in BENCHMARKS or name in SYNTHETIC


def unknown_benchmark(name: str) -> SourceError:
    return SourceError(
        f"unknown benchmark '{name}': known are {', '.join([*BENCHMARKS, *SYNTHETIC])}, or "
        "give a file, a save_to_disk folder or an hf: id"
    )


def load_benchmark(
    name: str, limit: int | None = None, data_dir: str | os.PathLike | None = None, seed: int = 1234
) -> list[Problem]:
    """Problems of a registered benchmark (or of the embedded synthetic task), first `limit` of them."""
    if name in SYNTHETIC:
        from sftadapt.data import synthetic

        return synthetic.benchmark(name, n=limit or 200, seed=seed)
    if name not in BENCHMARKS:
        raise unknown_benchmark(name)
    rel, fmt = BENCHMARKS[name]
    path = find_data_dir(data_dir) / rel
    result = load_problems(path, fmt=fmt, limit=limit, source=name)
    if result.rejects:  # e.g. math_train's two rows with an empty \boxed{}: said out loud, never silent
        import warnings

        lines = ", ".join(f"line {r['line']} ({r['field'] or 'whole row'}: {r['reason']})" for r in result.rejects[:5])
        warnings.warn(f"{path}: skipped {len(result.rejects)} unusable row(s): {lines}", stacklevel=2)
    return result.problems


def load_dataset_spec(
    spec: str,
    limit: int | None = None,
    fmt: str = "auto",
    fmap: FieldMap | None = None,
    require_solution: bool = False,
    strict: bool = False,
    data_dir: str | os.PathLike | None = None,
    fields: FieldOptions | None = None,
    max_row_bytes: int | None = None,
    limit_hint: str | None = None,
) -> LoadResult:
    """A file path (JSONL, JSON, Parquet), a `save_to_disk` folder (`DIR[@split]`), a registered
    benchmark/training-set name, or `hf:owner/name[:config][@split]` (needs --online). `fields` (the user's
    field-map options, `fields:` of a stage config) applies to files, folders and hub sets. A file's rows over
    `max_row_bytes` (None: MAX_ROW_BYTES) are rejects whose reason ends with `limit_hint`."""
    fmt, fmap, rule = _field_options(fields, fmt, fmap) if fields is not None else (fmt, fmap, "auto")
    if spec.startswith("hf:"):
        result = _load_hf(spec[3:], limit, fmt, fmap, require_solution, strict, rule)
        if not result.problems:
            raise no_rows_error(spec, result)
        return result
    _check_path(spec)
    if Path(spec).exists() or _split_spec(Path(spec))[1] is not None:
        result = load_problems(
            spec,
            fmt=fmt,
            fmap=fmap,
            limit=limit,
            require_solution=require_solution,
            strict=strict,
            answer_rule=rule,
            max_row_bytes=MAX_ROW_BYTES if max_row_bytes is None else max_row_bytes,
            limit_hint=limit_hint,
        )
        if not result.problems:  # every stage needs rows: an empty or all-rejected input stops here, clearly
            raise no_rows_error(spec, result)
        return result
    if is_registered(spec):
        if fields is not None and not fields.is_default():
            raise SourceError(f"{spec}: a registered dataset has its own format; field-map options apply to files")
        problems = load_benchmark(spec, limit=limit, data_dir=data_dir)
        if require_solution:
            missing = [p.id for p in problems if not p.solution]
            if missing:
                raise SourceError(f"{spec}: {len(missing)} problems have no expert solution (e.g. {missing[0]})")
        return LoadResult(problems=problems, total_rows=len(problems), fmt=spec)
    raise SourceError(
        f"{spec}: no such file, and not a known dataset ({', '.join([*BENCHMARKS, *SYNTHETIC])}) or hf:owner/name id"
    )


def _load_hf(spec: str, limit, fmt, fmap, require_solution, strict, rule="auto") -> LoadResult:
    from sftadapt.runtime import offline

    name, _, split = spec.partition("@")
    name, _, config = name.partition(":")
    if offline.is_offline():
        raise SourceError(
            f"hf:{spec}: a hub dataset needs the network, and sftadapt is offline: pass --online to "
            "download it, or pass a local file or save_to_disk folder instead"
        )
    try:
        import datasets

        ds = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as err:  # the hub raises many types; the user needs one message
        raise SourceError(
            f"could not load the Hugging Face dataset '{name}' ({type(err).__name__}: {str(err)[:200]}). "
            "Is the hub reachable from this machine (--online given)? Otherwise download the data "
            "elsewhere and pass the JSONL/Parquet file or save_to_disk folder instead"
        ) from None
    return _collect(enumerate(ds, start=1), f"hf:{spec}", name, fmt, fmap, limit, require_solution, strict, rule)
