"""Generate the hostile-input corpus: data files a careless or hostile user may hand to sftadapt.

Each case is a file (or a path) plus what must happen to it: the exit code of `sftadapt data check`, the
reject rows expected (line, field, a piece of the reason), the whole-file error expected (a piece of the one
line), and the good rows, which `sftadapt data convert` must write out byte-identical (they are written in
sftadapt's own `records` format, so a faithful read-and-write returns the very same bytes).

    python tests/hostile/make_corpus.py OUT_FOLDER      # writes the files and OUT_FOLDER/cases.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Case:
    name: str
    path: str
    check_exit: int = 0  # `sftadapt data check PATH`
    strict_exit: int | None = None  # `... --strict` (None: same as a reject-free check would be, 1 if rejects)
    error: str | None = None  # a piece of the one error line of a whole-file failure
    warning: str | None = None  # a piece of a warning line
    rejects: list[tuple[int, str | None, str]] = field(default_factory=list)  # (line, field, reason piece)
    good: list[str] = field(default_factory=list)  # the good rows' exact lines, in order
    klass: str = ""  # the input class, for the docs table


def _good(i: int, **extra) -> str:
    row = {
        "id": f"good-{i}",
        "problem": f"What is {i} + {i}?",
        "answer": str(2 * i),
        "solution": f"{i}+{i}={2 * i}",
        "source": "corpus",
        "meta": {},
    }
    row.update(extra)
    return json.dumps(row, ensure_ascii=False)


def _bad(i: int, **fields) -> str:
    row = {
        "id": f"bad-{i}",
        "problem": "What is 1 + 1?",
        "answer": "2",
        "solution": "1+1=2",
        "source": "corpus",
        "meta": {},
    }
    row.update(fields)
    return json.dumps(row, ensure_ascii=False)


def mixed_rows(folder: Path) -> Case:
    """One records file: good rows between every per-row hostile class."""
    lines: list[bytes] = []
    rejects: list[tuple[int, str | None, str]] = []
    good: list[str] = []

    def add_good(text: str) -> None:
        lines.append(text.encode("utf-8"))
        good.append(text)

    def add_bad(raw: bytes | str, field_name: str | None, reason: str) -> None:
        lines.append(raw.encode("utf-8") if isinstance(raw, str) else raw)
        rejects.append((len(lines), field_name, reason))

    add_good(_good(0))
    add_bad(
        '{"id": "x1", "problem": "q", "answer": ' + "7" * 5000 + ', "source": "s", "meta": {}}',
        None,
        "unreadable number",
    )  # a JSON integer past Python's 4300-digit limit
    add_bad("[" * 100_000 + "]" * 100_000, None, "nested more than")  # RecursionError in json
    add_bad(_bad(2, meta={"deep": json.loads("[" * 80 + "]" * 80)}), "meta", "nested more than 64")
    add_bad(
        '{"id": "x3", "problem": "caf\\ud800", "answer": "1", "source": "s", "meta": {}}', "problem", "lone surrogate"
    )
    add_good(_good(1, problem="Emoji 🙂, RTL \u202e, zero-width \u200b, NUL \u0000 and a tab\t: what is 1+1?"))
    for i, (value, why) in enumerate(
        [({"a": 1}, "an object"), ([1, 2], "a list"), (True, "a boolean"), (None, "null")]
    ):
        add_bad(_bad(10 + i, answer=value), "answer", why)
    add_bad('{"id": "x4", "problem": "q", "answer": 1e400, "source": "s", "meta": {}}', "answer", "infinite")
    add_bad('{"id": "x5", "problem": "q", "answer": NaN, "source": "s", "meta": {}}', "answer", "NaN")
    add_bad('{"id": "x6", "problem": "q", "answer": -Infinity, "source": "s", "meta": {}}', "answer", "-infinite")
    for i, (value, why) in enumerate([({"k": 1}, "an object"), ([1], "a list"), (False, "a boolean"), (None, "null")]):
        add_bad(_bad(20 + i, id=value), "id", why)
    add_bad('{"id": NaN, "problem": "q", "answer": "1", "source": "s", "meta": {}}', "id", "NaN")
    add_bad(_bad(30, meta="a string"), "meta", "meta must be an object")
    add_bad(_bad(31, meta=[1, 2]), "meta", "meta must be an object")
    add_good(_good(2))
    add_bad('{"id": "x7", "problem": "q", "answer": ', None, "malformed JSON")  # truncated
    add_bad(b'{"id": "x8", "problem": "caf\xe9", "answer": "1"}', None, "not valid UTF-8")
    add_bad("[1, 2, 3]", None, "expected a JSON object, got list")
    add_bad('"just a string"', None, "expected a JSON object, got str")
    add_bad("42", None, "expected a JSON object, got int")
    add_bad(_bad(40, problem=""), "problem", "empty or not a string")
    add_bad(_bad(41, problem="   \t  "), "problem", "empty or not a string")
    add_bad(_bad(42, problem=12345), "problem", "empty or not a string")
    add_bad(_bad(43, answer=""), "answer", "no gold answer")
    add_bad(_bad(44, solution=["step 1", {"oops": 1}]), "solution", "strings only")
    add_bad(_good(0), "id", "duplicate id 'good-0'")
    add_bad(
        '{"id": "x9", "problem": "q", "answer": "1", "answer": "2", "source": "s", "meta": {}}',
        "answer",
        "appears twice",
    )  # JSON keeps the last value silently
    add_bad(_bad(45, pad="x" * (2 << 20)), None, "MiB")  # a 2 MiB row
    lines.append(b"")  # blank lines and whitespace-only lines are skipped, not rows
    lines.append(b"   \t ")
    add_good(_good(4))
    path = folder / "mixed_rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return Case(
        "mixed_rows",
        str(path),
        rejects=rejects,
        good=good,
        strict_exit=1,
        klass="per-row hostile values among good rows (records format)",
    )


def whole_files(folder: Path) -> list[Case]:
    cases: list[Case] = []
    empty = folder / "empty.jsonl"
    empty.write_bytes(b"")
    cases.append(Case("empty", str(empty), warning="no rows", strict_exit=1, klass="empty file"))
    blank = folder / "blank.jsonl"
    blank.write_bytes(b"\n  \n\t\n\r\n")
    cases.append(Case("blank", str(blank), warning="no rows", strict_exit=1, klass="blank-only file"))
    crlf = folder / "crlf_bom.jsonl"
    rows = [_good(100), _good(101)]
    crlf.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    cases.append(Case("crlf_bom", str(crlf), good=rows, klass="UTF-8 BOM and CRLF line ends"))
    folder_as_data = folder / "a_folder.jsonl"
    folder_as_data.mkdir()
    cases.append(Case("folder", str(folder_as_data), check_exit=2, error="is a folder", klass="a folder given as data"))
    cases.append(Case("missing", str(folder / "nope.jsonl"), check_exit=2, error="no such file", klass="no such file"))
    cases.append(
        Case(
            "device", "/dev/null", check_exit=2, error="not a regular file", klass="a device (/dev/null) given as data"
        )
    )
    corrupt = folder / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1" + bytes(range(256)) * 8)
    cases.append(
        Case(
            "corrupt_parquet", str(corrupt), check_exit=2, error="not a readable Parquet file", klass="corrupt Parquet"
        )
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    whole = folder / "whole.parquet"
    pq.write_table(pa.Table.from_pylist([json.loads(_good(i)) | {"meta": "{}"} for i in range(50)]), whole)
    cut = folder / "truncated.parquet"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    cases.append(
        Case(
            "truncated_parquet", str(cut), check_exit=2, error="not a readable Parquet file", klass="truncated Parquet"
        )
    )
    binary = folder / "binary.jsonl"
    binary.write_bytes(bytes((i * 37 + 11) % 256 for i in range(4096)))
    cases.append(Case("binary", str(binary), strict_exit=1, klass="random bytes named .jsonl"))
    first_bad = folder / "bad_first_row.jsonl"
    rows = [_good(200 + i) for i in range(3)]
    first_bad.write_text('{"weird": 1}\n' + "\n".join(rows) + "\n", encoding="utf-8")
    cases.append(
        Case(
            "bad_first_row",
            str(first_bad),
            rejects=[(1, "problem", "missing required field")],
            good=rows,
            strict_exit=1,
            klass="a bad first row (format taken from the first valid rows)",
        )
    )
    mix = folder / "mixed_formats.jsonl"
    mix.write_text(
        "\n".join(
            [json.dumps({"question": f"q{i}", "answer": f"s\n#### {i}"}) for i in range(4)]
            + [json.dumps({"problem": "p", "solution": "s", "answer": "1"})]
        )
        + "\n"
    )
    cases.append(
        Case(
            "mixed_formats",
            str(mix),
            warning="mixed formats",
            rejects=[(5, "question", "missing")],
            strict_exit=1,
            klass="rows of two formats in one file",
        )
    )
    unknown = folder / "unknown_fields.jsonl"
    unknown.write_text('{"foo": 1, "bar": 2}\n{"foo": 3}\n')
    cases.append(
        Case(
            "unknown_fields",
            str(unknown),
            check_exit=2,
            error="cannot tell the format",
            klass="no row of a known format",
        )
    )
    return cases


def make(folder: str | Path) -> list[Case]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases = [mixed_rows(folder), *whole_files(folder)]
    (folder / "cases.json").write_text(json.dumps([asdict(c) for c in cases], indent=1, ensure_ascii=False))
    return cases


if __name__ == "__main__":
    for case in make(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus"):
        print(f"{case.name}: {case.path}")
