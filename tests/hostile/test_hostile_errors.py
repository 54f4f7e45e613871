"""Error paths a hostile user reaches through the real CLI (typer's runner, in-process), each one line, no traceback:

- a path component over the file system's 255-byte limit as --out or --data (rewrite, eval, train; data check);
- a symlink loop as an input path (said as a loop, not "no such file");
- a model folder whose pytorch_model.bin is a pickle torch refuses under weights_only;
- `trainer_args: {deepspeed: ...}` without deepspeed installed;
- `sftadapt run` into a folder it may not write: the advice names no --force / --out (run has neither);
- the rejects reason of an oversized row names only the option the command has (--max-row-bytes on data check
  and eval, the max_row_bytes option on rewrite and train), and that option is real;
- --benchmarks takes a file whose name holds a comma, and is repeatable;
- train writes OUT/rejects.jsonl (file, line, field per row) and says how many; a reject keeps a bounded
  excerpt of a 10 MB row with its size and sha256.
"""

import argparse
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sftadapt.cli import app
from sftadapt.data.excerpt import EXCERPT_BYTES

runner = CliRunner()
LONG = "x" * 300  # one path component over the 255 bytes every common file system allows


def _row(i: int) -> dict:
    return {"question": f"Tom has {i} apples and buys 2. How many?", "answer": f"He has {i}+2={i + 2}.\n#### {i + 2}"}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gsm(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("data") / "gsm.jsonl", [_row(i) for i in range(1, 4)])


def _one_line_error(result, *pieces: str) -> str:
    """The command failed with exit 2 and one `error:` line holding every piece, and no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for piece in pieces:
        assert piece in lines[0], (piece, lines[0])
    return lines[0]


# ---------------------------------------------------------------- paths the file system cannot take
@pytest.mark.parametrize(
    "args",
    [
        ["rewrite", "--model", "tiny-random", "--data", "{gsm}", "--out", "{tmp}/" + LONG],
        ["eval", "--model", "tiny-random", "--benchmarks", "{gsm}", "--out", "{tmp}/" + LONG],
        ["train", "--model", "tiny-random", "--data", "{gsm}", "--out", "{tmp}/" + LONG],
        ["rewrite", "--model", "tiny-random", "--data", "{tmp}/" + LONG + ".jsonl", "--out", "{tmp}/o"],
        ["eval", "--model", "tiny-random", "--benchmarks", "{tmp}/" + LONG + ".jsonl", "--out", "{tmp}/o"],
        ["train", "--model", "tiny-random", "--data", "{tmp}/" + LONG + ".jsonl", "--out", "{tmp}/o"],
        ["data", "check", "{tmp}/" + LONG + ".jsonl"],
        ["data", "check", "{gsm}", "--rejects", "{tmp}/" + LONG],
        ["train", "--model", "tiny-random", "--data", "{gsm}", "--out", "{tmp}/o", "--config", "{tmp}/" + LONG],
        ["run", "{tmp}/" + LONG + ".yaml"],
        ["report", "{tmp}/" + LONG, "--out", "{tmp}/report"],
        ["eval", "--model", "tiny-random", "--benchmarks", "gsm8k", "--data-dir", "{tmp}/" + LONG, "--out", "{tmp}/o"],
        ["eval", "--model", "{tmp}/" + LONG, "--benchmarks", "{gsm}", "--out", "{tmp}/o"],
    ],
    ids=[
        "rewrite-out",
        "eval-out",
        "train-out",
        "rewrite-data",
        "eval-data",
        "train-data",
        "check-data",
        "check-rejects",
        "train-config",
        "run-config",
        "report-run",
        "eval-data-dir",
        "eval-model",
    ],
)
def test_a_name_over_the_file_systems_limit_is_one_line(args, gsm, tmp_path):
    result = runner.invoke(app, [a.format(gsm=gsm, tmp=tmp_path) for a in args])
    line = _one_line_error(result, "bytes long, over the file system's limit of", "use a shorter name")
    assert LONG not in line  # the over-long name is shown cut, so the line stays readable


@pytest.mark.parametrize(
    "args",
    [
        ["data", "check", "{loop}"],
        ["rewrite", "--model", "tiny-random", "--data", "{loop}", "--out", "{tmp}/o"],
        ["train", "--model", "tiny-random", "--data", "{loop}", "--out", "{tmp}/o"],
        ["eval", "--model", "tiny-random", "--benchmarks", "{loop}", "--out", "{tmp}/o"],
        ["eval", "--model", "{loop}", "--benchmarks", "{gsm}", "--out", "{tmp}/o"],
        ["eval", "--model", "tiny-random", "--benchmarks", "{gsm}", "--out", "{loop}"],
    ],
    ids=["check-data", "rewrite-data", "train-data", "eval-data", "eval-model", "eval-out"],
)
def test_a_symlink_loop_is_said_as_a_loop_not_as_a_missing_file(args, gsm, tmp_path):
    loop_a, loop_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    result = runner.invoke(app, [a.format(gsm=gsm, tmp=tmp_path, loop=loop_a) for a in args])
    line = _one_line_error(result, str(loop_a), "symlink loop")
    assert "no such" not in line and "unknown benchmark" not in line


# ---------------------------------------------------------------- models and trainer arguments
@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory) -> Path:
    """The tiny model with its weights as a pytorch_model.bin pickle holding a non-tensor object (as a
    checkpoint saved with training state, or a malicious one, does): torch refuses it under weights_only."""
    import torch
    from safetensors.torch import load_file

    from sftadapt.runtime.models import resolve_model

    tiny, folder = Path(resolve_model("tiny-random")), tmp_path_factory.mktemp("pickled")
    for item in tiny.iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, folder / item.name)
    state = dict(load_file(tiny / "model.safetensors"))
    state["training_args"] = argparse.Namespace(lr=1e-5)
    torch.save(state, folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("command", ["eval", "train"])
def test_a_pickled_checkpoint_torch_refuses_is_one_line_naming_the_file(command, pickled_model, gsm, tmp_path):
    data = ["--benchmarks", str(gsm), "--limit", "1"] if command == "eval" else ["--data", str(gsm)]
    result = runner.invoke(app, [command, "--model", str(pickled_model), *data, "--out", str(tmp_path / "o")])
    _one_line_error(result, f"{pickled_model}/pytorch_model.bin", "pickle", "weights_only", "safetensors")


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_deepspeed_in_trainer_args_without_deepspeed_installed_is_one_line(gsm, tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text('{"zero_optimization": {"stage": 2}}')
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "tiny-random",
            "--data",
            str(gsm),
            "--out",
            str(tmp_path / "o"),
            "--set",
            f"trainer_args.deepspeed={ds}",
        ],
    )
    _one_line_error(result, "trainer_args.deepspeed", "deepspeed is not installed", "pip install deepspeed")
    assert not (tmp_path / "o").exists()  # refused with the config, before any folder is made


# ---------------------------------------------------------------- advice that names only what exists
def test_run_into_a_users_folder_names_no_option_run_lacks(tmp_path):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    config = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    result = runner.invoke(app, ["run", str(config), "--set", f"out={users}"])
    line = _one_line_error(result, "not made by sftadapt", "--set out=DIR")
    assert "--force" not in line and "--out" not in line
    assert sorted(p.name for p in users.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "args, hint",
    [
        (["rewrite", "--model", "tiny-random", "--data", "{gsm}", "--out", "{tmp}/o"], "max_row_bytes option"),
        (["train", "--model", "tiny-random", "--data", "{gsm}", "--out", "{tmp}/o"], "max_row_bytes option"),
        (["eval", "--model", "tiny-random", "--benchmarks", "{gsm}", "--out", "{tmp}/o"], "max_row_bytes option"),
    ],
    ids=["rewrite", "train", "eval"],
)
def test_the_row_limit_is_an_option_of_the_stages_and_their_rejects_name_it(args, hint, gsm, tmp_path):
    # every row over a 40-byte limit: the stage stops before loading any model, naming the first reject
    result = runner.invoke(app, [a.format(gsm=gsm, tmp=tmp_path) for a in args] + ["--max-row-bytes", "40"])
    line = _one_line_error(result, f"{gsm}:1 whole row", "over the 40 bytes limit", hint)
    assert "'None'" not in line
    assert (hint == "--max-row-bytes") == ("--max-row-bytes" in line)  # a stage config's reject names its option


def test_data_check_names_its_own_flag_and_keeps_a_bounded_excerpt_of_a_parsed_row(tmp_path):
    huge = "y" * (5 << 20)  # a 5 MB problem in a row the raised limit lets through, refused for its answer
    data = _write(tmp_path / "d.jsonl", [_row(1), {"question": huge, "answer": "no marker"}, _row(3)])
    rejects = tmp_path / "rejects.jsonl"
    result = runner.invoke(app, ["data", "check", str(data), "--rejects", str(rejects), "--max-row-bytes", "10000000"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    (row,) = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert (row["file"], row["line"], row["field"]) == (str(data), 2, "answer")
    assert len(row["raw"]["question"].encode()) == EXCERPT_BYTES and huge.startswith(row["raw"]["question"])
    assert row["truncated"] == {
        "raw.question": {"bytes": len(huge), "sha256": hashlib.sha256(huge.encode()).hexdigest()}
    }
    assert rejects.stat().st_size < 3 * EXCERPT_BYTES
    small = _write(tmp_path / "s.jsonl", [_row(1), json.dumps(_row(2)) + " " * 200])
    result = runner.invoke(app, ["data", "check", str(small), "--max-row-bytes", "150"])
    assert "over the 150 bytes limit (raise --max-row-bytes if it is real)" in result.output, result.output


def test_benchmarks_takes_a_file_whose_name_holds_a_comma_and_repeats(gsm, tmp_path):
    comma = shutil.copy(gsm, tmp_path / "a,b.jsonl")
    other = shutil.copy(gsm, tmp_path / "other.jsonl")
    # a 40-byte row limit stops each run at its first benchmark file, before any model is loaded, naming the file
    for given in (str(comma), f"{comma},{other}"):
        result = runner.invoke(
            app,
            ["eval", "--model", "tiny-random", "--benchmarks", given, "--out", str(tmp_path / "o")]
            + ["--max-row-bytes", "40"],
        )
        line = _one_line_error(result, f"{comma}: no usable problems")
        assert "unknown benchmark" not in line
    result = runner.invoke(
        app,
        ["eval", "--model", "tiny-random", "--benchmarks", "gsm8k_nope", "--benchmarks", str(comma)]
        + ["--out", str(tmp_path / "o2")],
    )
    _one_line_error(result, "unknown benchmark 'gsm8k_nope'")  # a repeated --benchmarks is read, not replaced


# ---------------------------------------------------------------- train's rejects
def test_train_writes_rejects_with_file_line_field_and_a_bounded_excerpt_of_a_10_mb_row(tmp_path):
    big = json.dumps({"question": "Big " + "y" * (10 << 20), "answer": "#### 3"})
    no_answer = json.dumps({"question": "What is 1+1?", "answer": "It is two."})
    data = _write(tmp_path / "expert.jsonl", [_row(1), big, _row(2), no_answer])
    out = tmp_path / "trained"
    result = runner.invoke(
        app,
        ["-q", "train", "--model", "tiny-random", "--data", str(data), "--out", str(out)]
        + [f"--set={kv}" for kv in ("max_steps=1", "batch_size=1", "grad_accum=1", "save_steps=100", "dtype=float32")],
    )
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert f"2 rows rejected, see {out / 'rejects.jsonl'}" in result.output
    assert "'None'" not in result.output and "| rejected_rows | 2 |" in result.output
    rows = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["file"], r["line"], r["field"]) for r in rows] == [(str(data), 2, None), (str(data), 4, "answer")]
    assert "over the 1.0 MiB limit (raise the max_row_bytes option if it is real)" in rows[0]["reason"]
    assert len(rows[0]["raw"].encode()) == EXCERPT_BYTES and big.startswith(rows[0]["raw"])
    # the size and hash of the whole line: `sed -n 2p expert.jsonl` finds the row again, the hash confirms it
    assert rows[0]["truncated"] == {"raw": {"bytes": len(big), "sha256": hashlib.sha256(big.encode()).hexdigest()}}
    assert rows[1]["raw"]["answer"] == "It is two." and "truncated" not in rows[1]
    assert (out / "rejects.jsonl").stat().st_size < 3 * EXCERPT_BYTES
