"""`sftadapt pool`: seeds of one study run apart (other sittings, other machines) give the report one run of all
seeds gives, and runs made with other options are refused."""

import json

import pytest
import yaml
from test_pipeline import TINY

from sftadapt.config import ConfigError
from sftadapt.pipeline import load_run_config, run
from sftadapt.report.pool import pool

SMALL = {**TINY, "arms": ["base", "sft"], "eval": {**TINY["eval"], "raw_model": False}}


def _run(tmp_path, name: str, **changes) -> tuple:
    values = {**SMALL, **changes, "out": str(tmp_path / name)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return tmp_path / name, run(load_run_config(path), progress=False)


def _table(study: dict) -> list:
    return [(a["arm"], a["gap"], a["benchmarks"], a["compute"]) for a in study["arms"]]


def test_seeds_run_apart_pool_into_the_report_of_one_run_of_all_seeds(tmp_path):
    one, _ = _run(tmp_path, "seed0", seeds=[0])
    other, _ = _run(tmp_path, "seed1", seeds=[1])
    _, together = _run(tmp_path, "both", seeds=[0, 1])

    pooled = pool([one, other], tmp_path / "pooled")
    assert pooled["seeds"] == [0, 1] == together["seeds"]
    for mine, theirs in zip(_table(pooled), _table(together)):  # compute: each stage's own seconds differ
        assert mine[:3] == theirs[:3]
        assert mine[3]["optimizer_steps"] == theirs[3]["optimizer_steps"]
        assert mine[3]["tokens_trained"] == theirs[3]["tokens_trained"]
    assert json.loads((tmp_path / "pooled" / "study.json").read_text())["seeds"] == [0, 1]
    assert "| SFT |" in (tmp_path / "pooled" / "study.md").read_text()
    # a multi-seed run folder pools as its seeds; nothing was re-run in any of them
    assert _table(pool([tmp_path / "both"], tmp_path / "again"))[0][:3] == _table(together)[0][:3]


def test_pool_refuses_other_options_a_seed_twice_and_an_unfinished_stage(tmp_path):
    one, _ = _run(tmp_path, "seed0", seeds=[0])
    other, _ = _run(tmp_path, "lr", seeds=[1], train={**SMALL["train"], "lr": 1e-3})
    with pytest.raises(ConfigError, match=r"ran with other options.*train\.lr"):
        pool([one, other], tmp_path / "out")
    with pytest.raises(ConfigError, match="seed 0 is already in"):
        pool([one, one], tmp_path / "out")
    meta_path = one / "eval_sft" / "stage.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "status": "running"}))
    with pytest.raises(ConfigError, match="eval_sft is running, not done"):
        pool([one], tmp_path / "out")
    with pytest.raises(ConfigError, match="no such file"):
        pool([tmp_path / "nowhere"], tmp_path / "out")
