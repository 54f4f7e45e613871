"""The `sftadapt` command's data and sample subcommands, through typer's runner (in-process)."""

import json

from typer.testing import CliRunner

from sftadapt.cli import app
from sftadapt.data.records import Attempt, Problem, read_records

runner = CliRunner()


def _bad_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"question": "q1", "answer": "so 5\\n#### 5"}\n{"question": "q2", "answer": "no final"}\nnot json\n'
    )
    return path


def test_data_check_reports_rejects_and_strict_fails(tmp_path):
    path = _bad_file(tmp_path)
    result = runner.invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "3 rows, 1 ok, 2 rejected" in result.output
    assert f"{path}:2 field answer: no gold answer" in result.output
    assert f"{path}:3 whole row: malformed JSON" in result.output
    # the data's folder is never written to (it may be read-only, or someone else's) ...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.jsonl"]
    # ... the rejects go where --rejects says
    where = tmp_path / "elsewhere" / "bad.jsonl"
    assert runner.invoke(app, ["data", "check", str(path), "--rejects", str(where)]).exit_code == 0
    rejects = [json.loads(line) for line in where.read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3] and rejects[1]["raw"] == "not json"
    assert runner.invoke(app, ["data", "check", str(path), "--strict"]).exit_code == 1


def test_data_convert_with_a_field_map(tmp_path):
    src = tmp_path / "custom.jsonl"
    src.write_text(json.dumps({"q": "What is 2+2?", "a": "4", "sol": "2+2=4"}) + "\n")
    out = tmp_path / "problems.parquet"
    result = runner.invoke(
        app,
        [
            "data",
            "convert",
            str(src),
            str(out),
            "--problem-field",
            "q",
            "--answer-field",
            "a",
            "--solution-field",
            "sol",
        ],
    )
    assert result.exit_code == 0, result.output
    (p,) = read_records(out, Problem)
    assert (p.problem, p.answer, p.solution) == ("What is 2+2?", "4", "2+2=4")
    result = runner.invoke(app, ["data", "convert", str(src), str(out), "--solution-field", "sol"])
    assert result.exit_code == 2 and "needs the problem field too" in result.output
    # --answer-field alone names the answer of a detected format; these fields are no format
    result = runner.invoke(app, ["data", "convert", str(src), str(out), "--answer-field", "a"])
    assert result.exit_code == 2 and "cannot tell the format" in result.output


def test_sample_writes_attempts_and_prints_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTADAPT_QUIET", "0")  # `-q` sets it in this process: restored after the test
    out = tmp_path / "sample"
    result = runner.invoke(
        app,
        [
            "-q",
            "sample",
            "--model",
            "tiny-random",
            "--data",
            "synthetic_id",
            "--limit",
            "2",
            "--n",
            "2",
            "--max-new-tokens",
            "6",
            "--dtype",
            "float32",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy 0.000 (0/4 samples)" in result.output  # a random model never answers correctly
    attempts = read_records(out / "attempts.jsonl", Attempt)
    assert [(a.index, a.stage) for a in attempts] == [(0, "sample"), (1, "sample")] * 2
    assert json.loads((out / "summary.json").read_text())["samples"] == 4


def test_unknown_model_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["sample", "--model", "./no/such/folder", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "no such folder: ./no/such/folder" in result.output


def test_env_and_version_report_what_was_resolved():
    import subprocess
    import sys

    runner = CliRunner()
    shown = runner.invoke(app, ["env"])
    assert shown.exit_code == 0, shown.output
    assert "torch 2." in shown.output and "dtype auto -> " in shown.output and "torch kernels" in shown.output
    assert runner.invoke(app, ["--version"]).output.startswith("sftadapt ")
    # torch limited to its AVX2 kernels (as on an AVX2-only CPU): auto must resolve to float32
    import os

    done = subprocess.run(
        [sys.executable, "-m", "sftadapt.cli", "env"],
        capture_output=True,
        text=True,
        env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "torch kernels AVX2" in done.stdout and "dtype auto -> float32" in done.stdout


def test_every_command_help_lists_every_config_option_with_its_default():
    from sftadapt.cli import CONFIGS, config_class
    from sftadapt.config import option_rows

    for command in CONFIGS:
        result = runner.invoke(app, [*command.split(), "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        for key, default, _ in option_rows(config_class(command)):
            assert f"{key} " in text and f"[default: {' '.join(default.split())}]" in text, (command, key)


def test_config_show_resolves_file_then_set(tmp_path):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text("k: 8\nengine: {backend: hf}\n")
    result = runner.invoke(app, ["config", "show", "rewrite", "--config", str(path), "--set", "guided_tries=2"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["k"] == 8 and shown["guided_tries"] == 2 and shown["engine"] == {"backend": "hf", "options": {}}
    assert shown["max_new_tokens"] == 512  # the default, resolved
    bad = runner.invoke(app, ["config", "show", "map train", "--set", "grpo.betaa=0.1"])
    assert bad.exit_code == 2 and "did you mean 'beta'" in bad.output
    assert (
        yaml.safe_load(runner.invoke(app, ["config", "show", "eval", "--set", "max_new_tokens=64"]).output)[
            "max_new_tokens"
        ]
        == 64
    )
