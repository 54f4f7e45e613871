"""A stage that exists only for tests/test_registry.py: one module (this) and one registry row make it a CLI
command, a step of `sftadapt run`, a validated config section and a section of docs/reference.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sftadapt.config import option
from sftadapt.registry import Stage


@dataclass
class DummyConfig:
    model: str = option("tiny-random", help="the target (unused)")
    data: str = option("expert.jsonl", help="the expert set: copied as the training set")
    out: str = option("runs/dummy", help="output folder")
    seed: int = option(0, help="seed (unused)")
    words: int = option(2, help="words of the marker each row gets")
    report_to: str = option("none", help="tracker (unused)")
    tracking_dir: str | None = option(None, help="tracker folder (unused)")
    online: bool = option(False, help="network switch (unused)")

    def validate(self) -> None:
        if self.words < 1:
            raise ValueError(f"words = {self.words}: must be >= 1")


def run(cfg: DummyConfig, progress: bool = True) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text(json.dumps({"marker": " ".join(["dummy"] * cfg.words)}) + "\n")
    return {"rows": 1, "words": cfg.words}


STAGE = Stage(
    name="dummy",
    config=DummyConfig,
    run=run,
    outputs=("train.jsonl",),
    echo=lambda cfg, summary: [f"dummy wrote {summary['rows']} row with {summary['words']} words"],
)
