"""Test doubles shared by the stage tests (imported as `from fakes import ...`: pytest puts tests/ on the path).

They pin a stage's bookkeeping exactly, where a real model's output would make the expected rows unknowable;
every stage also has tests on the tiny real model (tests/conftest.py `tiny_engine`)."""

from __future__ import annotations

import re
from types import MappingProxyType

from sftadapt.verify import Verdict

END = 99  # the fake end-of-text token id


class FakeTokenizer:
    """No chat template (prompts are the bare text) and a fixed end token."""

    chat_template = None
    eos_token_id = END


class BoxedVerifier:
    """String equality on the last `\\boxed{...}` answer: the Verifier's interface without math_verify."""

    def verify_many(self, golds, texts):
        out = []
        for gold, text in zip(golds, texts):
            found = re.findall(r"\\boxed\{([^{}]*)\}", text)
            out.append(
                Verdict("no_answer", None, "none", 0.0)
                if not found
                else Verdict("correct" if found[-1] == gold else "wrong", found[-1], "boxed", 0.0)
            )
        return out


class FakeEngine:
    """The whole `Engine` protocol (sftadapt/engines/base.py) with a scripted engine's defaults: the stage tests'
    engines subclass it and replace what they script. A fake has no model config (`context_length` None: budgets
    come from the tokenizer) and says no precision (empty: the stage records the dtype its config asked for); its
    counters are read-only zeros unless it keeps its own `stats`. A member it does not script refuses, naming it."""

    name = "scripted"
    tokenizer = None
    context_length: int | None = None
    end_ids: tuple[int, ...] = (0,)  # a scripted engine's samples end where its script says
    seeded = True
    precision = MappingProxyType({})  # shared by every instance, hence read-only
    stats = MappingProxyType({})

    def generate(self, prompts, params, seeds=None):
        raise NotImplementedError(f"{type(self).__name__} scripts no generate")

    def score(self, prompts, responses, entropy=False, hidden=False):
        raise NotImplementedError(f"{type(self).__name__} scripts no score")

    def close(self):
        pass
