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


def test_a_seed_packed_unfinished_resumes_and_remakes_only_the_weights_it_needs(tmp_path, capsys):
    """Archive and resume across sittings: a tiny study runs its base arm, is packed without weights, and is
    unpacked in place; a run with one more arm re-makes the warm-up (identical to the packed sha256 on this CPU),
    trains and evaluates the new arm exactly as an uninterrupted run does, and keeps every cached stage."""
    from test_pipeline import TINY, _yaml

    from sftadapt.pipeline import load_run_config, run

    one_arm = {**TINY, "arms": ["base"], "eval": {**TINY["eval"], "raw_model": False}}
    two_arms = {**one_arm, "arms": ["base", "sft"]}
    first = tmp_path / "a"
    first.mkdir()
    run(load_run_config(_yaml(first, one_arm)), progress=False)
    seed = first / "run"
    (seed / "train_sft").mkdir()  # a stage the sitting's end interrupted: left out whole, runs again
    (seed / "train_sft" / "stage.json").write_text(json.dumps({"status": "running", "hash": "x"}))
    (seed / "train_sft" / "train_log.jsonl").write_text('{"step": 1}\n')
    archive = tmp_path / "keep" / "seed-0.tar.xz"
    with pytest.raises(SystemExit, match="stages not done: train_sft"):
        archive_mod.pack(seed, archive)
    manifest = archive_mod.pack(seed, archive, unfinished=True)
    assert manifest["unfinished"] == ["train_sft"]
    assert "warmup/model.safetensors" in manifest["left_out_sha256"]
    assert not any(k.startswith("train_sft/") for k in {**manifest["files"], **manifest["left_out"]})
    packed_eval = (seed / "eval_base" / "synthetic_ood" / "attempts.jsonl").read_bytes()

    moved = tmp_path / "moved"
    seed.rename(moved)  # the sitting ends: the run folder is gone
    archive_mod.unpack(archive)
    said = capsys.readouterr().out
    assert "without the weights of warmup" in said and "unfinished when packed" in said
    assert not (seed / "warmup" / "model.safetensors").exists() and not (seed / "train_sft").exists()

    # a re-make killed half way left the records in warmup.packed: the next run puts them back first
    (seed / "warmup").rename(seed / "warmup.packed")
    (seed / "warmup").mkdir()
    (seed / "warmup" / "train_log.jsonl").write_text("half made\n")

    cached = run(load_run_config(_yaml(first, one_arm)), progress=False)
    assert cached["stages_run"] == {0: []}  # everything restored is cached; no weights were needed
    assert not (seed / "warmup" / "model.safetensors").exists()

    resumed = run(load_run_config(_yaml(first, two_arms)), progress=False)
    assert resumed["stages_run"] == {0: ["train_sft", "eval_sft"]}
    remade = json.loads((seed / "warmup" / "stage.json").read_text())["remade"]
    assert remade["weights_identical"] is True and remade["files"]["model.safetensors"] == "identical"
    assert (seed / "eval_base" / "synthetic_ood" / "attempts.jsonl").read_bytes() == packed_eval
    assert (seed / "warmup" / "train_log.jsonl").read_bytes() == (moved / "warmup" / "train_log.jsonl").read_bytes()
    assert not (seed / "warmup.packed").exists() and not (seed / archive_mod.LEFT_OUT).exists()

    straight = tmp_path / "b"
    straight.mkdir()
    run(load_run_config(_yaml(straight, two_arms)), progress=False)
    for name in ("train_sft/train_log.jsonl", "eval_sft/synthetic_id/attempts.jsonl"):
        assert _without_times(seed / name) == _without_times(straight / "run" / name), name


def _without_times(path: Path) -> list:
    return [_untimed(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def _untimed(value):
    """A record without its clock readings (`generate_s`, `train_runtime`, ...): they differ between any two runs."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not (k.endswith("_s") or "time" in k or "second" in k)}
    return value
