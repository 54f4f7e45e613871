"""Compute accounting per arm (report/compute.py): what producing each arm cost, from hand-made stage folders."""

import json

import pytest

from sftadapt.report.compute import arm_compute


def _stage(root, name, compute):
    (root / name).mkdir(parents=True)
    (root / name / "compute.json").write_text(json.dumps(compute))


@pytest.fixture
def study(tmp_path):
    _stage(
        tmp_path,
        "mapper_train",
        {
            "optimizer_steps": 64,
            "tokens_generated": 40_000,
            "tokens_scored": 9_000,
            "policy_tokens_processed": 150_000,
            "target_score_seconds_this_run": 30.0,
        },
    )
    _stage(tmp_path, "mapper", {"tokens_generated": 12_000, "tokens_scored": 20_000, "score_seconds": 12.5})
    _stage(
        tmp_path, "direct_rl", {"optimizer_steps": 64, "tokens_generated": 30_000, "policy_tokens_processed": 110_000}
    )
    train = {"steps": 10, "global_batch": 8, "response_tokens": 4_000, "rows": 100}
    results = {
        "mapper_train": {"stage_seconds": 2_300.0},
        "mapper": {"stage_seconds": 400.0},
        "direct_rl": {"stage_seconds": 2_000.0},
        "rewrite": {
            "stage_seconds": 300.0,
            "totals": {"generated_tokens": 8_000, "scored_tokens": 5_000, "score_seconds": 7.0},
        },
        "train_dart_sft": {**train, "stage_seconds": 100.0},
        "train_dr_sft": {**train, "stage_seconds": 90.0},
        "train_sft": {**train, "stage_seconds": 80.0},
    }
    return tmp_path, results


def test_dart_is_charged_its_mapper_rl_policy_tokens_and_seconds_like_direct_rl(study):
    root, results = study
    dart = arm_compute("dart_sft", root, results)
    sft_tokens = 10 * 8 * 4_000 // 100  # steps x global batch x mean response tokens per row
    assert dart == {
        "tokens_generated": 52_000,
        "tokens_scored": 29_000,
        "tokens_trained": 150_000 + sft_tokens,
        "optimizer_steps": 64 + 10,
        "seconds": 2_800.0,
        "score_seconds": 42.5,
    }
    direct = arm_compute("direct_rl", root, results)
    assert direct["tokens_trained"] == 110_000 and direct["optimizer_steps"] == 64 and direct["seconds"] == 2_000.0


def test_other_arms_are_charged_their_own_stages_only(study):
    root, results = study
    dr = arm_compute("dr_sft", root, results)
    assert (dr["tokens_generated"], dr["tokens_scored"], dr["score_seconds"], dr["seconds"]) == (
        8_000,
        5_000,
        7.0,
        390.0,
    )
    sft = arm_compute("sft", root, results)
    assert sft["tokens_generated"] == 0 and sft["tokens_trained"] == 3_200 and sft["seconds"] == 80.0
    assert arm_compute("base", root, results)["seconds"] == 0.0
