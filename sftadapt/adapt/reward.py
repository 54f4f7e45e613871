"""DART's reward for the mapper (docs/methods.md): distribution alignment with the target, behind an anti-cheating gate.

For a rewrite ŷ of the expert solution y of problem x:

    reward(ŷ) = r_min                                       if the gate rejects ŷ
              = r_align(ŷ) + diversity_weight · div(ŷ)       otherwise

- `r_align` (variant `mean`) = mean over ŷ's tokens of log p_target(ŷ_t | QA prompt of x, ŷ_<t): the FROZEN target
  model scores ŷ as if it had answered the plain solve prompt itself. This is the gap metric of every other stage.
  Variant `centered` = mean of (log p_t + H_t), H_t the entropy of the target's next-token distribution at t:
  a repetitive, low-entropy text gets no bonus for being predictable where the target itself is sure.
- The gate (each reason counted separately; a rollout may fail several) rejects ŷ when:
  `no_answer` / `wrong_answer` / `unverified` — the final answer is missing, not equivalent to the gold answer, or
  could not be checked (verifier timeout/error: never a pass, never "wrong"); with `answer_format=boxed_strict`
  (default, ours) an answer found by any extraction rule but `\boxed{}` counts as missing, because the
  synthesised text becomes training data and must end in the evaluation format (the mapper prompt asks for it);
  `min_tokens` — fewer than `min_tokens` tokens (an answer-only output);
  `length_low` / `length_high` — |ŷ|/|y| (tokens, target tokenizer) outside [min_length_ratio, max_length_ratio];
  `repetition` — repeated token 4-grams are more than `max_repeat_frac` of all 4-grams (a loop);
  `near_copy` — character 5-gram Jaccard similarity to y ≥ `copy_jaccard` (the expert text handed back);
  `mentions_reference` — it names the reference ("reference solution", "the given solution", ...), text that
  would leak the mapping context into the training data;
  `meta_text` — it talks about the task instead of solving the problem: it shares a word 6-gram with the
  instruction text of a mapping prompt (data/prompts.py's MAPPER and GUIDED, read from the templates themselves),
  or talks of rewriting ("Rewrite the solution:", "in your own words", "as requested"; policy.META_PATTERNS),
  unless the problem or y says so too (`meta_check`);
  `no_reasoning` — an answer-only filler: outside its `\boxed{}` ŷ shows fewer than `min_reasoning_frac` (½)
  as many computations ("13 + 19 = 32") as y (at least one where y shows any) and fewer than that fraction of
  y's intermediate results (numbers after an "=" of y that are in neither x nor the answer). Either suffices, so a
  wordy derivation passes, and so does the target's own style with a slip the right answer hides; the bar never
  exceeds what y itself shows (`reasoning_check`; policy.missing_reasoning says why this rule);
  `truncated` — generation stopped at the token limit instead of an end token: the text is cut, whatever the answer
  it may already hold (the rewrite stage refuses such responses too, `keep_truncated=False`). In synthesis the
  engine says so (`finish_reason == "length"`); under TRL a rollout is cut when its last id is neither an end token
  nor pad, TRL's own test for `completions/clipped_ratio` (`stop_ids`, set by `run_grpo` from the trainer).
- The reasoning judge (optional, off by default; `reward.judge`): a judge model on any engine that is shown each
  rollout the rules above pass and fails those it does not call VALID (`judge_invalid`, `judge_unparsed`);
  adapt/judge.py says how.
- `div(ŷ)` = 1 − mean character 5-gram Jaccard similarity to the other rollouts of its group (same prompt);
  off by default (weight 0).

`kind: patch` is the reward of "Patch the Distribution Mismatch" (arXiv 2602.11220) instead, on the same gate:

    reward(ŷ) = r_task · (1 + dist_weight · r_dist(ŷ) + div_weight · r_div(ŷ))     (0 when the gate rejects ŷ)

- `r_task` = 1 if ŷ passes the gate, else 0 (the paper's answer check and reasoning judge; ours: the gate above,
  its rules standing in for the judge unless `reward.judge` sets one);
- `r_dist` = sigmoid(−z), z = (ℓ − μ)/σ with ℓ = −r_align(ŷ) the length-normalised NLL under the frozen target
  and μ, σ the mean and population sd of ℓ over the group's gate-passing rollouts (a group of one passing
  rollout gets z = 0, r_dist = ½): closer to the target than its siblings → more than ½;
- `r_div` = ŷ's leave-one-out contribution to the group's diversity D(S) = mean over pairs of S (the passing
  rollouts) of (1 − cos(e_i, e_j))/2, e the scoring model's last hidden state mean-pooled over the response:
  r_div = max(0, D(S) − D(S∖ŷ)); 0 with fewer than two passing rollouts;
- dist_weight 0.35 and div_weight 0.5 are the paper's. Ours: e is pooled from the same forward pass that scores
  ŷ (after the solve prompt, response tokens only), where the paper embeds ŷ alone in a separate pass.
The group terms need the whole group at once: under TRL a group is the rollouts that share a prompt string in
one reward call (each prompt's `num_generations` rollouts arrive together: grpo.py keeps a group in one
generation batch), in synthesis the k rewrites of one problem.

Everything here is pure: `gate_reasons`, `alignment`, `diversity` and `score_rollouts` take texts, token ids,
verdicts and target scores and return numbers. `AlignmentReward` is the TRL/open-r1 shaped callable
(`f(completions, **columns) -> list[float]`) that gets verdicts and target scores from injected functions (a
`Verifier` and `Engine.score` in production, fakes in tests), so it does no I/O of its own. Only rollouts that
pass the gate are scored by the target: a gated rollout's reward is r_min whatever the target thinks of it.

Under GRPO the advantage of a rollout is its reward minus the mean of its group (divided by the group std with
`scale_rewards="group"`), so any per-prompt offset — e.g. using r_align(ŷ) − r_align(y) instead of r_align(ŷ) —
cancels within a group; only differences between rewrites of the same problem teach the mapper. The fixed r_min,
on the other hand, is not an offset: how far below the group's passing rewards it sits sets how strongly failing
the gate is punished relative to alignment differences.

The near-copy similarity, the reference-mention and the meta-text checks are the rewrite stage's
(sftadapt/adapt/policy.py), so both methods mean the same thing by "copy", "mention" and "meta text"; the rewrite
stage refuses meta text in its guided and prompted-rewrite responses with the same detector.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sftadapt.adapt.judge import JUDGE_REASONS, JudgeConfig, judge_gate, judge_verdict

# The rewrite stage's near-copy, reference-mention and meta-text checks (whitespace collapsed, case folded): one
# definition of "copy", "mention" and "meta text" for both methods.
from sftadapt.adapt.policy import (
    MIN_REASONING_FRAC,
    char_ngrams,
    meta_text,
    missing_reasoning,
    ngram_jaccard,
    reference_mention,
)
from sftadapt.config import option

GATE_REASONS = (
    "no_answer",
    "wrong_answer",
    "unverified",
    "min_tokens",
    "length_low",
    "length_high",
    "repetition",
    "near_copy",
    "mentions_reference",
    "meta_text",
    "no_reasoning",
    "truncated",
)
VARIANTS = ("mean", "centered")
KINDS = ("alignment", "patch")
GATE_ANSWER_FORMATS = ("boxed_strict", "any")
# the two phrases of our reconstruction (docs/methods.md), then (ours) the MAPPER prompt's own words for the text it rewrites.
REFERENCE_PHRASES = [
    "reference solution",
    "the given solution",
    "the solution below",
    "the original solution",
    "rewritten solution",
]


@dataclass
class RewardConfig:
    kind: str = option(
        "alignment",
        help="alignment (DART: r_align behind the gate, r_min when gated) | patch "
        "(arXiv 2602.11220: gate x (1 + dist_weight r_dist + div_weight r_div))",
    )
    dist_weight: float = option(0.35, help="patch: weight of r_dist (the group z-scored target NLL)")
    div_weight: float = option(0.5, help="patch: weight of r_div (leave-one-out hidden-state diversity)")
    variant: str = option(
        "mean",
        help="r_align: mean (mean token log-prob under the target) | centered "
        "(mean of log-prob + entropy of the target's next-token distribution)",
    )
    r_min: float = option(-10.0, help="reward of a rollout the anti-cheating gate rejects")
    answer_format: str = option(
        "boxed_strict",
        help="boxed_strict: the final answer must be in \\boxed{} | any: whatever rule the verifier's extraction used",
    )
    min_tokens: int = option(8, help="gate: fewer response tokens than this fail (answer-only outputs)")
    min_length_ratio: float = option(0.3, help="gate: |rewrite|/|expert| in tokens below this fails")
    max_length_ratio: float = option(2.0, help="gate: |rewrite|/|expert| in tokens above this fails")
    repeat_ngram: int = option(4, help="gate: token n-gram size of the repetition check")
    max_repeat_frac: float = option(0.2, help="gate: fail when repeated n-grams exceed this fraction of all n-grams")
    copy_check: bool = option(True, help="gate: reject near-copies of the expert solution")
    copy_ngram: int = option(5, help="gate: character n-gram size of the near-copy similarity")
    copy_jaccard: float = option(0.9, help="gate: near-copy when the n-gram Jaccard similarity reaches this")
    truncation_check: bool = option(True, help="gate: reject rewrites cut by the token limit (no end token)")
    reference_phrases: list[str] = option(
        REFERENCE_PHRASES, help="gate: case-insensitive phrases that name the reference (the mapping context) and fail"
    )
    meta_check: bool = option(
        True,
        help="gate: reject meta text, a rewrite that echoes a mapping prompt's instruction (a shared word "
        "6-gram) or talks of rewriting ('Rewrite the solution:', 'in your own words')",
    )
    reasoning_check: bool = option(True, help="gate: reject answer-only fillers (see min_reasoning_frac)")
    min_reasoning_frac: float = option(
        MIN_REASONING_FRAC,
        help="gate: a rewrite must show at least this fraction of the expert's computations (at least one) or "
        "of its intermediate results outside \\boxed{}",
    )
    diversity_weight: float = option(
        0.0,
        help="weight of 1 - mean similarity to the group's other rollouts (added to passing rollouts only; 0 = off)",
    )
    judge: JudgeConfig = field(
        default_factory=JudgeConfig,
        metadata={"help": "the optional reasoning judge behind the gate (off while judge.model is unset)"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.judge, dict):  # RewardConfig(**config_dict(cfg)): the block comes back as a dict
            self.judge = JudgeConfig(**self.judge)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind = '{self.kind}': choose one of {', '.join(KINDS)}")
        if not (self.dist_weight >= 0 and self.div_weight >= 0):
            raise ValueError(f"dist_weight = {self.dist_weight}, div_weight = {self.div_weight}: must be >= 0")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant = '{self.variant}': choose one of {', '.join(VARIANTS)}")
        if self.answer_format not in GATE_ANSWER_FORMATS:
            raise ValueError(f"answer_format = '{self.answer_format}': choose one of {', '.join(GATE_ANSWER_FORMATS)}")
        if not 0 <= self.min_length_ratio <= self.max_length_ratio:
            raise ValueError(
                f"length ratio bounds [{self.min_length_ratio}, {self.max_length_ratio}]: "
                "need 0 <= min_length_ratio <= max_length_ratio"
            )
        if self.repeat_ngram < 1 or self.copy_ngram < 1:
            raise ValueError("repeat_ngram and copy_ngram must be >= 1")
        if not all(0 <= x <= 1 for x in (self.max_repeat_frac, self.copy_jaccard, self.min_reasoning_frac)):
            raise ValueError("max_repeat_frac, copy_jaccard and min_reasoning_frac are fractions in [0, 1]")
        if self.diversity_weight < 0:
            raise ValueError(f"diversity_weight = {self.diversity_weight}: must be >= 0")
        self.judge.validate()


def reason_names(judged: bool) -> tuple[str, ...]:
    """The gate reasons a run counts: the rules', and the judge's where a judge is on."""
    return GATE_REASONS + (JUDGE_REASONS if judged else ())


def reward_record(cfg: RewardConfig) -> dict[str, Any]:
    """The reward options as provenance keeps them: an off judge left out, so a row or an RL config written
    without a judge reads as before the judge existed (the run hashes leave it out too: config.py)."""
    data = dataclasses.asdict(cfg)
    if not cfg.judge.on:
        data.pop("judge")
    return data


# ---------------------------------------------------------------- text helpers (pure)
def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def repeated_ngram_fraction(tokens: Sequence[Any], n: int = 4) -> float:
    """1 − distinct/total over the token n-grams: 0 when no n-gram repeats, → 1 for a loop."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


# ---------------------------------------------------------------- gate, alignment, diversity (pure)
def answer_verdict(verdict: str, rule: str | None, answer_format: str) -> str:
    """The verdict the gate uses: under `boxed_strict` an answer not extracted from `\\boxed{}` is `no_answer`
    (the same rule as the evaluation protocol's `boxed_strict`); `rule=None` means "not known", no check."""
    if answer_format == "boxed_strict" and rule is not None and verdict in ("correct", "wrong") and rule != "boxed":
        return "no_answer"
    return verdict


def gate_reasons(
    text: str,
    tokens: Sequence[int],
    reference: str,
    reference_tokens: int,
    verdict: str,
    cfg: RewardConfig,
    rule: str | None = None,
    truncated: bool = False,
    problem: str = "",
    answer: str | None = None,
) -> list[str]:
    """Every gate rule `text` fails (empty = it passes). `tokens`: its token ids under the target tokenizer
    (no end token); `reference_tokens`: the expert solution's token count; `verdict`/`rule`: the verifier's
    verdict and the extraction rule that found the answer; `truncated`: generation hit its token limit;
    `problem`/`answer`: the problem and its gold answer (what the meta-text and reasoning checks leave out;
    answer None: the expert's last \\boxed{})."""
    reasons = []
    verdict = answer_verdict(verdict, rule, cfg.answer_format)
    if verdict != "correct":
        reasons.append({"no_answer": "no_answer", "wrong": "wrong_answer"}.get(verdict, "unverified"))
    if len(tokens) < cfg.min_tokens:
        reasons.append("min_tokens")
    ratio = length_ratio(len(tokens), reference_tokens)
    if ratio < cfg.min_length_ratio:
        reasons.append("length_low")
    if ratio > cfg.max_length_ratio:
        reasons.append("length_high")
    if repeated_ngram_fraction(tokens, cfg.repeat_ngram) > cfg.max_repeat_frac:
        reasons.append("repetition")
    if cfg.copy_check and ngram_jaccard(text, reference, cfg.copy_ngram) >= cfg.copy_jaccard:
        reasons.append("near_copy")
    if reference_mention(text, cfg.reference_phrases):
        reasons.append("mentions_reference")
    reasons += content_reasons(text, problem, reference, answer, cfg)
    if truncated and cfg.truncation_check:
        reasons.append("truncated")
    return reasons


def content_reasons(text: str, problem: str, reference: str, answer: str | None, cfg: RewardConfig) -> list[str]:
    """The gate's `meta_text` and `no_reasoning` rules alone (what `text` says, no tokens or verdicts needed):
    `gate_reasons` applies them, and benchmarks/count_meta_text.py counts an existing set's rows with them."""
    reasons = []
    if cfg.meta_check and meta_text(text, (problem, reference)) is not None:
        reasons.append("meta_text")
    if cfg.reasoning_check and missing_reasoning(text, problem, reference, answer, cfg.min_reasoning_frac):
        reasons.append("no_reasoning")
    return reasons


def length_ratio(n_tokens: int, reference_tokens: int) -> float:
    return n_tokens / reference_tokens if reference_tokens > 0 else math.inf


def alignment(logprobs: Sequence[float], entropies: Sequence[float] | None = None, variant: str = "mean") -> float:
    """r_align: mean token log-prob (`mean`) or mean of log-prob + entropy (`centered`)."""
    if not logprobs:
        return -math.inf
    if variant == "mean":
        return sum(logprobs) / len(logprobs)
    if variant == "centered":
        if entropies is None or len(entropies) != len(logprobs):
            raise ValueError("the centered variant needs one entropy per token (score with entropy=True)")
        return sum(lp + h for lp, h in zip(logprobs, entropies)) / len(logprobs)
    raise ValueError(f"unknown r_align variant '{variant}': choose one of {', '.join(VARIANTS)}")


def diversity(texts: Sequence[str], groups: Sequence[Any], n: int = 5) -> list[float]:
    """1 − mean n-gram Jaccard similarity of each text to the other texts of its group (0 for a group of one)."""
    grams = [char_ngrams(t, n) for t in texts]
    out = []
    for i, key in enumerate(groups):
        others = [j for j, k in enumerate(groups) if k == key and j != i]
        out.append(1.0 - sum(jaccard(grams[i], grams[j]) for j in others) / len(others) if others else 0.0)
    return out


def patch_dist(nll: Sequence[float], eps: float = 1e-6) -> list[float]:
    """Patch's r_dist for one group's gate-passing rollouts: sigmoid(−z) of each NLL z-scored within the group
    (population sd; a single rollout gets ½). Lower NLL than the group → above ½."""
    if not nll:
        return []
    mu = sum(nll) / len(nll)
    sigma = math.sqrt(sum((x - mu) ** 2 for x in nll) / len(nll)) if len(nll) > 1 else 1.0
    return [1.0 / (1.0 + math.exp((x - mu) / (sigma + eps))) for x in nll]


def _pair_distance(embeddings: Sequence[Sequence[float]]):
    import numpy as np

    e = np.asarray(embeddings, dtype=float)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return (1.0 - e @ e.T) / 2.0


def set_diversity(distance, members: Sequence[int]) -> float:
    """Mean pairwise distance over `members` (0 for fewer than two)."""
    pairs = [(a, b) for k, a in enumerate(members) for b in members[k + 1 :]]
    return sum(float(distance[a][b]) for a, b in pairs) / len(pairs) if pairs else 0.0


def patch_div(embeddings: Sequence[Sequence[float]]) -> list[float]:
    """Patch's r_div for one group's gate-passing rollouts: max(0, D(S) − D(S without i)), D the mean pairwise
    cosine distance (1 − cos)/2 of the embeddings."""
    m = len(embeddings)
    if m < 2:
        return [0.0] * m
    dist = _pair_distance(embeddings)
    full = set_diversity(dist, list(range(m)))
    return [max(0.0, full - set_diversity(dist, [j for j in range(m) if j != i])) for i in range(m)]


def patch_rewards(
    passed: Sequence[bool],
    nll: Sequence[float | None],
    embeddings: Sequence[Any],
    groups: Sequence[Any],
    cfg: RewardConfig,
) -> list[tuple[float, float | None, float | None]]:
    """(reward, r_dist, r_div) per rollout under `kind: patch`; the group terms over each group's passing
    rollouts only. A gated rollout gets (0, None, None)."""
    out: list[tuple[float, float | None, float | None]] = [(0.0, None, None)] * len(passed)
    for key in dict.fromkeys(groups):
        members = [i for i, g in enumerate(groups) if g == key and passed[i]]
        if not members:
            continue
        dist = patch_dist([nll[i] for i in members])
        if cfg.div_weight > 0 and any(embeddings[i] is None for i in members):
            raise ValueError(
                "the patch reward's diversity needs the scoring model's hidden states "
                "(score with hidden=True, engine backend hf)"
            )
        div = patch_div([embeddings[i] for i in members]) if cfg.div_weight > 0 else [0.0] * len(members)
        for i, d, v in zip(members, dist, div):
            out[i] = (1.0 + cfg.dist_weight * d + cfg.div_weight * v, d, v)
    return out


@dataclass
class RolloutScore:
    """Everything the reward decided about one rollout."""

    reward: float
    passed: bool
    reasons: list[str]
    n_tokens: int
    length_ratio: float
    verdict: str
    r_align: float | None = None  # only computed for rollouts that pass the gate
    diversity: float | None = None
    target_logprobs: list[float] | None = None  # per token of the response (end token included)
    r_dist: float | None = None  # kind patch, passing rollouts only
    r_div: float | None = None
    judge_reply: str | None = None  # the reasoning judge's reply, where it was asked

    def record(self) -> dict[str, Any]:
        """The JSON-able summary kept with an attempt (no per-token lists)."""
        ratio = self.length_ratio if math.isfinite(self.length_ratio) else None
        out = {
            "passed": self.passed,
            "gate_reasons": self.reasons,
            "reward": self.reward,
            "r_align": self.r_align,
            "n_tokens": self.n_tokens,
            "length_ratio": ratio,
            "diversity": self.diversity,
        }
        if self.r_dist is not None:
            out.update(r_dist=self.r_dist, r_div=self.r_div)
        if self.judge_reply is not None:
            out.update(judge=judge_verdict(self.judge_reply), judge_reply=self.judge_reply)
        return out


def rollout_gate(
    texts: Sequence[str],
    tokens: Sequence[Sequence[int]],
    references: Sequence[str],
    reference_tokens: Sequence[int],
    verdicts: Sequence[str],
    cfg: RewardConfig,
    rules: Sequence[str | None],
    truncated: Sequence[bool],
    problems: Sequence[str] | None = None,
    golds: Sequence[str | None] | None = None,
    judge: Callable[[list[str], list[str], list[str]], list[str]] | None = None,
) -> list[list[str]]:
    """`gate_reasons` of every rollout of a batch (an empty list: it passes); with a `judge`, the rollouts the
    rules pass are shown to it too (`judge_gate`)."""
    problems = problems if problems is not None else [""] * len(texts)
    golds = golds if golds is not None else [None] * len(texts)
    reasons = [
        gate_reasons(t, tok, ref, n_ref, v, cfg, rule, c, x, a)
        for t, tok, ref, n_ref, v, rule, c, x, a in zip(
            texts, tokens, references, reference_tokens, verdicts, rules, truncated, problems, golds
        )
    ]
    if judge is not None:
        judge_gate(judge, reasons, texts, problems, golds)
    return reasons


def score_rollouts(
    texts: Sequence[str],
    tokens: Sequence[Sequence[int]],
    references: Sequence[str],
    reference_tokens: Sequence[int],
    verdicts: Sequence[str],
    target_scores: Sequence[Any],
    cfg: RewardConfig,
    groups: Sequence[Any] | None = None,
    rules: Sequence[str | None] | None = None,
    truncated: Sequence[bool] | None = None,
    reasons: Sequence[list[str]] | None = None,
    problems: Sequence[str] | None = None,
    golds: Sequence[str | None] | None = None,
    judge_replies: Sequence[str | None] | None = None,
    judge: Callable[[list[str], list[str], list[str]], list[str]] | None = None,
) -> list[RolloutScore]:
    """Rewards of a batch of rollouts. `target_scores[i]` is the target's `TokenScores` of text i (needed, and
    only read, for rollouts that pass the gate; None elsewhere); `groups[i]` names the group for diversity;
    `rules[i]` is the extraction rule behind verdict i (None: unknown); `truncated[i]`: text i was cut by the
    token limit (None: none was); `reasons[i]`: text i's gate reasons when the caller has gated already;
    `problems[i]`/`golds[i]`: text i's problem and gold answer, for the meta-text and reasoning checks;
    `judge_replies[i]`: the reasoning judge's reply to text i where it was asked (`judge_gate`, whose reasons are
    in `reasons` then), kept with its score; `judge`: gate with this judge too (only when `reasons` is None)."""
    if reasons is None:
        rules = rules if rules is not None else [None] * len(texts)
        cut = truncated if truncated is not None else [False] * len(texts)
        reasons = rollout_gate(texts, tokens, references, reference_tokens, verdicts, cfg, rules, cut, problems, golds)
        if judge is not None:
            judge_replies = judge_gate(
                judge, reasons, texts, problems or [""] * len(texts), golds or [None] * len(texts)
            )
    div = (
        diversity(texts, groups if groups is not None else [0] * len(texts), cfg.copy_ngram)
        if cfg.diversity_weight > 0
        else [None] * len(texts)
    )
    out = []
    for i in range(len(texts)):
        ratio = length_ratio(len(tokens[i]), reference_tokens[i])
        score = RolloutScore(
            reward=cfg.r_min,
            passed=not reasons[i],
            reasons=reasons[i],
            n_tokens=len(tokens[i]),
            length_ratio=ratio,
            verdict=verdicts[i],
            diversity=div[i],
            judge_reply=judge_replies[i] if judge_replies is not None else None,
        )
        if score.passed:
            ts = target_scores[i]
            if ts is None:
                raise ValueError(f"rollout {i} passed the gate but has no target scores")
            score.r_align = alignment(ts.logprobs, ts.entropies, cfg.variant)
            score.target_logprobs = list(ts.logprobs)
            score.reward = score.r_align + cfg.diversity_weight * (div[i] or 0.0)
        out.append(score)
    if cfg.kind == "patch":
        # ℓ = −mean log-prob (the centered variant's entropy term is not part of Patch's NLL)
        nll = [-alignment(s.target_logprobs) if s.passed else None for s in out]
        hidden = [getattr(target_scores[i], "hidden", None) if out[i].passed else None for i in range(len(out))]
        for s, (reward, r_dist, r_div) in zip(
            out,
            patch_rewards([s.passed for s in out], nll, hidden, groups if groups is not None else [0] * len(out), cfg),
        ):
            s.reward, s.r_dist, s.r_div = reward, r_dist, r_div
    return out


def summarize_scores(scores: Sequence[RolloutScore], reasons: Sequence[str] = GATE_REASONS) -> dict[str, float | None]:
    """Per-batch statistics logged every step: pass rate, the rate of each failure reason of `reasons`
    (`reason_names`), mean r_align of passing rollouts (None if none passed), mean length ratio (finite ratios
    only)."""
    n = len(scores)
    passing = [s.r_align for s in scores if s.passed and s.r_align is not None]
    ratios = [s.length_ratio for s in scores if math.isfinite(s.length_ratio)]
    dists = [s.r_dist for s in scores if s.r_dist is not None]
    divs = [s.r_div for s in scores if s.r_div is not None]
    stats: dict[str, float | None] = {
        "gate_pass_rate": sum(s.passed for s in scores) / n if n else None,
        "r_dist_pass_mean": sum(dists) / len(dists) if dists else None,  # kind patch
        "r_div_pass_mean": sum(divs) / len(divs) if divs else None,
        "r_align_pass_mean": sum(passing) / len(passing) if passing else None,
        "length_ratio_mean": sum(ratios) / len(ratios) if ratios else None,
        "reward_mean": sum(s.reward for s in scores) / n if n else None,
    }
    for reason in reasons:
        stats[f"fail_{reason}"] = sum(reason in s.reasons for s in scores) / n if n else None
    return stats


# ---------------------------------------------------------------- the TRL reward function
@dataclass
class RewardCounters:
    """Compute spent inside the reward: rollouts seen, their tokens, target tokens scored and the seconds the
    target spent scoring them, verifier calls, and with a reasoning judge the rollouts it was shown and its
    seconds (None without one: then they are not logged at all). Cumulative: rl_log.jsonl carries them as `cum_*`
    and a resumed run restarts them from its last kept row (rl/grpo.py)."""

    calls: int = 0
    rollouts: int = 0
    rollout_tokens: int = 0  # generated by the policy (the reward sees every rollout once)
    scored_tokens: int = 0  # teacher-forced through the target (passing rollouts only)
    score_seconds: float = 0.0  # wall time of those target passes
    verified: int = 0
    judged: int | None = None  # rollouts shown to the reasoning judge
    judge_seconds: float | None = None

    def as_dict(self) -> dict[str, float]:
        out = {
            "calls": self.calls,
            "rollouts": self.rollouts,
            "rollout_tokens": self.rollout_tokens,
            "scored_tokens": self.scored_tokens,
            "score_seconds": round(self.score_seconds, 3),
            "verified": self.verified,
        }
        if self.judged is not None:
            out.update(judged=self.judged, judge_seconds=round(self.judge_seconds or 0.0, 3))
        return out


@dataclass
class AlignmentReward:
    """DART's reward as a TRL `GRPOTrainer` reward function.

    Injected (so the reward itself stays free of models and processes):
    - `score(prompts, responses, entropy, hidden=...) -> list[TokenScores]`: the frozen target's `Engine.score`
      (`hidden` is asked for only by `kind: patch`, for its diversity term);
    - `verify(golds, texts) -> list[Verdict]`: objects with `.verdict` (correct | wrong | no_answer | timeout |
      error) and `.rule` (the extraction rule), e.g. `Verifier.verify_many`;
    - `tokenize(text) -> list[int]`: the target tokenizer's ids of a response without the end token;
    - `qa_prompt(problem) -> str`: the rendered plain solve prompt the target scores under;
    - `stop_ids`: the policy's end and pad token ids, for the `truncated` gate under TRL (None: not checked);
    - `judge(problems, golds, texts) -> replies`: the reasoning judge (`EngineJudge`), required when
      `cfg.judge.model` is set and refused otherwise.
    The dataset columns it reads: `problem`, `answer` (gold) and `solution` (the expert y, as the mapper saw it).
    """

    score: Callable[..., list]
    verify: Callable[[list[str], list[str]], list[Any]]
    tokenize: Callable[[str], list[int]]
    qa_prompt: Callable[[str], str]
    cfg: RewardConfig = field(default_factory=RewardConfig)
    counters: RewardCounters = field(default_factory=RewardCounters)
    stop_ids: frozenset[int] | None = None
    judge: Callable[[list[str], list[str], list[str]], list[str]] | None = None
    __name__ = "dart_reward"  # not a field: the name TRL logs the reward under (rewards/dart_reward/mean)

    def __post_init__(self) -> None:
        if self.cfg.judge.on != (self.judge is not None):
            raise ValueError(
                f"reward.judge.model = {self.cfg.judge.model!r} but "
                + ("no judge was given" if self.judge is None else "a judge was given")
            )
        if self.judge is not None and self.counters.judged is None:
            self.counters.judged, self.counters.judge_seconds = 0, 0.0

    @property
    def reasons(self) -> tuple[str, ...]:
        """The gate reasons this reward counts (`reason_names`)."""
        return reason_names(self.judge is not None)

    def evaluate(
        self,
        problems: Sequence[str],
        golds: Sequence[str],
        references: Sequence[str],
        texts: Sequence[str],
        groups: Sequence[Any] | None = None,
        verdicts: Sequence[Any] | None = None,
        truncated: Sequence[bool] | None = None,
    ) -> list[RolloutScore]:
        """Gate every text, score the passing ones under the target, return their `RolloutScore`s.
        `verdicts` (Verdict objects) may be given when the caller has verified the texts already; `truncated[i]`
        says text i hit the generation limit."""
        if verdicts is None:
            verdicts = self.verify(list(golds), list(texts))
            self.counters.verified += len(texts)
        rules = [v.rule for v in verdicts]
        verdicts = [v.verdict for v in verdicts]
        tokens = [self.tokenize(t) for t in texts]
        ref_counts = {r: len(self.tokenize(r)) for r in set(references)}  # a group shares one reference
        ref_tokens = [ref_counts[r] for r in references]
        cut = list(truncated) if truncated is not None else [False] * len(texts)
        # Gate first, then score only the survivors under the target (the target pass is the costly part).
        reasons = rollout_gate(
            texts, tokens, references, ref_tokens, verdicts, self.cfg, rules, cut, list(problems), list(golds)
        )
        replies = None
        if self.judge is not None:  # after the rules, before the target: the judge sees only what they pass
            start = time.perf_counter()
            replies = judge_gate(self.judge, reasons, texts, problems, golds)
            self.counters.judge_seconds = (self.counters.judge_seconds or 0.0) + time.perf_counter() - start
            self.counters.judged = (self.counters.judged or 0) + sum(r is not None for r in replies)
        keep = [i for i, why in enumerate(reasons) if not why]
        target_scores: list[Any] = [None] * len(texts)
        if keep:
            hidden = {"hidden": True} if self.cfg.kind == "patch" and self.cfg.div_weight > 0 else {}
            start = time.perf_counter()
            scored = self.score(
                [self.qa_prompt(problems[i]) for i in keep],
                [texts[i] for i in keep],
                self.cfg.variant == "centered",
                **hidden,
            )
            self.counters.score_seconds += time.perf_counter() - start
            for i, ts in zip(keep, scored):
                target_scores[i] = ts
                self.counters.scored_tokens += len(ts.logprobs)
        self.counters.calls += 1
        self.counters.rollouts += len(texts)
        return score_rollouts(
            texts,
            tokens,
            references,
            ref_tokens,
            verdicts,
            target_scores,
            self.cfg,
            groups,
            rules,
            cut,
            reasons,
            judge_replies=replies,
        )

    def __call__(
        self,
        completions: list,
        problem: list[str],
        answer: list[str],
        solution: list[str],
        prompts: list | None = None,
        completion_ids: list[list[int]] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        **_: Any,
    ) -> list[float]:
        texts = [_completion_text(c) for c in completions]
        groups = [str(p) for p in prompts] if prompts is not None else None
        truncated = None
        if completion_ids is not None and self.stop_ids is not None:
            truncated = [bool(ids) and ids[-1] not in self.stop_ids for ids in completion_ids]
        scores = self.evaluate(problem, answer, solution, texts, groups, truncated=truncated)
        if completion_ids is not None:
            self.counters.rollout_tokens += sum(len(ids) for ids in completion_ids)
        if log_metric is not None:
            for name, value in summarize_scores(scores, self.reasons).items():
                if value is not None:  # a step where nothing passed has no r_align to average
                    log_metric(name, value)
        if log_extra is not None:
            log_extra("gate", [",".join(s.reasons) or "pass" for s in scores])
        return [s.reward for s in scores]


def _completion_text(completion: Any) -> str:
    """TRL passes plain strings for text prompts and [{"role": "assistant", "content": ...}] for chat prompts."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)
