"""The whole engine contract: what every stage may use of an engine, and the block that chooses one.

`Engine` is everything a stage touches: `generate` (n samples per prompt), `score` (teacher-forced log-probs),
`tokenizer` (the HF tokenizer prompts are rendered and measured with), `context_length` (the tokens the model
takes, prompt and new tokens together, for the token budgets), `end_ids` and `seeded` (engines/facts.py),
`stats` (token and time counters for compute accounting), `precision` (the dtype each call runs in, for
provenance) and `close`. Every backend and every test
fake has all of it (tests/test_engine_protocol.py), so stages use each member directly. A stage config that
samples or scores carries an `EngineConfig` (`engine:` in YAML, `--set engine.backend=...` on the command line);
`sftadapt.engines.make_engine` builds the backend it names from the registry in `engines/__init__.py`.

Prompts arrive already rendered (chat template applied once, in prompts.py), so every backend sees the same
text. Responses are tokenised by `prompts.response_token_ids`, the one function training also uses, so a
score's per-token list lines up with the tokens the trainer will weight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sftadapt.config import option


@dataclass
class Sampling:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int = 0  # base seed; per-request seeds derive from it (see `derive_seed`)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float]  # log-prob of each sampled token under the model at temperature 1 (untempered)
    finish_reason: str  # "stop" (EOS or a stop string) | "length"
    seed: int | None = None


@dataclass
class TokenScores:
    token_ids: list[int]
    logprobs: list[float]
    entropies: list[float] | None = None
    # the scoring model's last hidden state mean-pooled over the response tokens (score with hidden=True): the
    # embedding the Patch reward's diversity term compares (adapt/reward.py)
    hidden: list[float] | None = None

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / max(len(self.logprobs), 1)


class RequestRejected(ValueError):
    """A backend refused some rows (an HTTP 4xx: context too long, unknown model, invalid request), not the run.

    `reasons` maps the index of each refused prompt in the call to the server's reason. A stage that can drop
    rows runs its chunk again item by item (`sftadapt.engines.rejects.keep_going`), writes the refused items to
    its rejects file and goes on; anywhere else it is a ValueError, one line on the command line."""

    def __init__(self, reasons: dict[int, str], backend: str = "engine"):
        self.reasons = dict(reasons)
        first = min(self.reasons)
        more = f" (and {len(self.reasons) - 1} more)" if len(self.reasons) > 1 else ""
        super().__init__(f"{backend} rejected request {first}{more}: {self.reasons[first]}")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from e.g. (base_seed, problem_id, stage, index): same inputs, same sample, any batching."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def refuse_unknown(options: dict, allowed: Sequence[str], backend: str) -> None:
    """One line naming the `engine.options` keys backend `backend` does not take, and the ones it does."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"engine.options {unknown} are not {backend} options; {backend} takes {', '.join(allowed)}")


# backend name -> "module:class"; the class has `from_config(model, options, **common) -> Engine`
# (engines/__init__.make_engine imports it; kept here so that EngineConfig checks a name without importing the
# package that imports this module)
BACKENDS: dict[str, str] = {
    "hf": "sftadapt.engines.hf:HFEngine",
    "openai": "sftadapt.engines.openai:OpenAIEngine",  # OpenAI-compatible completions servers
    "vllm": "sftadapt.engines.vllm:VLLMEngine",  # vLLM in this process
    "ray": "sftadapt.engines.replicas:RayEngine",  # hf or vllm replicas on a Ray cluster (data parallel)
}


@dataclass
class EngineConfig:
    """Which backend runs a stage's generate/score calls, and that backend's own options.

    The model, dtype and batch size stay the stage's own options (`model`, `dtype`, `batch_size`): every
    backend needs them, and keeping them where they were keeps every existing config valid."""

    backend: str = option(
        "hf", help="hf (transformers in this process); see `sftadapt.engines.BACKENDS` for the others"
    )
    options: dict = option(
        {},
        help="backend-specific options, e.g. base_urls for openai; without --online its servers must be loopback "
        "or listed in allow_hosts: [HOST, ...] (docs/scale-out.md); every backend takes seeded: auto | true | false "
        "(auto: seeded samples on hf and vllm, none sent to servers)",
    )

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"engine.backend '{self.backend}' is not one of {', '.join(BACKENDS)}")


SAME = "same"


@dataclass
class ScoreEngineConfig(EngineConfig):
    """The backend of a stage's scoring role where the stage also samples (the rewrite's gap metric and behaviour
    log-probs): `same` scores with the stage's `engine`; any backend name builds a second engine for the same
    model, e.g. sampling on an `openai` server that cannot echo prompt log-probs and scoring with `hf`. A `same`
    block decides nothing, so it stays out of every hash (config.without_engine_options)."""

    backend: str = option(
        SAME, help="same (the stage's engine) | hf | vllm | ray | openai (a server that echoes log-probs)"
    )

    def validate(self) -> None:
        if self.backend != SAME:
            super().validate()


class Engine(Protocol):
    name: str  # model id/path, recorded in provenance
    tokenizer: Any  # HF tokenizer: prompts.py renders and tokenises with it, budget.py measures with it
    # the model's context in tokens as this engine runs it (hf: the model config's; vllm: its max_model_len), or
    # None where the engine cannot know it (a server enforces its own: a too-long request is a reject row);
    # budget.context_length caps it by the tokenizer's model_max_length
    context_length: int | None
    # every id that ends a generation (the generation config's eos ids, then the tokenizer's EOS; facts.py)
    end_ids: tuple[int, ...]
    seeded: bool  # whether samples carry seeds (engine.options.seeded; facts.py)
    stats: dict[str, float]  # generated_tokens, scored_tokens, generate_seconds, score_seconds
    # {"generate": dtype, "score": dtype, ...} as run; empty only for a test fake, where the stage records the
    # dtype its config asked for
    precision: dict[str, str]

    def generate(
        self, prompts: Sequence[str], params: Sampling, seeds: Sequence[Sequence[int]] | None = None
    ) -> list[list[Completion]]:
        """`params.n` completions per prompt; `seeds[i][j]` seeds sample j of prompt i when given."""
        ...

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], entropy: bool = False, hidden: bool = False
    ) -> list[TokenScores]:
        """Per-token log-probs (and optionally entropies, and the mean-pooled last hidden state over the
        response: `hidden`, hf only) of each response after its prompt."""
        ...

    def close(self) -> None:
        """Release the model (engines are released before training starts)."""
        ...
