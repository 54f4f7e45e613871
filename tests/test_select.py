"""Choosing training problems by the target's own pass rate (adapt/select.py, the `select` stage of `run`)."""

import json

import pytest
from test_pipeline import TINY, _yaml

from sftadapt.adapt import select
from sftadapt.data.records import Problem, read_records, write_records
from sftadapt.pipeline import load_run_config, planned_stages, run


def test_choose_keeps_the_band_in_pool_order_then_the_nearest():
    ids = ["a", "b", "c", "d", "e", "f"]
    correct = {"a": 0, "b": 1, "c": 4, "d": 2, "e": 3, "f": 1}
    assert select.choose(ids, correct, 4, [0.25, 0.5], 3) == (["b", "d", "f"], 0)
    assert select.choose(ids, correct, 4, [0.25, 0.5], 2) == (["b", "d"], 0)  # the first in pool order
    # two more than the band holds: the nearest (3/4 and 0/4 are 0.25 away; pool order breaks the tie: a before e)
    assert select.choose(ids, correct, 4, [0.25, 0.5], 4) == (["a", "b", "d", "f"], 1)
    assert select.choose(ids, correct, 4, [0.25, 0.5], 5) == (["a", "b", "d", "e", "f"], 2)
    assert select.histogram([correct[i] for i in ids], 4) == {"0/4": 1, "1/4": 2, "2/4": 1, "3/4": 1, "4/4": 1}


def test_run_select_writes_the_chosen_set_and_its_record(tmp_path, monkeypatch, capsys):
    pool = [Problem(id=f"p{i}", problem=f"q{i}", answer=str(i), solution=f"s{i}") for i in range(5)]
    write_records(tmp_path / "pool.jsonl", pool)
    scores = {"p0": [0, 4, 0], "p1": [2, 4, 1], "p2": [4, 4, 1], "p3": [1, 4, 0], "p4": [3, 4, 1]}
    monkeypatch.setattr(
        "sftadapt.eval.stage.run", lambda cfg, progress=True: {"benchmarks": {"pool": {"per_problem": scores}}}
    )
    cfg = load_run_config(None, ["task.train_problems=3", "task.select_pool=5", "task.select_band=[0.25,0.5]"])
    sampling = type("S", (), {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 0})()
    out = select.run_select(cfg.task, sampling, str(tmp_path / "pool.jsonl"), tmp_path / "select", progress=False)
    assert out["chosen"] == 3 and out["in_band"] == 2 and out["outside_band"] == 1
    chosen = read_records(tmp_path / "select" / "expert.jsonl", Problem)
    assert [p.id for p in chosen] == ["p0", "p1", "p3"]  # 0/4 and 3/4 tie at 0.25 from the band: p0 comes first
    assert chosen[1].solution == "s1"  # the rows as the pool holds them, expert solutions included
    record = json.loads((tmp_path / "select" / "selection.json").read_text())
    assert record["pool_histogram"] == {"0/4": 1, "1/4": 1, "2/4": 1, "3/4": 1, "4/4": 1}
    assert record["chosen_histogram"] == {"0/4": 1, "1/4": 1, "2/4": 1, "3/4": 0, "4/4": 0}
    assert record["chosen_ids"] == {"p0": 0, "p1": 2, "p3": 1}
    assert "only 2 of 5 candidates" in capsys.readouterr().out  # a shortfall is said, not hidden


@pytest.mark.parametrize(
    "sets, words",
    [
        (["task.train_problems=8", "task.select_pool=4"], "below train_problems"),
        (["task.select_band=[0.6,0.2]"], "select_band"),
        (["task.select_band=[0.2]"], "select_band"),
        (["task.select_band=[0.2,1.5]"], "select_band"),
        (["task.kind=dataset", "task.data=gsm8k_train", "task.select_pool=100"], "synthetic task only"),
        (["task.select_k=0"], "select_k"),
    ],
)
def test_bad_select_options_are_refused(sets, words):
    from sftadapt.config import ConfigError

    with pytest.raises(ConfigError, match=words):
        load_run_config(None, sets)


def test_a_study_with_selection_trains_every_arm_on_the_chosen_problems(tmp_path):
    # the tiny random model solves nothing: a band of [0, 0] keeps every candidate it failed, in pool order
    values = {**TINY, "arms": ["base", "sft", "dr_sft"]}
    values["task"] = {**TINY["task"], "select_pool": 6, "select_k": 2, "select_band": [0.0, 0.0]}
    cfg = load_run_config(_yaml(tmp_path, values))
    study = run(cfg, progress=False)
    root = tmp_path / "run"
    record = json.loads((root / "select" / "selection.json").read_text())
    assert record["pool"] == 6 and record["chosen"] == 4 and sum(record["pool_histogram"].values()) == 6
    chosen = [p.id for p in read_records(root / "select" / "expert.jsonl", Problem)]
    pool = [p.id for p in read_records(root / "data" / "pool.jsonl", Problem)]
    assert len(chosen) == 4 and set(chosen) <= set(pool) and not (root / "data" / "expert.jsonl").exists()
    attempts = [json.loads(line) for line in (root / "select" / "pool_eval" / "pool" / "attempts.jsonl").open()]
    assert len(attempts) == 6 * 2 and {a["meta"]["benchmark"] for a in attempts} == {"pool"}
    # what the adapting and training stages read is the chosen set
    rewritten = [json.loads(line)["id"] for line in (root / "rewrite" / "train.jsonl").open()]
    assert sorted(set(rewritten)) == sorted(chosen)
    chosen_file = str(root / "select" / "expert.jsonl")
    for stage, data in (("rewrite", chosen_file), ("train_sft", [chosen_file])):  # train takes a list of files
        spec = json.loads((root / stage / "stage.json").read_text())["spec"]
        assert spec["options"]["data"] == data and "select" in spec["inputs"], stage
    assert len(study["stages_run"][0]) == planned_stages(cfg)
    from sftadapt.runtime.owned import own_entries  # every entry is one sftadapt knows it wrote (`clean` frees it)

    assert own_entries(root / "select") == sorted(p.name for p in (root / "select").iterdir())

    # a new band re-selects and re-runs what trains on the set; the base evaluation does not depend on it
    values["task"]["select_band"], values["arms"] = [0.0, 0.5], ["base", "dr_sft"]
    again = run(load_run_config(_yaml(tmp_path, values)), progress=False)
    ran = set(again["stages_run"][0])
    assert ran == {"select", "rewrite", "train_dr_sft", "eval_dr_sft"}  # not data, warm-up or the base evaluation
