"""The optional reasoning judge behind DART's rule gate (reward.py `reward.judge`, the judge of "Patch the
Distribution Mismatch"): what its verdicts do to a rewrite, that it is off by default and leaves no trace then
(reasons, logs, records, run hashes), how its block is validated, and its plumbing through synthesis on a
scripted judge and on a real tiny-random one.

The texts are test_gate_meta.py's: archived cheats the rules refuse and faithful solutions they pass.
"""

import pytest
from fakes import BoxedVerifier, FakeEngine
from test_gate_meta import AISHA, CHEATS, OPEN, OWN, PROBLEMS, ZOE, ScriptedEngine, gate

from sftadapt.adapt.judge import JUDGE_REASONS, judge_verdict
from sftadapt.adapt.reward import (
    GATE_REASONS,
    AlignmentReward,
    RewardConfig,
    reward_record,
    rollout_gate,
)
from sftadapt.config import (
    NOT_HASHED,
    ConfigError,
    config_dict,
    config_hash,
    decided_options,
    load_config,
    without_engine_options,
)
from sftadapt.data import prompts as P
from sftadapt.data.records import Example, read_records
from sftadapt.engines.base import Completion, TokenScores
from sftadapt.verify import Verdict

JUDGED = {**OPEN, "judge": {"model": "scripted-judge"}}


class Asked:
    """A judge that answers `reply(text)` and records what it was shown."""

    def __init__(self, reply):
        self.reply, self.shown = reply, []

    def __call__(self, problems, golds, texts):
        self.shown.extend(zip(problems, golds, texts))
        return [self.reply(t) for t in texts]


def gate_all(cases, judge=None, cfg=None):
    """rollout_gate over (case, text) pairs, as the reward and synthesis call it."""
    texts = [t for _, t in cases]
    return rollout_gate(
        texts,
        [t.split() for t in texts],
        [c[1] for c, _ in cases],
        [1] * len(texts),
        ["correct"] * len(texts),
        cfg or RewardConfig(**OPEN),
        ["boxed"] * len(texts),
        [False] * len(texts),
        [c[0] for c, _ in cases],
        [c[2] for c, _ in cases],
        judge=judge,
    )


# ---------------------------------------------------------------- verdicts
@pytest.mark.parametrize(
    "reply, reasons",
    [("INVALID", ["judge_invalid"]), ("VALID", []), ("I cannot tell.", ["judge_unparsed"])],
)
def test_the_judges_verdict_decides_a_faithful_rewrite(reply, reasons):
    judge = Asked(lambda _: reply)
    assert gate_all([OWN[0]], judge) == [reasons]
    # it saw the problem, the gold answer and the rewrite
    assert judge.shown == [(AISHA[0], AISHA[2], OWN[0][1])]


def test_the_judge_sees_only_what_the_rules_pass():
    judge = Asked(lambda _: "INVALID")
    cases = [(CHEATS[0][0], CHEATS[0][1]), OWN[0], (CHEATS[1][0], CHEATS[1][1]), OWN[1]]
    reasons = gate_all(cases, judge)
    assert reasons == [CHEATS[0][2], ["judge_invalid"], CHEATS[1][2], ["judge_invalid"]]
    assert [t for _, _, t in judge.shown] == [OWN[0][1], OWN[1][1]]


def test_reading_the_reply():
    for reply, verdict in [
        ("VALID", "valid"),
        ("invalid.", "invalid"),
        ("**INVALID**", "invalid"),
        ("Valid - every step holds.", "valid"),
        ("The solution is INVALID.", "invalid"),
        ("VALID or INVALID?", "valid"),  # its first word decides
        ("Either VALID or INVALID.", "unparsed"),
        ("", "unparsed"),
        ("validity unclear", "unparsed"),  # a word, not the verdict word
    ]:
        assert judge_verdict(reply) == verdict, reply


# ---------------------------------------------------------------- off by default: nothing changes
def test_without_a_judge_the_gate_logs_records_and_hashes_are_as_before():
    cfg = RewardConfig(**OPEN)
    assert not cfg.judge.on
    cases = [(c, t) for c, t, _ in CHEATS] + OWN
    assert gate_all(cases) == [gate(c, t) for c, t in cases] == [r for _, _, r in CHEATS] + [[]] * len(OWN)

    reward = AlignmentReward(
        score=lambda prompts, responses, entropy, **_: [TokenScores([1], [-1.0]) for _ in responses],
        verify=lambda golds, texts: [Verdict("correct", g, "boxed", 0.0) for g in golds],
        tokenize=str.split,
        qa_prompt=lambda p: p,
        cfg=cfg,
    )
    logged = {}
    reward([OWN[0][1]], [AISHA[0]], [AISHA[2]], [AISHA[1]], log_metric=logged.__setitem__)
    assert {k for k in logged if k.startswith("fail_")} == {f"fail_{r}" for r in GATE_REASONS}
    assert "judged" not in reward.counters.as_dict()
    assert reward.reasons == GATE_REASONS
    scores = reward.evaluate([AISHA[0]], [AISHA[2]], [AISHA[1]], [OWN[0][1]])
    assert "judge" not in scores[0].record()
    # provenance and every run hash read as before the judge existed
    assert "judge" not in reward_record(cfg)
    from sftadapt.adapt.mapper import SynthConfig
    from sftadapt.runtime.stage_cache import _decided

    synth = SynthConfig()
    before = config_dict(synth)
    del before["reward"]["judge"]  # the options as they were before the block existed
    old = without_engine_options({k: v for k, v in before.items() if k not in NOT_HASHED})
    assert config_hash(decided_options(synth)) == config_hash(old)  # the synthesis run id
    assert "judge" not in _decided(synth)["reward"]  # the `sftadapt run` stage hash
    on = SynthConfig(reward=load_config(RewardConfig, None, ["judge.model=tiny-random"]))
    assert decided_options(on)["reward"]["judge"]["model"] == "tiny-random"  # a judge that is on is decided


def test_a_judged_reward_counts_logs_and_scores_only_valid_rewrites():
    scored = []

    def score(prompts, responses, entropy, **_):
        scored.extend(responses)
        return [TokenScores([1], [-1.0]) for _ in responses]

    judge = Asked(lambda t: "VALID" if "17 - 14" in t else "no idea")
    cfg = load_config(RewardConfig, None, None, base=JUDGED)
    reward = AlignmentReward(
        score=score,
        verify=lambda golds, texts: [Verdict("correct", g, "boxed", 0.0) for g in golds],
        tokenize=str.split,
        qa_prompt=lambda p: p,
        cfg=cfg,
        judge=judge,
    )
    texts = [OWN[0][1], CHEATS[1][1], OWN[1][1]]
    logged = {}
    reward(
        texts,
        [AISHA[0], ZOE[0], OWN[1][0][0]],
        [AISHA[2], ZOE[2], OWN[1][0][2]],
        [AISHA[1], ZOE[1], OWN[1][0][1]],
        log_metric=logged.__setitem__,
    )
    assert scored == [OWN[0][1]]  # the rule-gated cheat and the unparsed verdict never reach the target
    assert logged["fail_judge_unparsed"] == pytest.approx(1 / 3) and logged["fail_judge_invalid"] == 0.0
    assert logged["gate_pass_rate"] == pytest.approx(1 / 3)
    assert reward.counters.as_dict()["judged"] == 2 and reward.counters.judge_seconds >= 0
    scores = reward.evaluate([AISHA[0]], [AISHA[2]], [AISHA[1]], [OWN[0][1]])
    assert scores[0].record()["judge"] == "valid" and scores[0].record()["judge_reply"] == "VALID"
    with pytest.raises(ValueError, match="no judge was given"):
        AlignmentReward(score=score, verify=None, tokenize=str.split, qa_prompt=str, cfg=cfg)


# ---------------------------------------------------------------- the block's options
def test_a_bad_judge_block_is_a_clear_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"reward\.judge: unknown option 'modle' \(did you mean 'model'\?\)"):
        _synth(["reward.judge.modle=x"])
    with pytest.raises(ConfigError, match=r"judge\.dtype = 'fp7'"):
        _synth(["reward.judge.model=tiny-random", "reward.judge.dtype=fp7"])
    with pytest.raises(ConfigError, match="max_new_tokens"):
        _synth(["reward.judge.max_new_tokens=0"])
    with pytest.raises(ConfigError, match="judge.model is empty"):
        _synth(["reward.judge.model=' '"])
    with pytest.raises(ConfigError, match="engine.backend 'gpt'"):
        _synth(["reward.judge.engine.backend=gpt"])
    cfg = _synth(["reward.judge.model=tiny-random", "reward.judge.dtype=float32", "reward.judge.engine.backend=vllm"])
    assert (cfg.reward.judge.on, cfg.reward.judge.dtype, cfg.reward.judge.engine.backend) == (
        True,
        "float32",
        "vllm",
    )


def test_an_openai_judge_off_this_machine_needs_online():
    server = {"backend": "openai", "options": {"base_urls": ["http://judge.example.org:8000/v1"]}}
    remote = {"reward": {"judge": {"model": "judge", "engine": server}}}
    with pytest.raises(ConfigError, match=r"reward\.judge\.engine\.options\.base_urls: host 'judge\.example\.org'"):
        _synth([], remote)
    assert _synth(["online=true"], remote).reward.judge.engine.backend == "openai"


def _synth(overrides, base=None):
    from sftadapt.adapt.mapper import SynthConfig

    return load_config(SynthConfig, None, overrides, base=base)


# ---------------------------------------------------------------- through synthesis
class JudgeEngine(FakeEngine):
    """A scripted judge: INVALID for rewrites that contain `bad`, else VALID; counts its prompts."""

    def __init__(self, bad):
        self.tokenizer, self.bad, self.prompts = ScriptedEngine({}).tokenizer, bad, []

    def generate(self, prompts, params, seeds=None):
        assert params.temperature == 0.0 and params.n == 1  # greedy, one verdict each
        self.prompts.extend(prompts)
        return [[Completion("INVALID" if self.bad in p else "VALID", [1], [-1.0], "stop")] for p in prompts]


def test_synthesis_falls_back_where_the_judge_refuses(tmp_path):
    from sftadapt.adapt.mapper import SynthConfig, synthesize

    # aisha: the cheat (rules) and a faithful rewrite the judge refuses; zoe: a faithful rewrite it accepts
    zoe_own = CHEATS[1][1].replace("Rewrite the solution:", "")
    engine = ScriptedEngine({("mapper", "aisha"): [CHEATS[0][1], OWN[0][1]], ("mapper", "zoe"): [zoe_own, zoe_own]})
    judge = JudgeEngine(bad="17 - 14")
    reward = load_config(RewardConfig, None, None, base={"max_length_ratio": 1e9, "judge": {"model": "scripted"}})
    cfg = SynthConfig(target="scripted", data="unused", out=str(tmp_path / "j"), k=2, reward=reward)
    summary = synthesize(
        cfg,
        engine=engine,
        verifier=BoxedVerifier(),
        judge_engine=judge,
        problems=PROBLEMS,
        progress=False,
        print_summary=False,
    )
    rows = {r.id: r for r in read_records(tmp_path / "j" / "train.jsonl", Example)}
    assert rows["aisha"].origin == "expert" and rows["zoe"].origin == "mapper"
    assert [a["meta"]["gate_reasons"] for a in rows["aisha"].attempts] == [CHEATS[0][2], ["judge_invalid"]]
    assert [a["meta"].get("judge") for a in rows["aisha"].attempts] == [None, "invalid"]
    assert len(judge.prompts) == 3 and all(p.startswith(P.JUDGE.split("{")[0]) for p in judge.prompts)
    assert summary["judge"] == {"model": "scripted", "judged": 3, "valid": 2, "invalid": 1, "unparsed": 0}
    assert summary["gate_failures"]["judge_invalid"] == pytest.approx(1 / 4)
    assert rows["zoe"].provenance["reward"]["judge"]["model"] == "scripted"


def test_a_real_tiny_judge_is_built_once_called_and_closed_by_synthesis(tmp_path, monkeypatch):
    """End to end on a tiny-random judge (hf engine): its verdicts are noise, so only the plumbing is checked."""
    from sftadapt import engines
    from sftadapt.adapt.mapper import SynthConfig, synthesize

    built, closed = [], []
    real_make = engines.make_engine

    def make_engine(model, engine=None, **common):
        got = real_make(model, engine, **common)
        built.append((model, common))
        close = got.close
        got.close = lambda: (closed.append(model), close())
        return got

    monkeypatch.setattr(engines, "make_engine", make_engine)
    engine = ScriptedEngine({("mapper", "aisha"): [OWN[0][1]], ("mapper", "zoe"): [CHEATS[1][1]]})
    judge = {"model": "tiny-random", "dtype": "float32", "max_new_tokens": 2, "batch_size": 2}
    reward = load_config(RewardConfig, None, None, base={"max_length_ratio": 1e9, "judge": judge})
    cfg = SynthConfig(target="scripted", data="unused", out=str(tmp_path / "tiny"), k=1, shard_size=1, reward=reward)
    summary = synthesize(
        cfg, engine=engine, verifier=BoxedVerifier(), problems=PROBLEMS, progress=False, print_summary=False
    )
    assert built == [("tiny-random", {"dtype": "float32", "batch_size": 2})]  # once for the stage's two shards
    assert closed == ["tiny-random"]
    assert summary["judge"]["judged"] == 1  # the faithful aisha rewrite; zoe's cheat stops at the rules
    assert sum(summary["judge"][v] for v in ("valid", "invalid", "unparsed")) == 1
    rows = {r.id: r for r in read_records(tmp_path / "tiny" / "train.jsonl", Example)}
    meta = rows["aisha"].attempts[0]["meta"]
    assert isinstance(meta["judge_reply"], str)
    assert meta["gate_reasons"] in ([], ["judge_invalid"], ["judge_unparsed"])
    assert set(JUDGE_REASONS) <= set(summary["gate_failures"])


def test_mapper_rl_counts_and_logs_the_judges_refusals(tiny_engine, tmp_path):
    """One GRPO step on the tiny model with a judge that refuses everything: the refusals are the step's gate
    failures, and the rollouts it saw are counted with the reward's compute."""
    from test_mapper import OPEN_GATE, AlwaysCorrect
    from test_mapper import PROBLEMS as RL_PROBLEMS

    from sftadapt.adapt.mapper import MapperTrainConfig, train_mapper
    from sftadapt.data.records import write_records
    from sftadapt.rl.grpo import GRPOOptions, read_rl_log

    class No(FakeEngine):
        tokenizer = tiny_engine.tokenizer

        def generate(self, prompts, params, seeds=None):
            return [[Completion("INVALID", [1], [-1.0], "stop")] for _ in prompts]

    write_records(tmp_path / "sft.jsonl", RL_PROBLEMS[1:2])
    reward = RewardConfig(**{**config_dict(OPEN_GATE), "judge": {"model": "scripted"}})
    grpo = GRPOOptions(max_steps=1, num_generations=2, max_completion_length=6, save_steps=10)
    out = tmp_path / "mapper"
    cfg = MapperTrainConfig(
        target="tiny-random", data=str(tmp_path / "sft.jsonl"), out=str(out), grpo=grpo, reward=reward
    )
    train_mapper(cfg, engine=tiny_engine, verifier=AlwaysCorrect(), judge_engine=No(), progress=False)
    (row,) = read_rl_log(out)
    assert row["fail_judge_invalid"] == 1.0 and row["fail_judge_unparsed"] == 0.0 and row["gate_pass_rate"] == 0.0
    assert row["cum_judged"] == row["cum_rollouts"] == 2 and row["cum_scored_tokens"] == 0
