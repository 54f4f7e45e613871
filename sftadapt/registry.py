"""The stage registry: every stage sftadapt runs is one module and one row here.

A stage module exports a `Stage`: its config class (a dataclass of `config.option` fields), `run(cfg, progress)`
returning a summary dict, the files it writes in `cfg.out`, the record type of its rows and how the CLI prints
its summary. A `Row` names that export (`"module:ATTR"`, imported only when the stage is used, since most stages
load torch) with the command's one-line help, the section of `sftadapt run`'s config that holds its options, and
the steps it contributes to `run`'s graph. From these rows, and nothing else:

- the CLI builds one command per row (`sftadapt rewrite`, `sftadapt map train`): every top-level option of the
  config class is a flag with the dataclass's default and help, nested sections are reached with `--set`
  (stage_cli.py);
- `sftadapt run` accepts one options section per row and builds each step's config from it (pipeline.py), and
  the training sets its arms can name are the rows' step sources (arms.py);
- `docs/reference.md` is written from the rows (`sftadapt config reference`), and a test keeps it current.

A new stage is its module plus `register(Row(...))`; a test does exactly that with a dummy stage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stage:
    """What a stage module exports."""

    name: str  # the registry row's name
    config: type  # its config dataclass
    run: Callable[..., dict[str, Any]]  # run(cfg, progress=bool) -> summary
    outputs: tuple[str, ...]  # files it writes in cfg.out
    record: str | None = None  # the record type of its main output's rows (data/records.py)
    echo: Callable[[Any, dict[str, Any]], list[str]] | None = None  # the CLI's lines after a run
    aliases: Mapping[str, str] = field(default_factory=dict)  # older flags / --set keys -> dotted config keys
    target_key: str = "model"  # the option `run` sets to the target model
    seed_key: str = "seed"  # the option `run` sets to the seed (dotted)


@dataclass(frozen=True)
class Step:
    """One use of a stage in `sftadapt run`'s graph: a folder of a seed that builds (part of) a training set.

    Its config is the stage's defaults <- the run config's `sections`, merged in order <- `fixed`; `run` then sets
    the target model, the expert set, the seed and the output folder. `after` names the step of the same source
    whose folder it reads (as option `input_key`); `carry` copies (step, option) pairs, read from that step's sections, over `fixed`."""

    name: str
    source: str  # the training set it builds, which an arm names (arms.py)
    sections: tuple[str, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    after: str | None = None
    input_key: str | None = None
    carry: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Row:
    name: str  # the command: "rewrite", "map train"
    target: str  # "module:ATTR" of its Stage
    help: str  # the command's one-line help
    section: str | None = None  # its options' section in `sftadapt run`'s config
    steps: tuple[Step, ...] = ()


ROWS: list[Row] = [
    Row(
        "sample",
        "sftadapt.eval.sample:STAGE",
        "Sample a model on a dataset; write verified Attempts and print the accuracy.",
    ),
    Row(
        "rewrite",
        "sftadapt.adapt.rewrite:STAGE",
        "Mind the Gap rewriting (self -> guided -> expert fallback) or a cheap baseline; writes OUT/train.jsonl.",
        section="rewrite",
        steps=(
            Step("rewrite", "rewrite", ("rewrite",)),
            # SDFT: the rewrite stage's one-rewrite method with SDFT's own prompt, the rewrite section's sampling
            Step("sdft", "sdft", ("rewrite",), {"method": "sdft"}),
        ),
    ),
    Row(
        "train",
        "sftadapt.train.stage:STAGE",
        "Fine-tune a model on (adapted) examples with a registered loss (nll, dft, is); resumes from the last "
        "checkpoint in OUT.",
        section="train",
    ),
    Row(
        "map train",
        "sftadapt.adapt.mapper:TRAIN_STAGE",
        "Mapper RL: GRPO with the alignment reward behind the anti-cheating gate; saves the mapper in OUT.",
        section="mapper_train",
        steps=(
            Step("mapper_train", "mapper", ("mapper_train",)),
            Step("mapper_train_patch", "patch", ("mapper_train", "patch"), {"reward": {"kind": "patch"}}),
        ),
    ),
    Row(
        "map synthesize",
        "sftadapt.adapt.mapper:SYNTH_STAGE",
        "K rewrites per example, keep the best gate-passing one by r_align, else the expert; writes OUT/train.jsonl.",
        section="synth",
        steps=(
            Step("mapper", "mapper", ("synth",), after="mapper_train", input_key="mapper"),
            Step("prompted", "prompted", ("synth",), {"mapper": "untrained"}),
            Step(
                "mapper_patch",
                "patch",
                ("synth",),
                {"reward": {"kind": "patch"}},
                after="mapper_train_patch",
                input_key="mapper",
                carry=(
                    ("mapper_train_patch", "reward.dist_weight"),
                    ("mapper_train_patch", "reward.div_weight"),
                    ("mapper_train_patch", "reward.judge"),  # a judge set in `patch:` judges its synthesis too
                ),
            ),
        ),
    ),
    Row(
        "rl",
        "sftadapt.rl.direct_rl:STAGE",
        "Direct RL: GRPO on the target with the correctness reward (no SFT set); saves the model in OUT.",
        section="direct_rl",
    ),
    Row(
        "eval",
        "sftadapt.eval.stage:STAGE",
        "Evaluate a model on benchmarks under a protocol: avg@n, pass@k, maj@n with 95% intervals.",
        section="eval",
    ),
]


def echo_adapted_set(cfg: Any, summary: dict[str, Any]) -> list[str]:
    """What the CLI prints after a stage that writes an adapted training set (rewrite, map synthesize)."""
    from pathlib import Path

    out = Path(cfg.out)
    return [f"{summary['rows']} rows -> {out / 'train.jsonl'} (summary: {out / 'summary.json'})"]


def register(row: Row) -> None:
    """Add a stage (or replace the row of the same name)."""
    ROWS[:] = [r for r in ROWS if r.name != row.name] + [row]


def unregister(name: str) -> None:
    ROWS[:] = [r for r in ROWS if r.name != name]


def row(name: str) -> Row:
    for r in ROWS:
        if r.name == name:
            return r
    raise KeyError(f"no stage '{name}': known: {', '.join(r.name for r in ROWS)}")


def load(name: str) -> Stage:
    """The Stage a row names, imported now."""
    r = row(name)
    module, attr = r.target.split(":")
    stage = getattr(importlib.import_module(module), attr)
    if not isinstance(stage, Stage) or stage.name != r.name:
        raise TypeError(f"{r.target}: expected the Stage named '{r.name}'")
    return stage


def section_rows() -> dict[str, Row]:
    """Run config section -> its stage's row."""
    return {r.section: r for r in ROWS if r.section}


def sources() -> dict[str, tuple[Step, ...]]:
    """Training set -> the steps that build it, in order (a step after the one it reads); `expert` needs none."""
    chains: dict[str, list[Step]] = {"expert": []}
    for r in ROWS:
        for step in r.steps:
            chains.setdefault(step.source, []).append(step)
    out = {}
    for source, steps in chains.items():
        ordered = [s for s in steps if s.after is None]
        rest = [s for s in steps if s.after is not None]
        while rest:
            ready = [s for s in rest if s.after in {o.name for o in ordered}]
            if not ready:
                raise ValueError(f"source {source}: step(s) {[s.name for s in rest]} come after no step of it")
            ordered += ready
            rest = [s for s in rest if s not in ready]
        out[source] = tuple(ordered)
    return out


def step_rows() -> dict[str, tuple[Row, Step]]:
    """Step name -> (its stage's row, the step)."""
    return {s.name: (r, s) for r in ROWS for s in r.steps}
