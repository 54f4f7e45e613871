"""The Engine protocol: `generate` (n samples per prompt) and `score` (teacher-forced log-probs).

Prompts arrive already rendered (chat template applied once, in prompts.py), so every backend sees the same
text. Responses are tokenised by `prompts.response_token_ids`, the one function training also uses, so a
score's per-token list lines up with the tokens the trainer will weight.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, Sequence


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

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / max(len(self.logprobs), 1)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from e.g. (base_seed, problem_id, stage, index): same inputs, same sample, any batching."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Engine(Protocol):
    name: str  # model id/path, recorded in provenance

    def generate(
        self, prompts: Sequence[str], params: Sampling, seeds: Sequence[Sequence[int]] | None = None
    ) -> list[list[Completion]]:
        """`params.n` completions per prompt; `seeds[i][j]` seeds sample j of prompt i when given."""
        ...

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], entropy: bool = False
    ) -> list[TokenScores]:
        """Per-token log-probs (and optionally entropies) of each response after its prompt."""
        ...

    def close(self) -> None:
        """Release the model (engines are released before training starts)."""
        ...
