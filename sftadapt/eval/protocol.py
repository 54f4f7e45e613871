"""Evaluation protocols: everything that decides an evaluation's numbers, recorded with every result.

Two are shipped (defined here, in code, so there is one source of truth):
- `paper`: the Mind the Gap / DFT protocol — solve prompt with chat template, n=16 samples at T=1.0,
  top_p=1.0, 4096 new tokens, `\\boxed{}` answers; report avg@16.
- `quick`: for a CPU — greedy (T=0), n=1, 256 new tokens; a smoke test of a model, not a paper number.

Any field can be overridden (`n=4 temperature=0.6`), and a YAML file with the same fields is a protocol too.
The `hash` covers every field but `name`, so an overridden `quick` is not confused with the shipped one:
`sftadapt report` refuses to put results with different hashes in one table.

    from sftadapt.eval.protocol import load_protocol
    proto = load_protocol("quick", ["max_new_tokens=512"])
    sftadapt eval --model smollm2-135m --benchmarks gsm8k --protocol quick --set max_new_tokens=512
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sftadapt.config import ConfigError, config_hash, load_config, option
from sftadapt.data.prompts import TEMPLATES
from sftadapt.engines.base import Sampling

ANSWER_FORMATS = ("boxed", "boxed_strict")


@dataclass
class Protocol:
    name: str = option("custom", help="label shown in reports (not part of the hash)")
    template: str = option("solve", help=f"prompt template, one of {sorted(TEMPLATES)} (evaluation uses 'solve')")
    chat: bool = option(True, help="apply the model's chat template to the prompt")
    n: int = option(1, help="samples per problem")
    temperature: float = option(0.0, help="sampling temperature; 0 = greedy")
    top_p: float = option(1.0, help="nucleus sampling mass (1.0 = off)")
    max_new_tokens: int = option(256, help="generation budget per sample; longer answers end with finish_reason=length")
    seed: int = option(0, help="base seed; sample j of problem p is seeded by (seed, p, 'eval', j)")
    answer_format: str = option(
        "boxed",
        help="'boxed': the prompt asks for \\boxed{} and the verifier's extraction chain applies (last \\boxed, "
        "'The answer is', last number — as the Qwen2.5-Math evaluation does); 'boxed_strict': only a "
        "\\boxed{} answer counts, anything else is no_answer",
    )

    def validate(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"template '{self.template}' is unknown: choose one of {sorted(TEMPLATES)}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format '{self.answer_format}' is unknown: choose one of {ANSWER_FORMATS}")
        if self.temperature == 0 and self.n > 1:
            raise ValueError(f"n={self.n} greedy samples would all be identical: set temperature > 0 or n=1")

    @property
    def hash(self) -> str:
        return config_hash(self, exclude=("name",))

    def sampling(self) -> Sampling:
        return Sampling(
            n=self.n, temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, seed=self.seed
        )

    def record(self) -> dict:
        """What results.json stores: every field plus the hash."""
        return {**dataclasses.asdict(self), "hash": self.hash}


PROTOCOLS: dict[str, dict] = {
    "paper": dict(
        name="paper",
        template="solve",
        chat=True,
        n=16,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=4096,
        seed=0,
        answer_format="boxed",
    ),
    "quick": dict(
        name="quick",
        template="solve",
        chat=True,
        n=1,
        temperature=0.0,
        top_p=1.0,
        max_new_tokens=256,
        seed=0,
        answer_format="boxed",
    ),
}


def load_protocol(name_or_path: str | Path, overrides: list[str] | None = None) -> Protocol:
    """A shipped protocol by name, or a YAML file of Protocol fields; then `key=value` overrides."""
    key = str(name_or_path)
    if key in PROTOCOLS:
        return load_config(Protocol, None, overrides, base=PROTOCOLS[key])
    if Path(key).suffix in (".yaml", ".yml") or Path(key).exists():
        return load_config(Protocol, key, overrides, base={"name": Path(key).stem})
    raise ConfigError(f"unknown protocol '{key}': choose one of {sorted(PROTOCOLS)} or give a YAML file")
