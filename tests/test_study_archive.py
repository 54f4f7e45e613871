"""benchmarks/study_archive.py: a seed folder packed without its weights comes back byte for byte, in place."""

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "study_archive", Path(__file__).resolve().parents[1] / "benchmarks" / "study_archive.py"
)
archive_mod = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(archive_mod)


def _seed(root: Path) -> Path:
    seed = root / "seed-0"
    files = {
        "data/stage.json": json.dumps({"status": "done", "hash": "a"}),
        "data/expert.jsonl": '{"id": "p1"}\n',
        "train_sft/stage.json": json.dumps({"status": "done", "hash": "b"}),
        "train_sft/model.safetensors": "W" * 1000,
        "train_sft/tokenizer.json": "{}",
        "train_sft/config.json": "{}",
        "train_sft/checkpoint-4/optimizer.pt": "O",
        "train_sft/checkpoint-4/trainer_state.json": "{}",
        "eval_base/stage.json": json.dumps({"status": "done", "hash": "c"}),
        "eval_base/samples.jsonl": '{"id": "t1", "correct": true}\n',
        "run_config.json": "{}",
        "report/study.html": "<html>",
        "tracking/events.out": "E",
    }
    for rel, text in files.items():
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_text(text)
    return seed


def test_pack_leaves_weights_out_and_unpack_restores_the_rest(tmp_path, capsys):
    seed = _seed(tmp_path / "run")
    archive = tmp_path / "keep" / "seed-0.tar.xz"
    manifest = archive_mod.pack(seed, archive)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert names == {
        "MANIFEST.json",
        "data/stage.json",
        "data/expert.jsonl",
        "train_sft/stage.json",
        "train_sft/config.json",
        "eval_base/stage.json",
        "eval_base/samples.jsonl",
        "run_config.json",
    }
    assert set(manifest["left_out"]) == {
        "train_sft/model.safetensors",
        "train_sft/tokenizer.json",
        "train_sft/checkpoint-4/optimizer.pt",
        "train_sft/checkpoint-4/trainer_state.json",
        "report/study.html",
        "tracking/events.out",
    }
    assert json.loads((tmp_path / "keep" / "seed-0.manifest.json").read_text())["folder"] == str(seed.resolve())

    elsewhere = tmp_path / "other" / "seed-0"
    archive_mod.unpack(archive, elsewhere)
    assert "stage hashes contain that path" in capsys.readouterr().out  # not where it was packed: said
    for rel in names - {"MANIFEST.json"}:
        assert (elsewhere / rel).read_bytes() == (seed / rel).read_bytes()
    assert not (elsewhere / "train_sft" / "model.safetensors").exists()
    archive_mod.unpack(archive, elsewhere)  # again: identical files are left as they are

    (elsewhere / "eval_base" / "samples.jsonl").write_text("changed by the user\n")
    with pytest.raises(SystemExit, match="never overwrites"):
        archive_mod.unpack(archive, elsewhere)
    assert (elsewhere / "eval_base" / "samples.jsonl").read_text() == "changed by the user\n"


def test_pack_refuses_an_unfinished_seed_and_an_existing_archive(tmp_path):
    seed = _seed(tmp_path / "run")
    (seed / "eval_base" / "stage.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(SystemExit, match="stages not done: eval_base"):
        archive_mod.pack(seed, tmp_path / "a.tar.xz")
    (seed / "eval_base" / "stage.json").write_text(json.dumps({"status": "done"}))
    (tmp_path / "a.tar.xz").write_text("mine")
    with pytest.raises(SystemExit, match="never overwrites"):
        archive_mod.pack(seed, tmp_path / "a.tar.xz")
    assert (tmp_path / "a.tar.xz").read_text() == "mine"
