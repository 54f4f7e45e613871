"""DART mapper RL and synthesis on the tiny random model (seconds each).

- RL smoke: 2 GRPO steps × 2 rollouts × 16 tokens; rl_log.jsonl has the per-step fields, the policy moved,
  compute.json counts what was done, and a resumed run continues the step count and the counters.
- Synthesis: with the random model every rewrite fails the gate, so every row falls back to the expert
  solution (the split and the resume are asserted); with a scripted mapper whose rewrites are known, the best
  passing rewrite by r_align is kept and the cheats fall back.
"""

import json
import math

import pytest
import torch
from fakes import FakeEngine

from sftadapt.adapt.mapper import RL_LOG_KEYS, MapperTrainConfig, SynthConfig, synthesize, train_mapper
from sftadapt.adapt.reward import RewardConfig
from sftadapt.config import config_dict
from sftadapt.data import prompts as P
from sftadapt.data.records import Example, Problem, read_records, write_records
from sftadapt.data.store import StoreError
from sftadapt.engines.base import Completion
from sftadapt.rl.grpo import GRPOOptions, read_rl_log
from sftadapt.verify import Verdict, verify_one

PROBLEMS = [
    Problem(
        id="ravi",
        answer="21",
        source="test",
        problem="Ravi has 20 ribbons. He splits his ribbons into 2 equal groups and keeps one group. Later, Leo "
        "gives him 11 ribbons. How many ribbons does Ravi have in the end?",
        solution=r"$r=20$, $r\leftarrow \frac{r}{2}$, $r\leftarrow r+11$ $\Rightarrow r=\frac{20}{2}+11=21$. "
        r"\boxed{21}",
    ),
    Problem(
        id="mia",
        answer="12",
        source="test",
        problem="Mia has 7 apples. She buys 5 more apples. How many apples does Mia have now?",
        solution=r"$7+5=12$. \boxed{12}",
    ),
    Problem(
        id="tom",
        answer="5",
        source="test",
        problem="Tom has 9 marbles. He gives 4 marbles to Leo. How many marbles does Tom have now?",
        solution=r"$9-4=5$. \boxed{5}",
    ),
]
NATIVE = {
    "ravi": "Ravi starts with 20 ribbons. He splits them into 2 equal groups and keeps one group, so he has "
    r"20 / 2 = 10 ribbons. He gets 11 from Leo, so he has 10 + 11 = 21 ribbons. So the answer is \boxed{21}.",
    "mia": r"Mia starts with 7 apples. She buys 5 more, so she has 7 + 5 = 12 apples. So the answer is \boxed{12}.",
}


class InProcessVerifier:
    """The real verifier, serially in this process (no worker start-up in tests)."""

    def verify_many(self, golds, texts):
        # no signal.alarm timeout: synthesis verifies a shard in a background thread (data.store.Phases), as the
        # Verifier pool allows; the test's own answers need no time limit
        return [verify_one(g, t, timeout=None) for g, t in zip(golds, texts)]

    def close(self):
        pass


class AlwaysCorrect:
    """Lets every rollout through the answer check, so the RL smoke test exercises the scoring path too."""

    def verify_many(self, golds, texts):
        return [Verdict("correct", g, "boxed", 0.0) for g in golds]

    def close(self):
        pass


# every rule off (a random tiny model never writes an end token in 16 tokens: the truncation check too)
OPEN_GATE = RewardConfig(
    min_tokens=1,
    min_length_ratio=0.0,
    max_length_ratio=100.0,
    max_repeat_frac=1.0,
    copy_check=False,
    reference_phrases=[],
    meta_check=False,
    reasoning_check=False,
    truncation_check=False,
)


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "sft.jsonl"
    write_records(path, PROBLEMS)
    return str(path)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(f"{folder}/model.safetensors")


# ---------------------------------------------------------------- RL
def test_mapper_rl_smoke_logs_trains_and_resumes(tiny_engine, data_file, tmp_path):
    from sftadapt.runtime.models import resolve_model

    out = tmp_path / "mapper"
    grpo = GRPOOptions(max_steps=2, num_generations=2, max_completion_length=16, lr=1e-3, save_steps=2)
    cfg = MapperTrainConfig(target="tiny-random", data=data_file, out=str(out), grpo=grpo, reward=OPEN_GATE)
    summary = train_mapper(cfg, engine=tiny_engine, verifier=AlwaysCorrect(), progress=False)

    log = read_rl_log(out)
    assert [row["step"] for row in log] == [1, 2]
    for row in log:
        assert set(RL_LOG_KEYS) <= set(row)
        assert row["gate_pass_rate"] == 1.0 and row["fail_no_answer"] == 0.0
        assert row["r_align_pass_mean"] < 0 and math.isfinite(row["r_align_pass_mean"])
        assert row["length_ratio_mean"] > 0
    assert any(row["grad_norm"] > 0 for row in log)  # rewards differ within a group: there is a gradient
    before, after = _weights(resolve_model("tiny-random")), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)

    compute = json.loads((out / "compute.json").read_text())
    assert compute["optimizer_steps"] == 2 and compute["rollouts"] == 4  # 2 steps x 1 prompt x 2 rollouts
    assert 0 < compute["tokens_generated"] <= 4 * 16
    assert compute["tokens_scored"] == log[-1]["cum_scored_tokens"] > 0
    # the reward times the target's scoring passes itself: a counter in rl_log, so a resume keeps it
    assert compute["score_seconds"] == log[-1]["cum_score_seconds"] > 0
    assert summary["steps"] == 2

    # resume: one more step continues from checkpoint-2 with the counters where they were
    cfg.grpo.max_steps = 3
    train_mapper(cfg, engine=tiny_engine, verifier=AlwaysCorrect(), progress=False)
    log = read_rl_log(out)
    assert [row["step"] for row in log] == [1, 2, 3]
    assert log[-1]["cum_rollouts"] == 6
    assert log[-1]["cum_score_seconds"] > log[1]["cum_score_seconds"]  # counted on from the checkpoint's value
    compute = json.loads((out / "compute.json").read_text())
    assert compute["optimizer_steps"] == 3 and compute["resumed_from"].endswith("checkpoint-2")
    assert compute["stopped_early"] is None  # the stop rule is off by default


def test_the_truncation_gate_under_trl_agrees_with_trls_clipped_ratio(tiny_engine, data_file, tmp_path):
    out = tmp_path / "mapper"
    grpo = GRPOOptions(max_steps=2, num_generations=4, max_completion_length=6, lr=1e-3, save_steps=10)
    gate = RewardConfig(**{**config_dict(OPEN_GATE), "truncation_check": True})
    train_mapper(
        MapperTrainConfig(target="tiny-random", data=data_file, out=str(out), grpo=grpo, reward=gate),
        engine=tiny_engine,
        verifier=AlwaysCorrect(),
        progress=False,
    )
    log = read_rl_log(out)
    assert len(log) == 2
    for row in log:  # TRL's own count of rollouts that ended without an end token, and ours
        assert row["fail_truncated"] == pytest.approx(row["completions/clipped_ratio"])
        assert row["gate_pass_rate"] == pytest.approx(1 - row["fail_truncated"])
    assert sum(row["fail_truncated"] for row in log) > 0  # 6 tokens of a random model: some rollouts are cut


def test_the_stop_rule_ends_mapper_rl_before_max_steps_and_says_why(tiny_engine, data_file, tmp_path):
    out = tmp_path / "mapper"
    # pass rate 1.0 under the open gate > 0.5; any r_align change < 1e9 is a plateau: it fires once 2 windows of 1
    grpo = GRPOOptions(
        max_steps=6,
        num_generations=2,
        max_completion_length=8,
        lr=1e-3,
        save_steps=10,
        stop_pass_rate=0.5,
        stop_window=1,
        stop_plateau=1e9,
    )
    summary = train_mapper(
        MapperTrainConfig(target="tiny-random", data=data_file, out=str(out), grpo=grpo, reward=OPEN_GATE),
        engine=tiny_engine,
        verifier=AlwaysCorrect(),
        progress=False,
    )
    compute = json.loads((out / "compute.json").read_text())
    assert summary["steps"] == compute["optimizer_steps"] == 2 and [r["step"] for r in read_rl_log(out)] == [1, 2]
    assert compute["stopped_early"]["step"] == 2 and compute["stopped_early"]["max_steps"] == 6
    assert "gate pass rate 1.000 > 0.5" in compute["stopped_early"]["reason"]
    assert (out / "config.json").exists()  # the policy is saved as at any other end


def test_mapper_rl_lora_with_the_real_gate_and_verifier(tiny_engine, data_file, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "mapper-lora"
    grpo = GRPOOptions(max_steps=2, num_generations=2, max_completion_length=16, lora=True, lora_r=4)
    cfg = MapperTrainConfig(target="tiny-random", data=data_file, out=str(out), grpo=grpo, verifier_workers=1)
    train_mapper(cfg, engine=tiny_engine, progress=False)
    log = read_rl_log(out)
    assert len(log) == 2
    for row in log:
        # a random model never writes a verified \boxed{} answer: every rollout is gated
        assert row["gate_pass_rate"] == 0.0 and row["r_align_pass_mean"] is None
        assert row["fail_no_answer"] + row["fail_wrong_answer"] == 1.0
    assert (out / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(out))  # a plain model folder: the LoRA is merged
    assert not hasattr(merged, "peft_config")
    assert json.loads((out / "compute.json").read_text())["tokens_scored"] == 0  # nothing passed, nothing scored


# ---------------------------------------------------------------- synthesis
def test_untrained_synthesis_falls_back_everywhere_and_resumes(tiny_engine, tmp_path):
    out = tmp_path / "sdft"
    cfg = SynthConfig(
        mapper="untrained", target="tiny-random", data="unused", out=str(out), k=2, max_new_tokens=16, shard_size=2
    )
    summary = synthesize(
        cfg, engine=tiny_engine, verifier=InProcessVerifier(), problems=PROBLEMS, progress=False, print_summary=False
    )
    rows = read_records(out / "train.jsonl", Example)
    assert [r.id for r in rows] == ["ravi", "mia", "tom"]
    assert [r.origin for r in rows] == ["expert"] * 3
    assert summary["fallback_rate"] == 1.0 and summary["mapped_rate"] == 0.0 and summary["gate_pass_rate"] == 0.0
    assert summary["method"] == "prompted_rewrite"
    tok = tiny_engine.tokenizer
    for row, p in zip(rows, PROBLEMS):
        assert row.response == P.ensure_boxed(p.solution, p.answer)
        assert row.behavior_logprobs is None
        assert len(row.target_logprobs) == len(P.response_token_ids(tok, row.response))
        assert row.target_logprob_mean == pytest.approx(sum(row.target_logprobs) / len(row.target_logprobs))
        assert row.target_logprob_mean == row.meta["expert_target_logprob_mean"]
        assert len(row.attempts) == 2 and all(a["meta"]["gate_reasons"] for a in row.attempts)
        assert all(a["stage"] == "mapper" and a["verdict"] for a in row.attempts)
    assert summary["gap"]["final_set"] == pytest.approx(summary["gap"]["expert_set"])
    compute = json.loads((out / "compute.json").read_text())
    assert compute["tokens_generated"] == sum(
        a["meta"]["n_generated"] + (a["finish_reason"] == "stop") for r in rows for a in r.attempts
    )
    assert compute["tokens_scored"] == sum(len(r.target_logprobs) for r in rows)  # only the experts were scored

    # resume: lose the last shard and the output, re-run: the same file, and only the lost shard is redone
    first = (out / "train.jsonl").read_bytes()
    (out / "shards" / "shard-00001.jsonl").unlink()
    (out / "train.jsonl").unlink()
    generated = tiny_engine.stats["generated_tokens"]
    again = synthesize(
        cfg, engine=tiny_engine, verifier=InProcessVerifier(), problems=PROBLEMS, progress=False, print_summary=False
    )
    assert (out / "train.jsonl").read_bytes() == first
    assert tiny_engine.stats["generated_tokens"] - generated == sum(
        a["meta"]["n_generated"] + (a["finish_reason"] == "stop") for a in rows[2].attempts
    )
    assert again["compute"]["generated_tokens"] == summary["compute"]["generated_tokens"]

    cfg.k = 3  # another config must not mix with these shards
    with pytest.raises(StoreError, match="another config"):
        synthesize(
            cfg,
            engine=tiny_engine,
            verifier=InProcessVerifier(),
            problems=PROBLEMS,
            progress=False,
            print_summary=False,
        )


class ScriptedMapper(FakeEngine):
    """A mapper whose rewrites are known: the texts listed for the problem found in the prompt."""

    name = "scripted"

    def __init__(self, tokenizer, texts: dict[str, list[str]]):
        self.tokenizer, self.texts = tokenizer, texts
        self.stats = {"generated_tokens": 0, "generate_seconds": 0.0}

    def generate(self, prompts, params, seeds=None):
        out = []
        for prompt, row_seeds in zip(prompts, seeds):
            pid = next(p.id for p in PROBLEMS if p.problem in prompt)
            comps = []
            for text, seed in zip(self.texts[pid][: params.n], row_seeds):
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                comps.append(
                    Completion(text=text, token_ids=ids, logprobs=[-1.0] * len(ids), finish_reason="stop", seed=seed)
                )
                self.stats["generated_tokens"] += len(ids) + 1
            out.append(comps)
        return out

    def close(self):
        pass


def test_synthesis_keeps_the_best_passing_rewrite_else_the_expert(tiny_engine, tmp_path):
    expert = {p.id: P.ensure_boxed(p.solution, p.answer) for p in PROBLEMS}
    texts = {
        "ravi": [NATIVE["ravi"], NATIVE["ravi"].replace("Ravi starts with", "At first Ravi has"), expert["ravi"]],
        "mia": [NATIVE["mia"].replace("12", "13"), NATIVE["mia"], "As the reference solution says, " + NATIVE["mia"]],
        "tom": [
            r"\boxed{5}",
            "Tom has 9 marbles and gives 4 away, so 9 - 4 = 6 marbles. So the answer is \\boxed{6}.",
            "Tom Tom Tom Tom Tom Tom Tom Tom Tom Tom \\boxed{5}",
        ],
    }
    mapper = ScriptedMapper(tiny_engine.tokenizer, texts)
    # The native style is ~3x longer than these terse experts: under the SPEC's 2.0 cap it is gated as too long.
    cfg = SynthConfig(
        mapper="scripted",
        target="tiny-random",
        data="unused",
        out=str(tmp_path / "dart"),
        k=3,
        reward=RewardConfig(max_length_ratio=5.0),
    )
    summary = synthesize(
        cfg,
        engine=tiny_engine,
        mapper_engine=mapper,
        verifier=InProcessVerifier(),
        problems=PROBLEMS,
        progress=False,
        print_summary=False,
    )
    rows = {r.id: r for r in read_records(tmp_path / "dart" / "train.jsonl", Example)}

    ravi = rows["ravi"]
    assert ravi.origin == "mapper" and ravi.meta["method"] == "dart"
    passing = {a["index"]: a["meta"]["r_align"] for a in ravi.attempts if a["meta"]["passed"]}
    assert set(passing) == {0, 1}
    assert ravi.meta["kept_index"] == max(passing, key=passing.get)
    assert ravi.response == texts["ravi"][ravi.meta["kept_index"]]
    assert ravi.attempts[2]["meta"]["gate_reasons"] == ["near_copy"]
    assert ravi.behavior_logprobs is None and ravi.provenance["prompt_hash"] and ravi.provenance["sampling"]
    direct = tiny_engine.score([P.solve_prompt(tiny_engine.tokenizer, ravi.problem)], [ravi.response])[0]
    assert ravi.target_logprobs == pytest.approx(direct.logprobs, abs=1e-4)
    assert ravi.meta["r_align"] == pytest.approx(ravi.target_logprob_mean)  # variant mean: r_align = gap metric

    mia = rows["mia"]
    assert mia.origin == "mapper" and mia.meta["kept_index"] == 1
    assert [a["meta"]["gate_reasons"] for a in mia.attempts] == [["wrong_answer"], [], ["mentions_reference"]]

    tom = rows["tom"]
    assert tom.origin == "expert" and tom.response == expert["tom"] and tom.meta["kept_index"] is None
    reasons = [a["meta"]["gate_reasons"] for a in tom.attempts]
    assert "min_tokens" in reasons[0] and reasons[1] == ["wrong_answer"] and "repetition" in reasons[2]

    assert summary["origins"] == {"mapper": 2, "expert": 1}
    assert summary["gate_pass_rate"] == pytest.approx(3 / 9)
    assert summary["gate_failures"]["near_copy"] == pytest.approx(1 / 9)
    assert summary["gap"]["mapped_rows"] == pytest.approx((ravi.target_logprob_mean + mia.target_logprob_mean) / 2)

    # the same rewrite under the SPEC default length cap (2.0) is rejected as too long
    default = SynthConfig(mapper="scripted", target="tiny-random", data="unused", out=str(tmp_path / "dart2"), k=3)
    strict = synthesize(
        default,
        engine=tiny_engine,
        mapper_engine=mapper,
        verifier=InProcessVerifier(),
        problems=PROBLEMS[1:2],
        progress=False,
        print_summary=False,
    )
    assert strict["origins"]["mapper"] == 0 and strict["gate_failures"]["length_high"] > 0


def test_rewrites_stop_at_the_length_cap(tiny_engine, tmp_path):
    tom = PROBLEMS[2]
    cap = (
        int(
            2.0
            * len(
                tiny_engine.tokenizer(P.ensure_boxed(tom.solution, tom.answer), add_special_tokens=False)["input_ids"]
            )
        )
        + 8
    )
    cfg = SynthConfig(mapper="untrained", target="tiny-random", data="unused", out=str(tmp_path / "cap"), k=2)
    synthesize(
        cfg, engine=tiny_engine, verifier=InProcessVerifier(), problems=[tom], progress=False, print_summary=False
    )
    row = read_records(tmp_path / "cap" / "train.jsonl", Example)[0]
    assert 16 < cap < cfg.max_new_tokens
    assert max(a["meta"]["n_generated"] for a in row.attempts) <= cap
    assert any(a["finish_reason"] == "length" and a["meta"]["n_generated"] == cap for a in row.attempts)
    # a rewrite cut at the cap is gated as truncated (and only those)
    assert all(("truncated" in a["meta"]["gate_reasons"]) == (a["finish_reason"] == "length") for a in row.attempts)


def test_map_synthesize_command(tmp_path, data_file):
    from typer.testing import CliRunner

    from sftadapt.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        [
            "-q",
            "map",
            "synthesize",
            "--mapper",
            "untrained",
            "--target",
            "tiny-random",
            "--data",
            data_file,
            "--out",
            str(out),
            "--k",
            "2",
            "--max-new-tokens",
            "8",
            "--dtype",
            "float32",
            "--set",
            "verifier_workers=1",
            "--set",
            "reward.min_tokens=4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "fallback 100.0%" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 3 and summary["k"] == 2
    from sftadapt.data.card import read_card

    card = read_card(out)  # the dataset card beside the synthesised set
    assert card["configs"][0]["data_files"][0]["path"] == "train.jsonl"
    assert (
        card["sftadapt"]["origin_rows"] == {"expert": 3} and card["sftadapt"]["target_model"]["spec"] == "tiny-random"
    )
    assert card["sftadapt"]["command"].startswith(("sftadapt", "(library call"))
    assert json.loads((out / "shards" / "manifest.json").read_text())["config"]["reward"]["min_tokens"] == 4
    bad = CliRunner().invoke(app, ["map", "synthesize", "--out", str(tmp_path / "x"), "--set", "reward.variant=max"])
    assert bad.exit_code == 2 and "variant" in bad.output
