"""One schema for every stage: `Problem` in, `Attempt` for every sample, `Example` for every training row.

Files are JSONL (one record per line, UTF-8) or Parquet, chosen by the suffix. Reading validates each row and
never drops one silently: a row that fails goes to a rejects file with the file, line, field and reason.

    from sftadapt.data.records import Example, read_records, write_records
    rows = read_records("out/train.jsonl", Example)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

VERDICTS = ("correct", "wrong", "no_answer", "timeout", "error")
ORIGINS = ("self", "guided", "expert", "mapper", "rewrite", "select")
# what training does with an adapted set's expert-fallback rows (origin "expert": no self, guided or mapped
# response): keep them, drop them, or train them with DFT weights while the rest use the arm's loss
FALLBACKS = ("keep", "drop", "dft")


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


class UnreadableFile(ValueError):
    """A whole file that cannot be read as data (a folder, not a regular file, corrupt Parquet): one line."""


MAX_DEPTH = 64  # nesting levels a row may have; real rows have 3, and deep ones break recursive code later
_BOM = b"\xef\xbb\xbf"


def scalar_text(value: Any) -> str:
    """A gold answer or id as text: strings as they are, finite numbers written out (27.0 -> "27").

    Anything else raises ValueError with the reason: an object, a list, a boolean, null, inf or NaN would
    otherwise become a string such as "{'a': 1}" or "True" and train the model on it silently."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError(f"a boolean ({str(value).lower()}), expected a string or a finite number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            raise ValueError("NaN, expected a string or a finite number")
        if value in (float("inf"), float("-inf")):
            raise ValueError(
                f"{'-' if value < 0 else ''}infinite (a JSON number too big for a float, such as "
                "1e400, reads as inf), expected a string or a finite number"
            )
        return str(int(value)) if value.is_integer() else repr(value)
    kind = {dict: "an object", list: "a list", type(None): "null"}.get(type(value), type(value).__name__)
    raise ValueError(f"{kind}, expected a string or a finite number")


def check_row(row: Any, path: str | os.PathLike, line: int) -> None:
    """Raise RecordError if a parsed row is nested deeper than MAX_DEPTH or holds a lone surrogate (a
    `\\ud800` escape that no UTF-8 writer or tokenizer accepts); names the top-level field where it can."""
    stack: list[tuple[Any, int, str | None]] = [(row, 1, None)]
    while stack:
        value, depth, top = stack.pop()
        if depth > MAX_DEPTH:
            raise RecordError(path, line, top, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise RecordError(
                    path, line, top, f"lone surrogate {value[exc.start]!r} at character {exc.start}: not encodable text"
                ) from None
        elif isinstance(value, dict):
            for key, item in value.items():
                name = top if depth > 1 else str(key).encode("utf-8", "backslashreplace").decode("utf-8")
                stack.append((key, depth + 1, name))
                stack.append((item, depth + 1, name))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, top) for item in value)


def stable_id(text: str) -> str:
    """Id of a problem with none in its source: a short hash of its text, stable across runs and machines."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (model weights run to gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> None:
    """Write a JSON file atomically (temp file + rename): a kill never leaves half a summary or manifest."""
    write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temp file and a rename: a kill leaves the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_own_json(path: str | os.PathLike, remedy: str) -> dict[str, Any]:
    """A JSON object sftadapt wrote for itself (a manifest, a stage record, saved options, shard stats). A damaged
    one (cut short, overwritten with other bytes, not an object) raises UnreadableFile: one line naming the file,
    what is wrong, and `remedy`, the way out for that file (no JSON parser message without the file it is about)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UnreadableFile(
            f"{path}: damaged, not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); {remedy}"
        ) from None
    except UnicodeDecodeError as err:
        raise UnreadableFile(f"{path}: damaged, not UTF-8 text (byte {err.start}); {remedy}") from None
    if not isinstance(data, dict):
        raise UnreadableFile(f"{path}: damaged, a JSON {type(data).__name__} instead of an object; {remedy}")
    return data


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
        if name in kwargs and not (kwargs[name] is None and names[name].default is None):
            try:
                kwargs[name] = scalar_text(kwargs[name])
            except ValueError as err:
                raise RecordError(path, line, name, str(err)) from None
    if "meta" in kwargs and not isinstance(kwargs["meta"], dict):
        if kwargs["meta"] is not None:
            raise RecordError(path, line, "meta", f"expected an object, got {type(kwargs['meta']).__name__}")
        kwargs["meta"] = {}
    extra = {k: v for k, v in row.items() if k not in names}
    if extra and "meta" in names:
        kwargs["meta"] = {**extra, **(kwargs.get("meta") or {})}
    return cls(**kwargs)


# ---------------------------------------------------------------- files
def iter_json_lines(
    path: str | os.PathLike, max_row_bytes: int | None = None, limit_hint: str | None = None
) -> Iterator[tuple[int, Any | RecordError]]:
    """Yield (line number, parsed value or the error) for each non-blank line; a bad line never stops the read.

    Errors carry the raw line (`err.raw`, undecodable bytes as backslash escapes) so a rejects file keeps it.
    `limit_hint` ends the reason of a row over `max_row_bytes` with how the calling command raises the limit
    (commands differ: `data check` has --max-row-bytes, a stage config max_row_bytes, `run` neither)."""
    check_readable(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]  # a UTF-8 byte-order mark (Windows editors) is not part of the first row
            if not raw.strip():
                continue
            if max_row_bytes is not None and len(raw) > max_row_bytes:
                err = RecordError(path, lineno, None, row_limit_reason(len(raw), max_row_bytes, limit_hint))
                err.raw = raw.decode("utf-8", "backslashreplace").rstrip("\n")  # as every other reject keeps its line
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
                row = json.loads(text.rstrip("\r\n"), object_pairs_hook=_unique_keys)  # column on this line
                check_row(row, path, lineno)
            except json.JSONDecodeError as exc:
                err = RecordError(path, lineno, None, f"malformed JSON: {exc.msg} at column {exc.colno}")
            except RecursionError:
                err = RecordError(path, lineno, None, f"nested more than {MAX_DEPTH} levels deep")
            except RecordError as exc:
                err = exc
            except _DuplicateKey as exc:
                err = RecordError(
                    path,
                    lineno,
                    exc.key,
                    f"the key '{exc.key}' appears twice in the row (JSON keeps the last one silently)",
                )
            except ValueError as exc:  # an integer longer than Python's int-string limit (4300 digits)
                reason = str(exc).split(";")[0]
                err = RecordError(path, lineno, None, f"unreadable number: {reason} (write it as a string)")
            else:
                yield lineno, row
                continue
            err.raw = text.rstrip("\n")
            yield lineno, err


def row_limit_reason(size: int, limit: int, hint: str | None = None) -> str:
    """The reject reason of a row of `size` bytes over the `limit`, ended by the calling command's hint."""
    return f"row is {_size(size)}, over the {_size(limit)} limit" + (f" ({hint})" if hint else "")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 // 10 else f"{n} bytes"  # a small limit is not "0.0 MiB"


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a dict, unless a key repeats (`{"answer": "1", "answer": "2"}`)."""
    row = dict(pairs)
    if len(row) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key.encode("utf-8", "backslashreplace").decode("utf-8"))
            seen.add(key)
    return row


def check_readable(path: str | os.PathLike) -> None:
    """Raise FileNotFoundError / UnreadableFile (one clear line each) unless `path` is a readable file."""
    from sftadapt.runtime.paths import path_problem, shown

    why = path_problem(path)  # a symlink loop reads as missing to exists(); a too-long name raises there
    if why:
        raise UnreadableFile(f"{shown(path)}: {why}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise UnreadableFile(f"{path}: is a folder, not a data file (name a .jsonl or .parquet file in it)")
    if not path.is_file():
        raise UnreadableFile(f"{path}: not a regular file (a device, pipe or socket cannot be read as data)")
    if not os.access(path, os.R_OK):
        raise UnreadableFile(f"{path}: not readable (permission denied)")


def parquet_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a Parquet file as dicts; a corrupt or non-Parquet file is one UnreadableFile error."""
    import pyarrow.parquet as pq

    check_readable(path)
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # ArrowInvalid, OSError, ...: pyarrow's many types say one thing to the user
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UnreadableFile(f"{path}: not a readable Parquet file ({first})") from None


def iter_rows(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """Rows of a JSONL or Parquet file as (line/row number starting at 1, dict or error)."""
    path = Path(path)
    check_readable(path)
    if path.suffix == ".parquet":
        yield from iter_parquet_rows(path)
    else:
        yield from iter_json_lines(path)


def iter_parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """Rows of a Parquet file as (row number from 1, dict or error); the file is read whole first, so a corrupt
    file fails as one UnreadableFile before any row."""
    for i, row in enumerate(parquet_rows(path), start=1):
        try:
            row = _from_parquet(row)  # our own records keep meta as a JSON string column
            check_row(row, path, i)
        except RecordError as err:
            yield i, err
            continue
        except ValueError as err:
            yield i, RecordError(path, i, None, f"a JSON column does not parse: {err}")
            continue
        yield i, row


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
    try:
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
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves neither half a file nor a stray .tmp
        raise
    os.replace(tmp, path)
    return len(rows)


# Parquet needs one type per column; free-form dicts (meta, provenance, attempts) travel as JSON strings.
_JSON_COLUMNS = ("meta", "provenance", "attempts")


def _to_parquet(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (json.dumps(v, ensure_ascii=False) if k in _JSON_COLUMNS else v) for k, v in row.items()}


def _from_parquet(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (json.loads(v) if k in _JSON_COLUMNS and isinstance(v, str) else v) for k, v in row.items()}
