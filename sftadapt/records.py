"""One schema for every stage: `Problem` in, `Attempt` for every sample, `Example` for every training row.

Files are JSONL (one record per line, UTF-8) or Parquet, chosen by the suffix. Reading validates each row and
never drops one silently: a row that fails goes to a rejects file with the file, line, field and reason.

    from sftadapt.records import Example, read_records, write_records
    rows = read_records("out/train.jsonl", Example)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

VERDICTS = ("correct", "wrong", "no_answer", "timeout", "error")
ORIGINS = ("self", "guided", "expert", "mapper", "rewrite", "select")


@dataclass
class Problem:
    """A math problem with its gold answer and, for training sets, the expert's worked solution."""

    id: str
    problem: str
    answer: str
    solution: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Attempt:
    """One sampled response to one problem, with its verdict against the gold answer."""

    problem_id: str
    stage: str  # self | guided | mapper | rewrite | eval ...
    index: int
    prompt_hash: str
    text: str
    token_logprobs: list[float] | None = None  # sampled tokens, under the generating prompt
    finish_reason: str = "stop"  # stop | length
    seed: int | None = None
    verdict: str | None = None  # one of VERDICTS once verified
    extracted: str | None = None
    rule: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Example:
    """A training row: the plain problem prompt and the response to learn, with where it came from."""

    id: str
    problem: str
    response: str
    answer: str
    origin: str  # one of ORIGINS
    behavior_logprobs: list[float] | None = None  # per response token, under the policy that produced it
    target_logprobs: list[float] | None = None  # per response token, under the target with the plain QA prompt
    target_logprob_mean: float | None = None  # the gap metric of this row
    self_pass_rate: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


RECORD_TYPES = {"problem": Problem, "attempt": Attempt, "example": Example}
R = TypeVar("R", Problem, Attempt, Example)


class RecordError(ValueError):
    """A row that cannot become a record; carries where it came from."""

    def __init__(self, path: str | os.PathLike, line: int, field_name: str | None, reason: str):
        self.path, self.line, self.field, self.reason = str(path), line, field_name, reason
        self.raw: str | None = None
        where = f"{self.path}:{line}" + (f" field '{field_name}'" if field_name else "")
        super().__init__(f"{where}: {reason}")


def stable_id(text: str) -> str:
    """Id of a problem with none in its source: a short hash of its text, stable across runs and machines."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> None:
    """Write a JSON file atomically (temp file + rename): a kill never leaves half a summary or manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def from_dict(cls: type[R], row: dict[str, Any], path: str = "<memory>", line: int = 0) -> R:
    """Build a record from a dict, checking required fields and types; extra keys go to `meta`."""
    if not isinstance(row, dict):
        raise RecordError(path, line, None, f"expected a JSON object, got {type(row).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, f in names.items():
        if name in row:
            kwargs[name] = row[name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(path, line, name, "missing required field")
    for name in ("problem", "response", "text"):
        if name in names and name in kwargs and not isinstance(kwargs[name], str):
            raise RecordError(path, line, name, f"expected a string, got {type(kwargs[name]).__name__}")
    for name in ("id", "problem_id", "answer"):
        if name in kwargs and kwargs[name] is not None and not isinstance(kwargs[name], str):
            if isinstance(kwargs[name], (int, float)) and not isinstance(kwargs[name], bool):
                kwargs[name] = str(kwargs[name])
            else:
                raise RecordError(path, line, name, f"expected a string, got {type(kwargs[name]).__name__}")
    extra = {k: v for k, v in row.items() if k not in names}
    if extra and "meta" in names:
        kwargs["meta"] = {**extra, **(kwargs.get("meta") or {})}
    return cls(**kwargs)


# ---------------------------------------------------------------- files
def iter_json_lines(path: str | os.PathLike, max_row_bytes: int | None = None
                    ) -> Iterator[tuple[int, Any | RecordError]]:
    """Yield (line number, parsed value or the error) for each non-blank line; a bad line never stops the read.

    Errors carry the raw line (`err.raw`, undecodable bytes as backslash escapes) so a rejects file keeps it."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if max_row_bytes is not None and len(raw) > max_row_bytes:
                err = RecordError(path, lineno, None, f"row is {len(raw) / 2**20:.1f} MiB, over the "
                                  f"{max_row_bytes / 2**20:.1f} MiB limit (raise --max-row-bytes if it is real)")
                err.raw = raw.decode("utf-8", "backslashreplace")
                yield lineno, err
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                err = RecordError(path, lineno, None, f"not valid UTF-8 (byte {exc.start}: {exc.reason})")
                err.raw = raw.decode("utf-8", "backslashreplace")
                yield lineno, err
                continue
            try:
                yield lineno, json.loads(text)
            except json.JSONDecodeError as exc:
                err = RecordError(path, lineno, None, f"malformed JSON: {exc.msg} at column {exc.colno}")
                err.raw = text.rstrip("\n")
                yield lineno, err


def iter_rows(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """Rows of a JSONL or Parquet file as (line/row number starting at 1, dict or error)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield i, _from_parquet(row)
    else:
        yield from iter_json_lines(path)


def read_records(path: str | os.PathLike, cls: type[R]) -> list[R]:
    """Read every record of `path`; the first bad row raises `RecordError` naming file, line and field."""
    out = []
    for lineno, row in iter_rows(path):
        if isinstance(row, RecordError):
            raise row
        out.append(from_dict(cls, row, str(path), lineno))
    return out


def write_records(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write records atomically (temp file + rename) as JSONL or Parquet by suffix; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [to_dict(r) if dataclasses.is_dataclass(r) else dict(r) for r in records]
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([_to_parquet(r) for r in rows]), tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    return len(rows)


# Parquet needs one type per column; free-form dicts (meta, provenance, attempts) travel as JSON strings.
_JSON_COLUMNS = ("meta", "provenance", "attempts")


def _to_parquet(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (json.dumps(v, ensure_ascii=False) if k in _JSON_COLUMNS else v) for k, v in row.items()}


def _from_parquet(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (json.loads(v) if k in _JSON_COLUMNS and isinstance(v, str) else v) for k, v in row.items()}
