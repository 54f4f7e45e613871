"""Users' folders (sftadapt/runtime/outdir.py and its call sites): a command writes only into folders it made, never
deletes or overwrites what it did not write, and a --force set-aside leaves no stale result behind."""

import json

import pytest
from typer.testing import CliRunner

from sftadapt.cli import app
from sftadapt.data.store import ShardStore
from sftadapt.runtime.outdir import MARKER, TRAIN_OUTPUTS, OutDirError, claim, read_owner

runner = CliRunner()


def test_a_new_or_empty_folder_is_claimed_with_a_marker(tmp_path):
    out = claim(tmp_path / "new" / "deeper", "sample")
    assert read_owner(out)["command"] == "sample"
    (tmp_path / "empty").mkdir()
    assert read_owner(claim(tmp_path / "empty", "rewrite"))["command"] == "rewrite"
    claim(out, "sample")  # the same command again: a resume


def test_a_users_non_empty_folder_is_refused_without_force(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutDirError, match="not empty and was not made by sftadapt"):
        claim(tmp_path, "sample")
    claim(tmp_path, "sample", force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert read_owner(tmp_path)["foreign"] == ["notes.txt"]


def test_a_users_checkpoint_folder_is_refused_even_with_force(tmp_path):
    (tmp_path / "checkpoint-old").mkdir()
    (tmp_path / "checkpoint-old" / "weights.bin").write_text("precious")
    for force in (False, True):
        with pytest.raises(OutDirError):
            claim(tmp_path, "train", force=force, protect=TRAIN_OUTPUTS)
    assert (tmp_path / "checkpoint-old" / "weights.bin").read_text() == "precious"


def test_a_users_readme_is_protected_and_stays_protected(tmp_path):
    (tmp_path / "README.md").write_text("my notes")
    claim(tmp_path, "sample", force=True)  # sample writes no README.md: allowed beside it
    with pytest.raises(OutDirError, match="README.md"):  # but train would overwrite it, even later
        claim(tmp_path, "train", force=True, protect=TRAIN_OUTPUTS)


def test_another_commands_folder_is_refused_without_force(tmp_path):
    claim(tmp_path / "o", "sample")
    with pytest.raises(OutDirError, match="output of `sftadapt sample`"):
        claim(tmp_path / "o", "rewrite")
    claim(tmp_path / "o", "rewrite", force=True)
    assert read_owner(tmp_path / "o")["commands"] == ["rewrite", "sample"]


def test_out_naming_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(OutDirError, match="names a file"):
        claim(target, "sample")
    result = runner.invoke(app, ["-q", "sample", "--model", "tiny-random", "--data", str(target), "--out", str(target)])
    assert result.exit_code == 2 and "names a file" in result.output and result.exception.__class__ is SystemExit


def test_train_refuses_a_folder_with_a_users_checkpoint_before_any_work(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-old").mkdir(parents=True)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "a\n#### 1"}) + "\n")
    result = runner.invoke(app, ["train", "--model", "tiny-random", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 2 and "checkpoint-old" in result.output
    assert (out / "checkpoint-old").is_dir() and not (out / MARKER).exists()


def test_force_sets_the_stale_result_aside_with_the_old_shards(tmp_path):
    out = claim(tmp_path / "o", "rewrite")
    old = ShardStore(out / "shards", "hash-a", {})
    old.write(0, [{"x": 1}])
    old.finalize(out / "train.jsonl", expected_shards=1)
    (out / "summary.json").write_text("{}")
    ShardStore(out / "shards", "hash-b", {}, force=True)  # then the process is killed: nothing else ran
    assert not (out / "train.jsonl").exists() and not (out / "summary.json").exists()
    aside = [p for p in out.iterdir() if p.name.startswith("shards.old-")]
    assert len(aside) == 1 and (aside[0] / "result-train.jsonl").read_text() == '{"x": 1}\n'


def test_data_check_never_writes_beside_the_data_and_rejects_never_overwrite_an_input(tmp_path):
    data = tmp_path / "d.jsonl"
    text = '{"question": "q0", "answer": "s\\n#### 1"}\n{"question": "q", "answer": "no final"}\n'
    data.write_text(text)
    folder_before = sorted(p.name for p in tmp_path.iterdir())
    assert runner.invoke(app, ["data", "check", str(data)]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == folder_before
    result = runner.invoke(app, ["data", "check", str(data), "--rejects", str(data)])
    assert result.exit_code == 2 and "overwrite the input" in result.output
    assert data.read_text() == text
    mine = tmp_path / "mine.txt"
    mine.write_text("my file")
    result = runner.invoke(app, ["data", "check", str(data), "--rejects", str(mine)])
    assert result.exit_code == 2 and "not a rejects file" in result.output and mine.read_text() == "my file"


def test_convert_refuses_to_overwrite_its_input_or_a_users_file(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "s\\n#### 1"}\n')
    result = runner.invoke(app, ["data", "convert", str(data), str(data)])
    assert result.exit_code == 2 and "is the input" in result.output
    other = tmp_path / "other.jsonl"
    other.write_text("precious\n")
    assert runner.invoke(app, ["data", "convert", str(data), str(other)]).exit_code == 2
    assert other.read_text() == "precious\n"
    assert runner.invoke(app, ["data", "convert", str(data), str(other), "--force"]).exit_code == 0
    assert runner.invoke(app, ["data", "convert", str(data), str(other)]).exit_code == 0  # ours now


def test_stages_refuse_a_users_folder_and_another_commands_folder_through_the_cli(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "s\n#### 1"}) + "\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text("my summary")
    result = runner.invoke(app, ["-q", "sample", "--model", "tiny-random", "--data", str(data), "--out", str(mine)])
    assert result.exit_code == 2 and "not made by sftadapt" in result.output
    assert (mine / "summary.json").read_text() == "my summary"
    # with --force it is still refused: sample would overwrite summary.json, which it did not write
    result = runner.invoke(
        app, ["-q", "sample", "--model", "tiny-random", "--data", str(data), "--out", str(mine), "--force"]
    )
    assert result.exit_code == 2 and "summary.json" in result.output
    claim(tmp_path / "sampled", "sample")
    result = runner.invoke(
        app, ["-q", "rewrite", "--model", "tiny-random", "--data", str(data), "--out", str(tmp_path / "sampled")]
    )
    assert result.exit_code == 2 and "output of `sftadapt sample`" in result.output
