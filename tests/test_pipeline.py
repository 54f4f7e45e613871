"""`sftadapt run` end to end on the tiny model, stage caching, and every shipped config validated."""

import json
import os
from pathlib import Path

import pytest
from test_mapper import AlwaysCorrect

from sftadapt import arms as arm_table
from sftadapt.arms import DEFAULT_ARMS, Arm
from sftadapt.config import ConfigError
from sftadapt.pipeline import (
    CONFIG_DIR,
    Stages,
    load_run_config,
    planned_stages,
    run,
    seed_paths,
    spec_changes,
    stage_configs,
)

TINY = {
    "name": "tiny",
    "model": "tiny-random",
    "seeds": [0],
    "task": {"kind": "synthetic", "train_problems": 4},
    "warmup": {"problems": 8, "train": {"max_steps": 2, "batch_size": 4, "grad_accum": 1, "save_steps": 1000}},
    "eval": {
        "benchmarks": ["synthetic_id", "synthetic_ood"],
        "limit": 2,
        "dtype": "float32",
        "protocol_overrides": {"max_new_tokens": 8},
    },
    "train": {"max_steps": 2, "batch_size": 2, "grad_accum": 1, "save_steps": 1000},
    "rewrite": {"k": 2, "guided_tries": 1, "max_new_tokens": 8, "dtype": "float32"},
    "mapper_train": {
        "grpo": {"max_steps": 1, "num_generations": 2, "max_completion_length": 8, "lora": True, "save_steps": 1000}
    },
    "synth": {"k": 1, "max_new_tokens": 8, "dtype": "float32"},
    "direct_rl": {"grpo": {"max_steps": 1, "num_generations": 2, "max_completion_length": 8, "save_steps": 1000}},
}


def _yaml(tmp_path: Path, values: dict) -> Path:
    import yaml

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**values, "out": str(tmp_path / "run")}))
    return path


def test_run_end_to_end_then_cached_then_partial_redo(tmp_path):
    cfg = load_run_config(_yaml(tmp_path, TINY))
    study = run(cfg, progress=False)
    arms = [a["arm"] for a in study["arms"]]
    assert arms == ["raw", *DEFAULT_ARMS]
    for a in study["arms"]:
        assert set(a["benchmarks"]) == {"synthetic_id", "synthetic_ood", "mean"}
        assert 0.0 <= a["benchmarks"]["mean"]["mean"] <= 1.0
    by_arm = {a["arm"]: a for a in study["arms"]}
    # every trained arm's compute counts its optimiser steps; adapted arms also count generated tokens
    assert by_arm["sft"]["compute"]["optimizer_steps"] == 2
    assert by_arm["dr_sft"]["compute"]["tokens_generated"] > 0
    assert by_arm["dart_sft"]["compute"]["optimizer_steps"] == 1 + 2  # mapper RL step + SFT steps
    assert by_arm["direct_rl"]["compute"]["optimizer_steps"] == 1
    assert by_arm["dr_sft"]["gap"] is not None and by_arm["sft"]["gap"] is not None
    assert by_arm["base"]["gap"] is None
    root = tmp_path / "run"
    assert Path(study["markdown_path"]).exists() and (root / "report" / "seed-0" / "accuracy.png").exists()
    assert "| DR+IS |" in study["markdown"] and "Compute per arm" in study["markdown"]
    html = Path(study["html_path"]).read_text(encoding="utf-8")  # the HTML report beside study.md
    assert study["html_path"] == str(root / "report" / "study.html") and html.count('class="arm-row"') == len(arms)

    # data, warm-up, adapt (rewrite, sdft, mapper RL + synthesis, prompted), train (8 arms), direct RL, evals
    assert len(study["stages_run"][0]) == 1 + 1 + 5 + 8 + 1 + 11
    assert planned_stages(cfg) == len(study["stages_run"][0])  # the [k/N] counter's N
    assert set(study["outputs"][0]) == set(study["stages_run"][0])  # the closing summary names every output

    # the same config again: every stage is cached
    again = run(load_run_config(_yaml(tmp_path, TINY)), progress=False)
    assert again["stages_run"] == {0: []} and again["arms"] == study["arms"]
    # an engine's options (servers, concurrency, ...) say where a stage runs, not what it computes: still cached
    moved = {
        **TINY,
        "rewrite": {**TINY["rewrite"], "engine": {"backend": "hf", "options": {"timeout": 9}}},
        "eval": {**TINY["eval"], "engine": {"backend": "hf", "options": {"concurrency": 3}}},
    }
    plan = run(load_run_config(_yaml(tmp_path, moved)), progress=False, dry_run=True)["plan"][0]
    assert {row["status"] for row in plan} == {"cached"}

    # change one training option: the trained arms and their evals rerun; data, warm-up and adapt stay cached
    changed = {**TINY, "train": {**TINY["train"], "lr": 1e-4}}
    # --dry-run first: it says so (naming the option) and writes nothing
    before = sorted(str(p) for p in root.rglob("*"))
    plan = run(load_run_config(_yaml(tmp_path, changed)), progress=False, dry_run=True)["plan"][0]
    status = {row["stage"]: row["status"] for row in plan}
    assert status["rewrite"] == status["warmup"] == "cached"
    every = ("sft", "dft", "dr_sft", "dr_dft", "dr_is", "dart_sft", "sdft_sft", "pr_sft")
    assert all(status[f"train_{a}"].startswith("would re-run") and "lr" in status[f"train_{a}"] for a in every)
    assert all(status[f"eval_{a}"].startswith("would re-run") for a in every)
    assert sorted(str(p) for p in root.rglob("*")) == before
    # run it for one arm of each training set (the expert set, Mind the Gap's, DART's): what it re-runs
    names = ("sft", "dr_sft", "dart_sft")
    ran = set(
        run(load_run_config(_yaml(tmp_path, {**changed, "arms": ["base", *names]})), progress=False)["stages_run"][0]
    )
    assert ran == {f"train_{a}" for a in names} | {f"eval_{a}" for a in names}
    assert list(root.glob("train_sft.old-*"))  # the old output is set aside, not deleted
    # every entry of every stage folder is one that sftadapt knows it wrote: `clean` and keep_superseded can free
    # a set-aside folder whole (a name missing from runtime/owned's lists would be left behind, as a user's file)
    from sftadapt.runtime.owned import find_set_aside, own_entries

    for folder in (p for p in root.iterdir() if (p / "stage.json").exists() and ".old-" not in p.name):
        assert own_entries(folder) == sorted(p.name for p in folder.iterdir()), folder
    assert {p.name.split(".old-")[0] for p in find_set_aside(root)} == {f"train_{a}" for a in names} | {
        f"eval_{a}" for a in names
    }
    assert not list(root.glob("*/checkpoint-*"))  # finished stages keep their model, not their checkpoints
    stage = json.loads((root / "rewrite" / "stage.json").read_text())
    assert stage["status"] == "done"


class _EveryAnswerCorrect(AlwaysCorrect):
    """The verifier of every stage, passing every answer: the tiny random model never writes one, and these arms'
    plumbing needs mapped rows (the gate's own behaviour is tested in test_reward and test_mapper)."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_patch_arm_and_the_fallback_ablations_run_end_to_end(tmp_path, monkeypatch):
    arms = ["base", "patch_sft", "dart_sft_nofb", "dart_sft_fbdft", "pr_sft_nofb"]
    # a gate the tiny random model can pass (it never writes an answer, so the mapped sets would be all fallback:
    # the drop arms would have nothing to train on); the real gate's behaviour is test_reward's
    reward = {
        "answer_format": "any",
        "min_tokens": 1,
        "min_length_ratio": 0.0,
        "max_length_ratio": 100.0,
        "max_repeat_frac": 1.0,
        "copy_check": False,
        "meta_check": False,
        "reasoning_check": False,
        "truncation_check": False,
    }
    values = {
        **TINY,
        "arms": arms,
        "mapper_train": {**TINY["mapper_train"], "reward": reward},
        "synth": {**TINY["synth"], "reward": reward},
        "eval": {**TINY["eval"], "raw_model": False},
    }
    cfg = load_run_config(_yaml(tmp_path, values))
    configs = stage_configs(cfg, 0, "tiny-random", seed_paths(tmp_path))
    assert configs["mapper_train_patch"].reward.kind == "patch" and configs["mapper_patch"].reward.kind == "patch"
    assert configs["mapper_train"].reward.kind == "alignment"
    assert configs["train_dart_sft_nofb"].fallback == "drop" and configs["train_dart_sft_fbdft"].fallback == "dft"
    assert configs["train_patch_sft"].data == [str(tmp_path / "mapper_patch" / "train.jsonl")]
    monkeypatch.setattr("sftadapt.verify.Verifier", _EveryAnswerCorrect)
    study = run(cfg, progress=False)
    root = tmp_path / "run"
    assert {"mapper_train_patch", "mapper_patch", "mapper_train", "mapper", "prompted"} <= set(study["stages_run"][0])
    rl_log = [json.loads(line) for line in (root / "mapper_train_patch" / "rl_log.jsonl").read_text().splitlines()]
    assert rl_log and rl_log[0]["gate_pass_rate"] == 1.0 and rl_log[0]["r_dist_pass_mean"] is not None
    attempts = [
        a
        for line in (root / "mapper_patch" / "train.jsonl").read_text().splitlines()
        for a in json.loads(line)["attempts"]
    ]
    assert all(a["meta"]["reward"] >= 1.0 and a["meta"]["r_dist"] is not None for a in attempts)  # gate x (1 + ...)
    by_arm = {a["arm"]: a for a in study["arms"]}
    assert by_arm["patch_sft"]["label"] == "Patch+SFT" and by_arm["patch_sft"]["compute"]["tokens_trained"] > 0
    train = {a: json.loads((root / f"train_{a}" / "stage.json").read_text())["result"] for a in arms[2:]}
    assert train["dart_sft_nofb"]["fallback"] == "drop" and "expert" not in train["dart_sft_nofb"]["origins"]
    assert train["dart_sft_fbdft"]["fallback"] == "dft"
    html = Path(study["html_path"]).read_text(encoding="utf-8")  # each mapper's RL curves under its own name
    assert "Patch mapper RL" in html and "DART mapper RL" in html


def test_dry_run_of_a_new_folder_lists_every_stage_and_creates_nothing(tmp_path):
    plan = run(load_run_config(_yaml(tmp_path, TINY)), progress=False, dry_run=True)["plan"][0]
    assert {row["status"] for row in plan} == {"would run"}
    assert len(plan) == planned_stages(load_run_config(_yaml(tmp_path, TINY)))
    assert not (tmp_path / "run").exists()


def test_cpu_bf16_false_makes_auto_float32_for_the_whole_run_and_keeps_every_hash(tmp_path, monkeypatch):
    from sftadapt.runtime.precision import capability, resolve_dtype

    monkeypatch.setenv("SFTADAPT_CPU_BF16", "1")  # restored after the test; the run sets it to 0
    plain, pinned = (load_run_config(_yaml(tmp_path, {**TINY, "cpu_bf16": v})) for v in (True, False))
    resolve_dtype("auto", "cpu")  # the answer is cached per process: the run must not keep this one
    try:
        run(pinned, progress=False, dry_run=True)
        assert os.environ["SFTADAPT_CPU_BF16"] == "0" and resolve_dtype("auto", "cpu") == "float32"
    finally:  # later tests see this machine's own answer again
        monkeypatch.setenv("SFTADAPT_CPU_BF16", "1")
        capability.cache_clear()
    # not a stage option: every stage's options (what its hash is made of) are those of the plain config
    paths = seed_paths(tmp_path / "run")
    assert repr(stage_configs(pinned, 0, "tiny-random", paths)) == repr(stage_configs(plain, 0, "tiny-random", paths))


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="unknown arm"):
        load_run_config(_yaml(tmp_path, {**TINY, "arms": ["base", "sftt"]}))
    with pytest.raises(ConfigError, match="train: unknown option 'lrr'"):
        cfg = load_run_config(_yaml(tmp_path, {**TINY, "train": {"lrr": 1}}))
        stage_configs(cfg, 0, "tiny-random", {k: "x" for k in seed_paths(tmp_path)})


@pytest.mark.parametrize(
    "path", sorted([*CONFIG_DIR.glob("*.yaml"), *CONFIG_DIR.glob("paper/*.yaml")]), ids=lambda p: p.name
)
def test_every_shipped_study_config_loads_and_validates(path):
    cfg = load_run_config(path)
    configs = stage_configs(cfg, cfg.seeds[0], cfg.model, seed_paths(Path("/tmp/x")))
    assert configs["protocol"].n >= 1


def test_stages_say_what_changed_and_keep_only_the_newest_superseded_outputs(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SFTADAPT_QUIET", raising=False)  # a CLI test's `-q` may have set it for the process

    def work(folder):
        (folder / "summary.json").write_text("x" * 1000)  # a name stages write: set aside, then freed whole
        return {"ok": True}

    for value in (1, 2, 3):
        Stages(tmp_path, keep_superseded=1).run("stage", {"lr": value, "fixed": "a"}, [], work)
    said = capsys.readouterr().out
    assert "lr: 1 -> 2" in said and "lr: 2 -> 3" in said and "fixed" not in said
    assert len(list(tmp_path.glob("stage.old-*"))) == 1  # the newest superseded output only
    assert "removed stage.old-" in said
    # cached: nothing changes and nothing is removed
    Stages(tmp_path, keep_superseded=1).run("stage", {"lr": 3, "fixed": "a"}, [], work)
    assert "cached" in capsys.readouterr().out


def test_a_resumed_stage_counts_the_time_of_its_interrupted_runs(tmp_path):
    """A stage killed twice and then finished: stage_seconds = both lost segments (start to last file written,
    here 100 s and 40 s) + the finishing run's own time."""

    def interrupted(seconds):
        def work(folder):
            (folder / f"shard-{seconds}.jsonl").write_text("{}\n")  # its last write: now
            meta = json.loads((folder / "stage.json").read_text())
            meta["started_at"] -= seconds  # as if this run had started `seconds` before that write
            (folder / "stage.json").write_text(json.dumps(meta))
            raise KeyboardInterrupt  # as a kill would end it: no result, stage.json left "running"

        return work

    for seconds in (100, 40):
        with pytest.raises(KeyboardInterrupt):
            Stages(tmp_path).run("eval_x", {"n": 1}, [], interrupted(seconds))
    result = Stages(tmp_path).run("eval_x", {"n": 1}, [], lambda folder: {"ok": True})
    assert result["earlier_segments_seconds"] == pytest.approx(140, abs=0.2)
    assert 140 <= result["stage_seconds"] < 150
    fresh = Stages(tmp_path / "other").run("eval_x", {"n": 1}, [], lambda folder: {"ok": True})
    assert "earlier_segments_seconds" not in fresh and fresh["stage_seconds"] < 10


def test_spec_changes_lists_leaves_and_truncates():
    old = {"options": {"a": 1, "nested": {"b": "x"}, "gone": 1}, "inputs": {"data": "h1"}}
    new = {"options": {"a": 1, "nested": {"b": "y" * 80}}, "inputs": {"data": "h2"}}
    changes = spec_changes(old, new)
    assert "gone: 1 -> (unset)" in changes and 'inputs.data: "h1" -> "h2"' in changes
    assert any(c.startswith('nested.b: "x" -> ') and c.endswith("...") for c in changes)


def test_clean_lists_then_frees_superseded_outputs(tmp_path):
    from typer.testing import CliRunner

    from sftadapt.cli import app
    from sftadapt.runtime.outdir import claim

    def work(folder):
        (folder / "model.safetensors").write_bytes(b"0" * 2**20)
        return {}

    claim(tmp_path, "run")
    for lr in (1, 2):
        Stages(tmp_path / "seed-0", progress=False).run("train_sft", {"lr": lr}, [], work)
    (aside,) = (tmp_path / "seed-0").glob("train_sft.old-*")
    runner = CliRunner()
    shown = runner.invoke(app, ["clean", str(tmp_path)], input="n\n")
    assert shown.exit_code == 0 and "1.0 MiB" in shown.output and "nothing freed" in shown.output
    assert aside.exists()
    freed = runner.invoke(app, ["clean", str(tmp_path), "--yes"])
    assert freed.exit_code == 0 and "freed 1.0 MiB" in freed.output
    assert not aside.exists()
    assert (tmp_path / "seed-0" / "train_sft" / "model.safetensors").exists()  # current outputs are never touched


def test_an_arm_is_one_row_of_the_table(tmp_path):
    """Adding an arm that trains an existing source with an existing loss is one row of arms.TABLE: the config
    accepts it, the planned-stage count, the stage configs, the run, the compute charge and the report label all
    follow (the diff of this test against the product: one `Arm(...)`, nothing else)."""
    new = Arm("dr_dft_b", "DR+DFT (b)", "rewrite", "dft")
    previous = arm_table.set_table((*arm_table.TABLE, new))
    try:
        cfg = load_run_config(_yaml(tmp_path, {**TINY, "arms": ["base", "dr_dft_b"]}))
        # warm-up, rewrite, train the new arm; evaluate raw, base and the new arm; one more for the report
        assert planned_stages(cfg) == planned_stages(load_run_config(_yaml(tmp_path, {**TINY, "arms": ["base"]}))) + 3
        paths = seed_paths(tmp_path)
        configs = stage_configs(cfg, 0, "tiny-random", paths)
        assert configs["train_dr_dft_b"].loss == "dft"
        assert configs["train_dr_dft_b"].data == [paths["rewrite_data"]]
        study = run(cfg, progress=False)
        by_arm = {a["arm"]: a for a in study["arms"]}
        assert list(by_arm) == ["raw", "base", "dr_dft_b"]
        assert by_arm["dr_dft_b"]["label"] == "DR+DFT (b)"
        assert by_arm["dr_dft_b"]["compute"]["tokens_generated"] > 0  # charged the rewrite stage it trains on
        assert by_arm["dr_dft_b"]["compute"]["optimizer_steps"] == 2
        assert by_arm["dr_dft_b"]["gap"] is not None
        assert "DR+DFT (b)" in Path(study["markdown_path"]).read_text()
    finally:
        arm_table.set_table(previous)
    with pytest.raises(ConfigError, match="unknown arm"):
        load_run_config(_yaml(tmp_path, {**TINY, "arms": ["base", "dr_dft_b"]}))
