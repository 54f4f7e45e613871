"""Resuming after a kill or a damaged file: a checkpoint the Trainer did not finish saving is skipped (and set
aside, not deleted) in favour of the last whole one; a damaged shard, manifest, shard record or stage.json is one
line naming the file and the way out, never a bare JSON error."""

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from sftadapt.cli import _guard, app
from sftadapt.data.records import Example, UnreadableFile, write_records
from sftadapt.data.store import ShardStore, StoreError, run_sharded, shard_totals
from sftadapt.runtime.checkpoint_files import incomplete_reason
from sftadapt.runtime.owned import set_aside_record
from sftadapt.runtime.trainer_io import read_saved_options, resume_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


def _one_line(text: str, *words: str) -> None:
    text = text.strip()
    assert text.count("\n") == 0 and "Traceback" not in text, text
    for word in words:
        assert word in text, text


# ---------------------------------------------------------------- (a) a real run killed while saving
def test_an_incomplete_newest_checkpoint_is_set_aside_and_the_whole_one_before_it_resumed(tmp_path):
    from sftadapt.train.stage import TrainConfig, train

    data = tmp_path / "d.jsonl"
    rows = [Example(f"r{i}", f"What is {i} + 2?", f"So \\boxed{{{i + 2}}}.", str(i + 2), "expert") for i in range(6)]
    write_records(data, rows)
    cfg = TrainConfig(
        model="tiny-random",
        data=[str(data)],
        out=str(tmp_path / "run"),
        lr=1e-3,
        max_steps=3,
        batch_size=2,
        save_steps=1,  # checkpoints 1, 2, 3; save_total_limit=2 keeps 2 and 3
        warmup_ratio=0.0,
        resume=False,
        dtype="float32",
    )
    train(cfg)
    out = Path(cfg.out)
    straight = load_file(out / "model.safetensors")
    # killed while saving step 3: the weights are written, trainer_state.json (written last) is not
    (out / "checkpoint-3" / "trainer_state.json").unlink()

    with pytest.warns(UserWarning, match=r"checkpoint-3: no trainer_state\.json.*resuming from checkpoint-2"):
        summary = train(TrainConfig(**{**cfg.__dict__, "resume": "auto"}))
    assert summary["resumed_from"] == str(out / "checkpoint-2")
    resumed = load_file(out / "model.safetensors")
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    # the skipped folder is moved aside whole (and recorded for `sftadapt clean`), not deleted or written over
    (aside,) = out.glob("checkpoints.old-*")
    assert (aside / "checkpoint-3" / "model.safetensors").stat().st_size > 0
    assert not (aside / "checkpoint-3" / "trainer_state.json").exists()
    assert json.loads((aside / ".sftadapt-set-aside.json").read_text())["entries"] == ["checkpoint-3"]
    # the Trainer saved step 3 anew into a fresh folder, and its rotation kept the two newest whole ones
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert incomplete_reason(out / "checkpoint-2") is None and incomplete_reason(out / "checkpoint-3") is None


# ---------------------------------------------------------------- (b) the completeness check, hand-made folders
def _checkpoint(folder: Path, step: int, weights: str = "model.safetensors") -> Path:
    """A folder with the files the Trainer writes (tiny tensors, real formats)."""
    folder.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(folder / weights))
    torch.save({"state": {0: torch.ones(32)}}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return folder


def _cut(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


DAMAGE = {
    "no trainer_state": (lambda f: (f / "trainer_state.json").unlink(), "no trainer_state.json"),
    "trainer_state cut": (lambda f: _cut(f / "trainer_state.json"), "trainer_state.json does not parse"),
    "trainer_state without step": (lambda f: (f / "trainer_state.json").write_text("{}"), "no global_step"),
    "weights cut": (lambda f: _cut(f / "model.safetensors"), "model.safetensors is cut short"),
    "weights cut in the header": (lambda f: _cut(f / "model.safetensors", 20), "model.safetensors is cut short"),
    "weights empty": (lambda f: _cut(f / "model.safetensors", 0), "model.safetensors is empty"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "no model weights"),
    "optimizer cut": (lambda f: _cut(f / "optimizer.pt"), "optimizer.pt is cut short"),
    "no optimizer": (lambda f: (f / "optimizer.pt").unlink(), "no optimizer.pt"),
    "no scheduler": (lambda f: (f / "scheduler.pt").unlink(), "no scheduler.pt"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_what_makes_a_checkpoint_incomplete(tmp_path, damage):
    folder = _checkpoint(tmp_path / "checkpoint-5", 5)
    assert incomplete_reason(folder) is None
    spoil, why = DAMAGE[damage]
    spoil(folder)
    assert why in (incomplete_reason(folder) or "")


def test_lora_sharded_and_model_only_checkpoints_are_whole(tmp_path):
    lora = _checkpoint(tmp_path / "lora", 1, weights="adapter_model.safetensors")
    assert incomplete_reason(lora) is None
    _cut(lora / "adapter_model.safetensors")
    assert "adapter_model.safetensors is cut short" in incomplete_reason(lora)

    sharded = _checkpoint(tmp_path / "sharded", 1, weights="model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert incomplete_reason(sharded) == "no model-00002-of-00002.safetensors"

    model_only = _checkpoint(tmp_path / "model_only", 1)  # save_only_model: no optimizer, no scheduler
    (model_only / "optimizer.pt").unlink()
    (model_only / "scheduler.pt").unlink()
    assert incomplete_reason(model_only, optimizer=False) is None and incomplete_reason(model_only)


def test_auto_takes_the_newest_whole_checkpoint_by_step_and_sets_the_newer_ones_aside(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    out = tmp_path / "out"
    for step in (1, 2, 3, 10):
        _checkpoint(out / f"checkpoint-{step}", step)
    (out / "checkpoint-3" / "trainer_state.json").unlink()
    _cut(out / "checkpoint-10" / "model.safetensors")  # by number the newest (10 > 3), not by name
    with pytest.warns(UserWarning) as caught:
        picked = resume_checkpoint("auto", out, {"lr": 1}, {"lr": 1})
    assert picked == str(out / "checkpoint-2")
    (message,) = [str(w.message) for w in caught]
    _one_line(message, "checkpoint-10: model.safetensors is cut short", "checkpoint-3: no trainer_state.json")
    assert "nothing deleted" in message and "resuming from checkpoint-2" in message
    (aside,) = out.glob("checkpoints.old-*")
    assert sorted(p.name for p in aside.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-3"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to skip: no warning
        assert resume_checkpoint("auto", out, {}, None) == str(out / "checkpoint-2")


def test_with_no_whole_checkpoint_training_starts_over_and_other_ranks_move_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (_checkpoint(out / "checkpoint-4", 4) / "trainer_state.json").unlink()
    monkeypatch.setenv("RANK", "1")  # a second process of a launch: same pick, the main process moves
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resume_checkpoint("auto", out, {}, None) is None
    assert (out / "checkpoint-4").is_dir()
    monkeypatch.setenv("RANK", "0")
    with pytest.warns(UserWarning, match="no whole checkpoint is left, training starts over"):
        assert resume_checkpoint("auto", out, {}, None) is None
    assert not (out / "checkpoint-4").exists() and len(list(out.glob("checkpoints.old-*/checkpoint-4"))) == 1


def test_force_under_a_launcher_starts_every_rank_over_and_only_the_main_process_moves(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _checkpoint(out / "checkpoint-4", 4)
    (out / "train_config.json").write_text("{}")
    monkeypatch.setenv("RANK", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            resume_checkpoint("auto", out, {"lr": 2}, {"lr": 1}, force=True, run_files=("train_config.json",)) is None
        )
    assert (out / "checkpoint-4").is_dir() and not list(out.glob("checkpoints.old-*"))
    monkeypatch.setenv("RANK", "0")
    with pytest.warns(UserWarning, match=r"other options \(lr changed\) were set aside .* training starts over"):
        assert (
            resume_checkpoint("auto", out, {"lr": 2}, {"lr": 1}, force=True, run_files=("train_config.json",)) is None
        )
    (aside,) = out.glob("checkpoints.old-*")
    assert set_aside_record(aside)["entries"] == ["checkpoint-4", "train_config.json"]
    assert not (out / "checkpoint-4").exists() and not (out / "train_config.json").exists()
    # a rank that looks after the move (no checkpoint, no saved options) starts over too
    monkeypatch.setenv("RANK", "1")
    assert resume_checkpoint("auto", out, {"lr": 2}, None, force=True, run_files=("train_config.json",)) is None


def test_a_named_incomplete_checkpoint_is_refused_with_the_reason(tmp_path):
    folder = _checkpoint(tmp_path / "checkpoint-7", 7)
    _cut(folder / "optimizer.pt")
    with pytest.raises(FileNotFoundError, match=r"not a whole checkpoint folder, optimizer.pt is cut short"):
        resume_checkpoint(str(folder), tmp_path, {}, None)


def test_damaged_saved_options_name_the_file(tmp_path):
    path = tmp_path / "train_config.json"
    path.write_text('{"config": {"lr": 0.00')
    with pytest.raises(UnreadableFile) as err:
        read_saved_options(path, "config")
    _one_line(str(err.value), str(path), "delete it")


# ---------------------------------------------------------------- (c) shards and manifests
@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """A finished `sftadapt sample` folder with two shards (the real command, the tiny random model)."""
    out = tmp_path_factory.mktemp("sample") / "out"
    args = ["-q", "sample", "--model", "tiny-random", "--data", "synthetic_id", "--limit", "2", "--n", "1"]
    args += ["--max-new-tokens", "2", "--dtype", "float32", "--set", "shard_size=1", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "shards" / "shard-00001.jsonl").is_file()
    return out, args


@pytest.mark.parametrize("name", ["shard-00001.jsonl", "manifest.json"])
def test_a_damaged_shard_or_manifest_of_a_stage_is_one_line_naming_it(sampled, name, monkeypatch):
    monkeypatch.setenv("SFTADAPT_QUIET", "0")  # `-q` sets it in this process: restored after the test
    out, args = sampled
    path = out / "shards" / name
    whole = path.read_bytes()
    _cut(path, len(whole) - 9)
    try:
        result = runner.invoke(app, args)
    finally:
        path.write_bytes(whole)
    assert result.exit_code == 2
    _one_line(result.output, f"error: {path}", "damaged")
    assert ("--force" if name == "manifest.json" else "delete the file and re-run") in result.output


def _work(calls):
    def work(chunk):
        calls.append(list(chunk))
        return [{"x": i, "text": "row " * 8} for i in chunk]

    return work


def test_a_damaged_shard_stops_finalize_and_deleting_it_redoes_that_shard_only(tmp_path):
    store, calls = ShardStore(tmp_path / "shards", "h"), []
    run_sharded(store, list(range(6)), 2, _work(calls), progress=False)
    store.finalize(tmp_path / "full.jsonl", expected_shards=3)
    _cut(store.shard_path(1), store.shard_path(1).stat().st_size - 9)  # damaged after it was written
    with pytest.raises(StoreError) as err:
        store.finalize(tmp_path / "train.jsonl", expected_shards=3)
    _one_line(str(err.value), f"{store.shard_path(1)}:2", "damaged shard")
    assert not (tmp_path / "train.jsonl").exists() and not list(tmp_path.glob("*.tmp"))  # no half output
    with pytest.raises(StoreError, match="shard-00001.jsonl"):
        store.read(1)
    store.shard_path(1).unlink()  # what the message says to do
    calls.clear()
    run_sharded(ShardStore(tmp_path / "shards", "h"), list(range(6)), 2, _work(calls), progress=False)
    assert calls == [[2, 3]]
    store.finalize(tmp_path / "train.jsonl", expected_shards=3)
    assert (tmp_path / "train.jsonl").read_bytes() == (tmp_path / "full.jsonl").read_bytes()


def test_a_damaged_manifest_is_refused_and_force_sets_the_shards_aside(tmp_path):
    root = tmp_path / "shards"
    run_sharded(ShardStore(root, "h"), [1, 2], 1, _work([]), progress=False)
    _cut(root / "manifest.json")
    with pytest.raises(UnreadableFile) as err:
        ShardStore(root, "h")
    _one_line(str(err.value), str(root / "manifest.json"), "--force", "delete the manifest")
    ShardStore(root, "h", force=True)
    (aside,) = tmp_path.glob("shards.old-*")
    assert sorted(p.name for p in aside.glob("shard-*")) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert not list(root.glob("shard-*")) and json.loads((root / "manifest.json").read_text())["config_hash"] == "h"
    # the other way out: delete the manifest (here the one set aside with them): the shards are adopted
    (aside / "manifest.json").unlink()
    calls = []
    run_sharded(ShardStore(aside, "h"), [1, 2], 1, _work(calls), progress=False)
    assert calls == []


def test_damaged_shard_records_name_the_file(tmp_path):
    from sftadapt.engines import rejects

    store = ShardStore(tmp_path / "shards", "h")
    store.write(0, [{"x": 1}])
    (store.root / "stats-00000.json").write_text('{"seconds": 1.')
    with pytest.raises(UnreadableFile) as err:
        shard_totals(store)
    _one_line(str(err.value), "stats-00000.json", "shard-00000.jsonl")
    (store.root / "rejects-00000.jsonl").write_text('{"file": "a", "line": 3}\n{"file": "b", "li')
    with pytest.raises(UnreadableFile) as err:
        rejects.restore(store.root, [0], tmp_path / "rejects.jsonl")
    _one_line(str(err.value), f"{store.root / 'rejects-00000.jsonl'}:2", "shard-00000.jsonl")


# ---------------------------------------------------------------- (d) stage.json of `sftadapt run`
def test_a_damaged_stage_json_is_one_line_naming_it(tmp_path, capsys):
    from sftadapt.pipeline import Stages
    from sftadapt.report.pool import _Finished

    calls = []

    def work(folder):
        calls.append(folder.name)
        return {"ok": True}

    Stages(tmp_path, progress=False).run("eval_base", {"n": 1}, [], work)
    meta = tmp_path / "eval_base" / "stage.json"
    _cut(meta)
    capsys.readouterr()
    with pytest.raises(typer.Exit):
        _guard(lambda: Stages(tmp_path, progress=False).run("eval_base", {"n": 1}, [], work))
    _one_line(capsys.readouterr().err, f"error: {meta}", "delete it")
    with pytest.raises(UnreadableFile, match="stage.json: damaged"):
        _Finished(tmp_path)  # `sftadapt pool` reads the same record
    meta.unlink()  # the way out the message names: the stage runs again
    assert Stages(tmp_path, progress=False).run("eval_base", {"n": 1}, [], work)["ok"] and len(calls) == 2
