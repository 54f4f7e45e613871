"""The reasoning judge of DART's gate (optional, off by default; `reward.judge`, the paper's judge of "Patch the
Distribution Mismatch"): a judge model, run on any engine backend, is shown each rewrite ŷ the rule gate passes
(adapt/reward.py) — the JUDGE prompt of data/prompts.py: the problem, the gold answer and ŷ, "does it solve the
problem with valid steps that lead to its final answer, not only state the answer or talk about the task? One
word: VALID or INVALID" — and answers greedily in at most `max_new_tokens` (8) tokens. Its verdict is the first
word of the reply when that is VALID or INVALID, else the one of the two words the reply holds (`judge_verdict`); ŷ fails with
`judge_invalid` for INVALID and `judge_unparsed` for a reply with neither word (or both, after another first
word): a judge that cannot say VALID is no pass. The rules run first, so the judge never sees what they refuse
and its cost scales with the passing rollouts; the target scores only what both pass. The judge's reply and
verdict are kept with each rollout's record (`judge`, `judge_reply`), its reasons are counted like the rules'
(`fail_judge_*` in rl_log.jsonl, `gate_failures` in a synthesis summary, which also counts the verdicts under
`judge`), and the reward's counters add `judged` and `judge_seconds`. Mapper RL and synthesis each build the
judge engine once (`make_engine(judge.model, judge.engine, dtype=judge.dtype, batch_size=judge.batch_size)`)
and close it with the stage. Set it in a config's `reward:` section (map train, map synthesize, and the run
config's mapper_train / synth / patch sections):

    reward:
      judge: {model: Qwen/Qwen2.5-7B-Instruct, engine: {backend: vllm}, dtype: bfloat16, max_new_tokens: 8}

or on the command line, `--set reward.judge.model=Qwen/Qwen2.5-7B-Instruct --set reward.judge.engine.backend=vllm`.
An `openai` judge on a server off this machine needs `--online` (or `allow_hosts`), as every engine block. With
`model` unset the block is left out of run ids, stage hashes and provenance, so runs made before it keep theirs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sftadapt.config import option
from sftadapt.engines.base import EngineConfig, Sampling
from sftadapt.runtime.precision import normalize

# the reasoning judge's reasons: only when a judge is on are they gate reasons (logged, summarised)
JUDGE_REASONS = ("judge_invalid", "judge_unparsed")


@dataclass
class JudgeConfig:
    """The optional reasoning judge behind the rule gate (`reward.judge`); off while `model` is unset."""

    model: str | None = option(
        None,
        help="judge model (HF id, local path, smollm2-135m, tiny-random): shown every rewrite the rule gate "
        "passed, it fails those it calls INVALID (judge_invalid) or answers unreadably (judge_unparsed); "
        "unset = no judge",
    )
    engine: EngineConfig = field(
        default_factory=EngineConfig,
        metadata={
            "help": "the backend that runs the judge (hf | vllm | openai | ray; openai servers off this "
            "machine need --online)"
        },
    )
    dtype: str = option("auto", help="judge dtype: auto (bf16 only where native) | float32 | bfloat16")
    max_new_tokens: int = option(8, help="tokens the judge may write (its verdict: the word VALID or INVALID)")
    batch_size: int = option(16, help="judge prompts per generate call")

    def __post_init__(self) -> None:
        if isinstance(self.engine, dict):  # rebuilt from its own dict (config_dict), as callers do
            self.engine = EngineConfig(**self.engine)

    @property
    def on(self) -> bool:
        return self.model is not None

    def validate(self) -> None:
        if self.model is not None and not self.model.strip():
            raise ValueError("judge.model is empty: name the judge model, or leave it unset (null) for no judge")
        normalize(self.dtype, field="judge.dtype")
        self.engine.validate()


_VERDICT_WORD = re.compile(r"\b(invalid|valid)\b", re.IGNORECASE)
_FIRST_WORD = re.compile(r"[A-Za-z]+")


def judge_verdict(reply: str) -> str:
    """`valid` | `invalid` | `unparsed`: the judge's reply read as its verdict. Its first word when that is VALID or
    INVALID (any case, markdown and quotes around it ignored); else the one verdict word the reply holds ("The
    solution is INVALID."); a reply with neither word, or with both after a first word that is neither
    ("VALID or INVALID?"), is `unparsed`."""
    first = _FIRST_WORD.search(reply)
    if first and first.group(0).lower() in ("valid", "invalid"):
        return first.group(0).lower()
    found = {m.lower() for m in _VERDICT_WORD.findall(reply)}
    return found.pop() if len(found) == 1 else "unparsed"


@dataclass
class EngineJudge:
    """The judge on an engine (`make_engine(cfg.judge.model, cfg.judge.engine, ...)`): one greedy generation of
    at most `max_new_tokens` per rewrite after the JUDGE prompt (data/prompts.py), rendered with the judge model's
    chat template when `chat`. Called as `judge(problems, golds, texts) -> replies`, the interface `judge_gate`
    takes (tests inject plain functions)."""

    engine: Any
    max_new_tokens: int = 8
    chat: bool = True

    def __call__(self, problems: Sequence[str], golds: Sequence[str], texts: Sequence[str]) -> list[str]:
        from sftadapt.data import prompts as P

        tok = self.engine.tokenizer
        prompts = [
            P.render(tok, P.JUDGE.format(problem=x, answer=a, response=t), chat=self.chat)
            for x, a, t in zip(problems, golds, texts)
        ]
        greedy = Sampling(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens)
        outs = self.engine.generate(prompts, greedy, seeds=[[0] for _ in prompts])  # greedy: the seed is unused
        return [o[0].text for o in outs]


def judge_gate(
    judge: Callable[[list[str], list[str], list[str]], list[str]],
    reasons: Sequence[list[str]],
    texts: Sequence[str],
    problems: Sequence[str],
    golds: Sequence[str | None],
) -> list[str | None]:
    """Show `judge` every text the rule gate passed (`reasons[i]` empty) and add `judge_invalid` /
    `judge_unparsed` to the reasons of those it does not call VALID (in place). Returns the judge's reply per
    text, None where it was not asked."""
    asked = [i for i, why in enumerate(reasons) if not why]
    replies: list[str | None] = [None] * len(texts)
    if not asked:
        return replies
    got = judge([problems[i] for i in asked], [golds[i] or "" for i in asked], [texts[i] for i in asked])
    if len(got) != len(asked):
        raise ValueError(f"the judge answered {len(got)} of {len(asked)} rewrites")
    for i, reply in zip(asked, got):
        replies[i] = reply
        verdict = judge_verdict(reply)
        if verdict != "valid":
            reasons[i].append(f"judge_{verdict}")
    return replies
