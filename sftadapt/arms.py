"""The study's arms, in one table: the pipeline, the study report, the HTML report, the CLI and the tests read it.

An arm is a model that gets evaluated. A *trained* arm names the training set it fine-tunes the target on
(`source`), the loss (`loss`, one of train.losses' nll | dft | is) and what happens to the set's expert-fallback
rows (`fallback`: keep | drop | dft, the train option of that name; adapted sets only):

- `expert`   the SFT set as given (the expert's solutions);
- `rewrite`  Mind the Gap's adapted set (stage `rewrite`: self / guided / expert rows);
- `sdft`     prompted rewrite as SDFT does it (stage `sdft`, the rewrite stage's `sdft` method): the
             target rewrites each expert solution once with SDFT's own distillation prompt (prompts.SDFT), kept
             when its answer verifies (and SDFT's filter passes it), else the expert row;
- `mapper`   DART's mapped set (stages `mapper_train` then `mapper`: synthesis with the RL-trained mapper);
- `prompted` prompted rewrite through DART's synthesis with the untrained mapper (stage `prompted`): best of k
             rewrites through DART's gate, the highest r_align kept, else the expert row (not SDFT's rule);
- `patch`    the same pipeline as `mapper` with the Patch reward (arXiv 2602.11220; reward kind patch: stages
             `mapper_train_patch` then `mapper_patch`).

`base` (the target itself) and `direct_rl` (GRPO on the target, no SFT set) are the untrained-data arms.
Direct RL at several compute budgets, for a compute-vs-accuracy curve: an arm named `direct_rl@N` (N >= 1, any
number of them in a run's `arms:`) is the same GRPO run with `grpo.max_steps` = N over the `direct_rl:` section,
in its own stage folder `direct_rl@N`; plain `direct_rl` keeps the section's own max_steps. They are separate
runs: with the default constant schedule the N-step run is the first N steps of a longer one, but a stage folder
only resumes checkpoints it wrote itself, so a longer budget does not start from a shorter one's checkpoint.
A new arm that trains on an existing source with an existing loss is one row here (`train` gives it training
options of its own); a new source is a step of a stage in the stage registry (registry.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sftadapt import registry
from sftadapt.data.records import FALLBACKS


@dataclass(frozen=True)
class Arm:
    name: str
    label: str  # as printed in the study tables and plots
    source: str | None = None  # training set of a trained arm: one of SOURCE_STAGES
    loss: str | None = None  # nll | dft | is
    fallback: str = "keep"  # the set's expert-fallback rows: keep | drop | dft
    # train options of this arm only, over the run config's `train:` section (e.g. {"lr": 1e-5})
    train: Mapping[str, Any] = field(default_factory=dict, hash=False)


TABLE: tuple[Arm, ...] = (
    Arm("base", "base"),
    Arm("sft", "SFT", "expert", "nll"),
    Arm("dft", "DFT", "expert", "dft"),
    Arm("dr_sft", "DR+SFT", "rewrite", "nll"),
    Arm("dr_dft", "DR+DFT", "rewrite", "dft"),
    Arm("dr_is", "DR+IS", "rewrite", "is"),
    Arm("dart_sft", "DART+SFT", "mapper", "nll"),
    Arm("sdft_sft", "SDFT+SFT (one rewrite)", "sdft", "nll"),
    Arm("pr_sft", "PR best-of-k+SFT", "prompted", "nll"),
    Arm("patch_sft", "Patch+SFT", "patch", "nll"),
    Arm("dart_sft_nofb", "DART+SFT, no fallback rows", "mapper", "nll", "drop"),
    Arm("dart_sft_fbdft", "DART+SFT, fallback rows DFT", "mapper", "nll", "dft"),
    Arm("pr_sft_nofb", "PR best-of-k+SFT, no fallback rows", "prompted", "nll", "drop"),
    Arm("direct_rl", "GRPO (direct RL)"),
)


class _SourceStages(Mapping):
    """Training set -> the names of the `run` steps that build it, in order; read from the stage registry at each
    use (a stage registered later brings its sources with it)."""

    def __getitem__(self, source: str) -> tuple[str, ...]:
        return tuple(step.name for step in registry.sources()[source])

    def __iter__(self) -> Iterator[str]:
        return iter(registry.sources())

    def __len__(self) -> int:
        return len(registry.sources())


# their compute is charged to the arms using the set
SOURCE_STAGES: Mapping[str, tuple[str, ...]] = _SourceStages()
# the arms a study runs unless its config lists them (the ablations are opt-in: they add training and eval runs)
# The comparisons the study is for, beyond "each arm vs base" (arm, reference, the question it answers). The study
# report gives each pair whose two arms ran a paired delta over seeds and problems.
CONTRASTS: tuple[tuple[str, str, str], ...] = (
    ("dft", "sft", "DFT vs SFT on the expert set"),
    ("dr_sft", "sft", "Mind the Gap rewriting vs the expert set (SFT)"),
    ("dr_dft", "dr_sft", "DFT vs SFT on the rewritten set"),
    ("dr_is", "dr_sft", "importance-weighted vs plain SFT on the rewritten set"),
    ("dart_sft", "pr_sft", "DART's trained mapper vs the untrained one (same synthesis)"),
    ("dart_sft", "sdft_sft", "DART vs SDFT's single verified rewrite"),
    ("dart_sft", "sft", "DART vs SFT on the expert set"),
    ("patch_sft", "dart_sft", "the Patch reward vs DART's r_align"),
    ("dart_sft_nofb", "dart_sft", "DART's set without its expert-fallback rows"),
    ("dart_sft_fbdft", "dart_sft", "DART's fallback rows trained by DFT"),
    ("pr_sft_nofb", "pr_sft", "PR's set without its expert-fallback rows"),
    ("direct_rl", "dart_sft", "direct RL on the target vs DART+SFT"),
)
DEFAULT_ARMS = ("base", "sft", "dft", "dr_sft", "dr_dft", "dr_is", "dart_sft", "sdft_sft", "pr_sft", "direct_rl")

DIRECT_RL = "direct_rl"
_BUDGET = re.compile(r"direct_rl@([1-9][0-9]*)")


def direct_rl_steps(name: str) -> int | None:
    """The GRPO budget (max_steps) an arm name `direct_rl@N` gives, or None for any other name."""
    match = _BUDGET.fullmatch(name)
    return int(match.group(1)) if match else None


def is_direct_rl(name: str) -> bool:
    """`direct_rl` or a budget of it (`direct_rl@N`): an arm trained by GRPO on the target, in stage folder `name`."""
    return name == DIRECT_RL or direct_rl_steps(name) is not None


def known(name: str) -> bool:
    """Whether a run's `arms:` may name `name`: a row of the table or a direct-RL budget."""
    return name in ARMS or direct_rl_steps(name) is not None


class _Labels(dict):
    """Arm -> label as printed; a direct-RL budget arm, not a row of the table, is labelled from its budget."""

    def __missing__(self, name: str) -> str:
        steps = direct_rl_steps(name)
        if steps is None:
            raise KeyError(name)
        return f"{self[DIRECT_RL]}, {steps} step{'s' * (steps != 1)}"

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default


ARMS: tuple[str, ...] = ()
ARM_LABELS: dict[str, str] = _Labels()
# arm -> (training data source, loss), for the arms that fine-tune the target on a set
TRAINED_ARMS: dict[str, tuple[str, str]] = {}
# arm -> what its training does with the set's expert-fallback rows (trained arms only)
FALLBACK: dict[str, str] = {}


def train_data(source: str) -> str:
    """Where (relative to a seed's folder) the training set of `source` is: the expert set, or the last stage's
    train.jsonl."""
    stages = SOURCE_STAGES[source]
    return f"{stages[-1]}/train.jsonl" if stages else "data/expert.jsonl"


def set_table(table: tuple[Arm, ...]) -> tuple[Arm, ...]:
    """Make `table` the study's arms (what a plugin or a test adding an arm calls); returns the previous one.
    Readers look names up here at call time (`arms.TRAINED_ARMS`), so the change reaches all of them."""
    global TABLE, ARMS, ARM_LABELS, TRAINED_ARMS, FALLBACK
    previous = TABLE
    unknown = [a.name for a in table if a.source is not None and a.source not in SOURCE_STAGES]
    if unknown:
        raise ValueError(f"arm(s) {unknown}: source must be one of {', '.join(SOURCE_STAGES)}")
    bad = [
        a.name for a in table if a.fallback not in FALLBACKS or (a.fallback != "keep" and a.source in (None, "expert"))
    ]
    if bad:
        raise ValueError(
            f"arm(s) {bad}: fallback is one of {', '.join(FALLBACKS)}, and only an adapted set has "
            "fallback rows to drop or reweight"
        )
    taken = [a.name for a in table if direct_rl_steps(a.name) is not None]
    if taken:
        raise ValueError(f"arm(s) {taken}: direct_rl@N names direct RL at N steps; choose another name")
    wired = [a.name for a in table if set(a.train) & {"model", "data", "out", "loss", "fallback"}]
    if wired:
        raise ValueError(f"arm(s) {wired}: train options may not set model, data, out, loss or fallback (the row does)")
    TABLE = tuple(table)
    ARMS = tuple(a.name for a in TABLE)
    ARM_LABELS = _Labels({"raw": "raw model", DIRECT_RL: "GRPO (direct RL)", **{a.name: a.label for a in TABLE}})
    TRAINED_ARMS = {a.name: (a.source, a.loss) for a in TABLE if a.source}
    FALLBACK = {a.name: a.fallback for a in TABLE if a.source}
    return previous


set_table(TABLE)
