"""DART reward: closed-form pieces, and reward hacking — every cheat is gated with the right reason.

No model: a whitespace tokenizer, the real verifier (in-process, main thread), and a fake target that gives
-0.5 nats to plain words and numbers and -3.0 to anything else (LaTeX), so it prefers plain prose to the terse
expert, the way a small chat model prefers its own style.
"""

import math

import pytest

from sftadapt.adapt.reward import (
    GATE_REASONS,
    AlignmentReward,
    RewardConfig,
    alignment,
    diversity,
    gate_reasons,
    repeated_ngram_fraction,
    score_rollouts,
    summarize_scores,
)
from sftadapt.engines.base import TokenScores
from sftadapt.verify import verify_one

PROBLEM = (
    "Ravi has 20 ribbons. He splits his ribbons into 2 equal groups and keeps one group. Later, Leo gives "
    "him 11 ribbons. How many ribbons does Ravi have in the end?"
)
GOLD = "21"
EXPERT = (
    r"Let $r$ denote the number of ribbons Ravi holds. Initially $r_0 = 20$. Splitting into two equal groups "
    r"and keeping one gives $r_1 = \frac{r_0}{2} = \frac{20}{2} = 10$. Receiving Leo's gift gives "
    r"$r_2 = r_1 + 11 = 10 + 11 = 21$. Hence $r_2 = 21$. \boxed{21}"
)
REWRITE = (
    "Ravi starts with 20 ribbons. He splits them into 2 equal groups and keeps one group, so he has "
    "20 / 2 = 10 ribbons. He gets 11 more from Leo, so he has 10 + 11 = 21 ribbons. So the answer is "
    r"\boxed{21}."
)


def words(text: str) -> list[str]:
    return text.split()


def fake_logprob(word: str) -> float:
    bare = word.strip(".,:;!?'")
    return -0.5 if bare.isalpha() or bare.isdigit() or bare in "/+=" else -3.0


def fake_score(prompts, responses, entropy=False):
    out = []
    for text in responses:
        lps = [fake_logprob(w) for w in words(text)]
        out.append(
            TokenScores(token_ids=list(range(len(lps))), logprobs=lps, entropies=[1.0] * len(lps) if entropy else None)
        )
    return out


def real_verify(golds, texts):
    return [verify_one(g, t) for g, t in zip(golds, texts)]


def make_reward(cfg: RewardConfig | None = None, score=fake_score) -> AlignmentReward:
    return AlignmentReward(
        score=score, verify=real_verify, tokenize=words, qa_prompt=lambda p: f"Q: {p}", cfg=cfg or RewardConfig()
    )


def gate(text: str, reference: str = EXPERT, cfg: RewardConfig | None = None) -> list[str]:
    return make_reward(cfg).evaluate([PROBLEM], [GOLD], [reference], [text])[0].reasons


# ---------------------------------------------------------------- closed forms
def test_repeated_ngram_fraction_closed_form():
    assert repeated_ngram_fraction([1, 2, 3, 4, 5, 6], 4) == 0.0
    # [1,2,3,4] x 3: 9 four-grams, 4 distinct -> 1 - 4/9
    assert repeated_ngram_fraction([1, 2, 3, 4] * 3, 4) == pytest.approx(5 / 9)
    assert repeated_ngram_fraction([1, 2, 3], 4) == 0.0  # no 4-gram at all


def test_alignment_mean_and_centered():
    assert alignment([-1.0, -2.0, -3.0]) == pytest.approx(-2.0)
    assert alignment([-1.0, -2.0, -3.0], [0.5, 1.0, 1.5], "centered") == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="entropy"):
        alignment([-1.0], None, "centered")
    assert alignment([]) == -math.inf


def test_diversity_is_one_minus_mean_similarity_within_groups():
    texts = ["the same text here", "the same text here", "completely different words", "alone"]
    div = diversity(texts, ["a", "a", "a", "b"])
    assert div[3] == 0.0  # a group of one has no others
    assert div[0] == div[1]
    assert 0.0 < div[0] < 1.0  # identical to one of two others: 1 - (1 + small)/2
    assert div[2] > div[0]
    assert diversity(["x y z w", "x y z w"], [0, 0]) == [0.0, 0.0]


def test_config_validation():
    for bad in (
        dict(variant="median"),
        dict(min_length_ratio=3.0),
        dict(max_repeat_frac=1.5),
        dict(diversity_weight=-1.0),
    ):
        with pytest.raises(ValueError):
            RewardConfig(**bad).validate()
    RewardConfig().validate()


# ---------------------------------------------------------------- reward hacking: each cheat gated with its reason
def test_genuine_rewrite_passes_and_beats_the_expert():
    score = make_reward().evaluate([PROBLEM], [GOLD], [EXPERT], [REWRITE])[0]
    assert score.passed and score.reasons == []
    expected = sum(fake_logprob(w) for w in words(REWRITE)) / len(words(REWRITE))
    assert score.r_align == pytest.approx(expected) and score.reward == pytest.approx(expected)
    expert_r_align = alignment(fake_score([""], [EXPERT])[0].logprobs)
    assert score.r_align > expert_r_align
    assert 0.3 <= score.length_ratio <= 2.0


def test_answer_only_output_is_gated_as_too_short():
    reasons = gate(r"\boxed{21}")
    assert "min_tokens" in reasons and "length_low" in reasons
    assert "wrong_answer" not in reasons and "no_answer" not in reasons  # the answer itself is right


def test_changed_answer_is_gated():
    assert gate(REWRITE.replace("10 + 11 = 21", "10 + 12 = 22").replace(r"\boxed{21}", r"\boxed{22}")) == [
        "wrong_answer"
    ]
    assert gate(REWRITE.replace(r"So the answer is \boxed{21}.", "That is all there is to say here.")) == ["no_answer"]


def test_copied_expert_is_gated_as_near_copy():
    assert gate(EXPERT) == ["near_copy"]
    assert gate(EXPERT.replace("Hence", "Thus")) == ["near_copy"]  # a one-word edit is still a copy
    assert "near_copy" not in gate(EXPERT, cfg=RewardConfig(copy_check=False))


def test_repetitive_loop_is_gated():
    loop = "He has 10 ribbons. " * 8 + r"\boxed{21}"
    assert gate(loop) == ["repetition"]


def test_much_shorter_or_longer_output_is_gated_by_length_ratio():
    short = r"Half of 20 is 10, plus 11 is 21. \boxed{21}"
    assert len(words(short)) >= 8
    assert gate(short) == ["length_low"]
    padding = " ".join(f"Check: {i} plus {i + 1} makes {2 * i + 1}." for i in range(20))
    long = REWRITE.replace("So the answer", padding + " So the answer")
    assert len(words(long)) > 2 * len(words(EXPERT))
    assert gate(long) == ["length_high"]


def test_mention_of_the_reference_is_gated():
    assert gate("As the reference solution shows, " + REWRITE) == ["mentions_reference"]
    assert gate("Following the given solution: " + REWRITE) == ["mentions_reference"]
    custom = RewardConfig(reference_phrases=["teacher"])
    assert gate("The teacher says " + REWRITE, cfg=custom) == ["mentions_reference"]


def test_gated_rollouts_get_r_min_and_are_never_scored():
    calls = []

    def counting_score(prompts, responses, entropy=False):
        calls.append(list(responses))
        return fake_score(prompts, responses, entropy)

    reward = make_reward(RewardConfig(r_min=-7.0), score=counting_score)
    scores = reward.evaluate([PROBLEM] * 3, [GOLD] * 3, [EXPERT] * 3, [REWRITE, EXPERT, r"\boxed{21}"])
    assert [s.reward for s in scores[1:]] == [-7.0, -7.0]
    assert [s.r_align for s in scores[1:]] == [None, None]
    assert calls == [[REWRITE]]  # only the passing rollout went through the target
    assert reward.counters.scored_tokens == len(words(REWRITE))


# ---------------------------------------------------------------- the TRL-shaped call
def test_trl_call_returns_rewards_logs_metrics_and_counts():
    logged: dict[str, float] = {}
    extra: dict[str, list] = {}
    cfg = RewardConfig(variant="centered")
    reward = make_reward(cfg)
    completions = [REWRITE, EXPERT, r"\boxed{21}", REWRITE.replace("So the answer", "Yes. So the answer")]
    rewards = reward(
        completions,
        problem=[PROBLEM] * 4,
        answer=[GOLD] * 4,
        solution=[EXPERT] * 4,
        prompts=["p"] * 4,
        completion_ids=[[0] * 5] * 4,
        log_metric=logged.__setitem__,
        log_extra=extra.__setitem__,
        trainer_state=None,
    )
    # centered: mean(logp + H) with H = 1 per token
    expected = sum(fake_logprob(w) + 1.0 for w in words(REWRITE)) / len(words(REWRITE))
    assert rewards[0] == pytest.approx(expected)
    assert rewards[1] == rewards[2] == -10.0
    assert logged["gate_pass_rate"] == 0.5
    assert logged["fail_near_copy"] == 0.25 and logged["fail_min_tokens"] == 0.25
    assert logged["r_align_pass_mean"] == pytest.approx((rewards[0] + rewards[3]) / 2)
    assert set(f"fail_{r}" for r in GATE_REASONS) <= set(logged)
    assert extra["gate"][0] == "pass" and "near_copy" in extra["gate"][1]
    assert reward.counters.rollouts == 4 and reward.counters.rollout_tokens == 20 and reward.counters.calls == 1


def test_diversity_term_is_added_to_passing_rollouts_only():
    cfg = RewardConfig(diversity_weight=0.5)
    texts = [REWRITE, REWRITE, EXPERT]
    scores = score_rollouts(
        texts,
        [words(t) for t in texts],
        [EXPERT] * 3,
        [len(words(EXPERT))] * 3,
        ["correct"] * 3,
        fake_score([""] * 3, texts),
        cfg,
        groups=[0, 0, 0],
    )
    sims = diversity(texts, [0, 0, 0])
    assert scores[0].reward == pytest.approx(scores[0].r_align + 0.5 * sims[0])
    assert scores[2].reward == cfg.r_min  # the copy is gated: no diversity bonus
    stats = summarize_scores(scores)
    assert stats["gate_pass_rate"] == pytest.approx(2 / 3)


def test_gate_reasons_are_all_counted_when_several_fail():
    reasons = gate_reasons("x", ["x"], EXPERT, 50, "no_answer", RewardConfig())
    assert reasons == ["no_answer", "min_tokens", "length_low", "no_reasoning"]  # "x" shows none of EXPERT's work
    assert gate_reasons("x", ["x"], EXPERT, 50, "timeout", RewardConfig())[0] == "unverified"


def test_answer_outside_boxed_counts_as_missing_unless_any_format():
    plain = REWRITE.replace(r"So the answer is \boxed{21}.", "So Ravi has 21 ribbons in the end.")
    assert gate(plain) == ["no_answer"]  # the verifier finds 21 by its last-number rule, not in \boxed{}
    assert gate(plain, cfg=RewardConfig(answer_format="any")) == []


# ---------------------------------------------------------------- truncated rollouts
def test_a_rewrite_cut_by_the_token_limit_is_gated_as_truncated_even_with_a_correct_answer():
    scores = make_reward().evaluate(
        [PROBLEM] * 2, [GOLD] * 2, [EXPERT] * 2, [REWRITE, REWRITE], truncated=[True, False]
    )
    assert scores[0].reasons == ["truncated"] and scores[0].reward == -10.0 and scores[0].r_align is None
    assert scores[1].passed


def test_trl_call_gates_rollouts_whose_last_id_is_not_an_end_token():
    logged: dict[str, float] = {}
    reward = make_reward()
    reward.stop_ids = frozenset({0})  # 0 = the end token of this fake vocabulary
    completions = [REWRITE] * 3
    rewards = reward(
        completions,
        problem=[PROBLEM] * 3,
        answer=[GOLD] * 3,
        solution=[EXPERT] * 3,
        prompts=["p"] * 3,
        completion_ids=[[5, 6, 0], [5, 6, 7], [5, 0, 7]],
        log_metric=logged.__setitem__,
    )
    assert rewards[0] > -10.0 and rewards[1] == rewards[2] == -10.0
    assert logged["fail_truncated"] == pytest.approx(2 / 3)
    # without stop ids (a caller that cannot tell) nothing is called truncated
    assert (
        make_reward()(
            completions, problem=[PROBLEM] * 3, answer=[GOLD] * 3, solution=[EXPERT] * 3, completion_ids=[[5, 6, 7]] * 3
        )[0]
        > -10.0
    )


# ---------------------------------------------------------------- the Patch reward (arXiv 2602.11220): closed forms
def test_patch_r_dist_is_the_sigmoid_of_the_negated_group_z_score():
    from sftadapt.adapt.reward import patch_dist

    z = 1 / math.sqrt(2 / 3)  # NLL 1, 2, 3: mean 2, population sd sqrt(2/3)
    assert patch_dist([1.0, 2.0, 3.0]) == pytest.approx([1 / (1 + math.exp(-z)), 0.5, 1 / (1 + math.exp(z))], abs=1e-6)
    assert patch_dist([2.5]) == [0.5]  # a group of one passing rollout: z = 0
    assert patch_dist([1.0, 1.0]) == [0.5, 0.5]  # no spread: no preference


def test_patch_r_div_is_the_leave_one_out_contribution_to_mean_pairwise_cosine_distance():
    from sftadapt.adapt.reward import patch_div

    # unit vectors at 0°, 90°, 180°: distances (1 - cos)/2 = 0.5, 1, 0.5, so D = 2/3; without the middle one the
    # set is the two opposite vectors (D = 1, a negative contribution clipped to 0), without either end D = 0.5
    assert patch_div([[1, 0], [0, 1], [-1, 0]]) == pytest.approx([1 / 6, 0.0, 1 / 6])
    assert patch_div([[1, 0], [3, 0]]) == pytest.approx([0.0, 0.0])  # same direction: scale does not matter
    assert patch_div([[1, 0]]) == [0.0]


def _patch_scores(texts, nll, hidden, groups, passed_texts=None, cfg=None):
    # "bad" stands for a wrong rollout: only its answer is gated (its one word shows no work either)
    cfg = cfg or RewardConfig(
        kind="patch", answer_format="any", min_length_ratio=0.0, max_length_ratio=100.0, reasoning_check=False
    )
    target = [TokenScores(token_ids=[0, 1], logprobs=[-x, -x], hidden=h) for x, h in zip(nll, hidden)]
    verdicts = ["correct" if t != "bad" else "wrong" for t in texts]
    return score_rollouts(
        [REWRITE if t != "bad" else "bad" for t in texts],
        [words(REWRITE)] * len(texts),
        [EXPERT] * len(texts),
        [len(words(EXPERT))] * len(texts),
        verdicts,
        target,
        cfg,
        groups=groups,
    )


def test_patch_reward_on_a_hand_made_group():
    # group a: three passing rollouts and one wrong answer; group b: one passing rollout on its own
    texts = ["ok", "ok", "ok", "bad", "ok"]
    nll = [1.0, 2.0, 3.0, 0.1, 0.7]
    hidden = [[1, 0], [0, 1], [-1, 0], [5, 5], [0, 1]]
    scores = _patch_scores(texts, nll, hidden, ["a", "a", "a", "a", "b"])
    z = 1 / math.sqrt(2 / 3)
    r_dist = [1 / (1 + math.exp(-z)), 0.5, 1 / (1 + math.exp(z))]
    r_div = [1 / 6, 0.0, 1 / 6]
    for i in range(3):
        assert scores[i].reward == pytest.approx(1 + 0.35 * r_dist[i] + 0.5 * r_div[i], abs=1e-6)
        assert scores[i].r_dist == pytest.approx(r_dist[i], abs=1e-6) and scores[i].r_div == pytest.approx(r_div[i])
    # the gated rollout: r_task = 0, so 0 whatever its NLL and embedding, and it is not part of the group terms
    assert scores[3].reward == 0.0 and scores[3].r_dist is None and scores[3].reasons == ["wrong_answer"]
    # alone in its group: z = 0 (r_dist = 1/2) and no diversity
    assert scores[4].reward == pytest.approx(1 + 0.35 * 0.5) and scores[4].r_div == 0.0
    assert scores[0].record()["r_dist"] == pytest.approx(r_dist[0], abs=1e-6)
    stats = summarize_scores(scores)
    assert stats["r_dist_pass_mean"] == pytest.approx((sum(r_dist) + 0.5) / 4, abs=1e-6)


def test_patch_weights_and_missing_hidden_states():
    cfg = RewardConfig(
        kind="patch", answer_format="any", min_length_ratio=0.0, max_length_ratio=100.0, dist_weight=1.0, div_weight=0.0
    )
    scores = _patch_scores(["ok", "ok"], [1.0, 3.0], [None, None], [0, 0], cfg=cfg)  # no diversity: no states
    assert scores[0].reward == pytest.approx(1 + 1 / (1 + math.exp(-1.0)), abs=1e-6)
    with pytest.raises(ValueError, match="hidden states"):
        _patch_scores(["ok", "ok"], [1.0, 3.0], [None, None], [0, 0])
    with pytest.raises(ValueError, match="kind"):
        RewardConfig(kind="other").validate()


def test_the_patch_reward_asks_the_target_for_hidden_states_only_when_it_needs_them():
    asked = []

    def score(prompts, responses, entropy=False, hidden=False):
        asked.append(hidden)
        return [TokenScores(token_ids=[0], logprobs=[-1.0], hidden=[1.0, float(k)]) for k in range(len(responses))]

    patch = make_reward(RewardConfig(kind="patch"), score=score)
    patch.evaluate([PROBLEM] * 2, [GOLD] * 2, [EXPERT] * 2, [REWRITE, REWRITE], groups=[0, 0])
    make_reward(score=score).evaluate([PROBLEM], [GOLD], [EXPERT], [REWRITE])
    assert asked == [True, False]
