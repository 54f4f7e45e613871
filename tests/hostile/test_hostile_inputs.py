"""The hostile-input suite: every file of make_corpus.py through `sftadapt data check` / `data convert` (typer's
runner, in-process) and, for the whole-file cases, the real command in a subprocess: no traceback, the exit
code, the reject rows and reasons, and the good rows byte-identical in the converted output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sftadapt.cli import app

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpus import make  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return {case.name: case for case in make(folder)}


def _no_traceback(result):
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


NAMES = [
    "mixed_rows",
    "empty",
    "blank",
    "crlf_bom",
    "folder",
    "missing",
    "device",
    "corrupt_parquet",
    "truncated_parquet",
    "binary",
    "bad_first_row",
    "mixed_formats",
    "unknown_fields",
]


@pytest.mark.parametrize("name", NAMES)
def test_data_check(corpus, name, tmp_path):
    case = corpus[name]
    rejects_file = tmp_path / "rejects.jsonl"
    result = runner.invoke(app, ["data", "check", case.path, "--rejects", str(rejects_file)])
    _no_traceback(result)
    assert result.exit_code == case.check_exit, result.output
    if case.error:
        assert case.error in result.output and result.output.count("\n") == 1, result.output
        return
    if case.warning:
        assert case.warning in result.output
    strict = runner.invoke(app, ["data", "check", case.path, "--strict"])
    _no_traceback(strict)
    assert strict.exit_code == (case.strict_exit or 0), strict.output
    if case.rejects:
        got = [json.loads(line) for line in rejects_file.read_text(encoding="utf-8").splitlines()]
        assert [(r["line"], r["field"]) for r in got] == [(line, field) for line, field, _ in case.rejects]
        for row, (line, _, reason) in zip(got, case.rejects):
            assert reason in row["reason"], (line, row["reason"])
            assert row["file"] == case.path and row["raw"] is not None


@pytest.mark.parametrize("name", [n for n in NAMES])
def test_data_convert_keeps_the_good_rows_byte_identical(corpus, name, tmp_path):
    case = corpus[name]
    if case.error:
        pytest.skip("a whole-file failure: nothing to convert (test_data_check asserts its one line)")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["data", "convert", case.path, str(out)])
    _no_traceback(result)
    assert result.exit_code == 0, result.output
    if case.good:
        assert out.read_text(encoding="utf-8").splitlines() == case.good
    if case.rejects:
        assert (tmp_path / "out.rejects.jsonl").exists()
    assert not list(tmp_path.glob("*.tmp"))
    # and nothing was written beside the input
    assert not list(Path(case.path).parent.glob("*.rejects.jsonl")) if Path(case.path).parent.is_dir() else True


def test_every_row_of_the_mixed_file_is_accounted_for(corpus):
    from sftadapt.data.sources import load_problems

    case = corpus["mixed_rows"]
    result = load_problems(case.path)
    assert result.total_rows == len(result.problems) + len(result.rejects)
    assert len(result.problems) == len(case.good) and len(result.rejects) == len(case.rejects)


def test_a_stage_refuses_an_empty_input_with_one_line(corpus, tmp_path):
    for name in ("empty", "blank", "binary"):
        result = runner.invoke(
            app, ["-q", "sample", "--model", "tiny-random", "--data", corpus[name].path, "--out", str(tmp_path / name)]
        )
        _no_traceback(result)
        assert result.exit_code == 2 and ("no rows" in result.output or "no usable problems" in result.output)


@pytest.mark.parametrize("name", ["folder", "corrupt_parquet", "device", "unknown_fields", "mixed_rows"])
def test_the_real_command_prints_no_traceback(corpus, name):
    case = corpus[name]
    proc = subprocess.run(
        [sys.executable, "-m", "sftadapt.cli", "data", "check", case.path],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert "Traceback" not in proc.stderr and proc.returncode == case.check_exit, proc.stderr[-1500:]
