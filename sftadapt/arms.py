"""The study's arms, in one table: the pipeline, the study report, the HTML report, the CLI and the tests read it.

An arm is a model that gets evaluated. A *trained* arm names the training set it fine-tunes the target on
(`source`) and the loss (`loss`, one of train.losses' nll | dft | is):

- `expert`   the SFT set as given (the expert's solutions);
- `rewrite`  Mind the Gap's adapted set (stage `rewrite`: self / guided / expert rows);
- `mapper`   DART's mapped set (stages `mapper_train` then `mapper`: synthesis with the RL-trained mapper);
- `prompted` the prompted-rewrite baseline (stage `prompted`: synthesis with the untrained mapper).

`base` (the target itself) and `direct_rl` (GRPO on the target, no SFT set) are the untrained-data arms.
A new arm that trains on an existing source with an existing loss is one row here; a new source is one
row plus the stage that builds it (pipeline.stage_configs and pipeline.run; docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    name: str
    label: str  # as printed in the study tables and plots
    source: str | None = None  # training set of a trained arm: expert | rewrite | mapper | prompted
    loss: str | None = None  # nll | dft | is


TABLE: tuple[Arm, ...] = (
    Arm("base", "base"),
    Arm("sft", "SFT", "expert", "nll"),
    Arm("dft", "DFT", "expert", "dft"),
    Arm("dr_sft", "DR+SFT", "rewrite", "nll"),
    Arm("dr_dft", "DR+DFT", "rewrite", "dft"),
    Arm("dr_is", "DR+IS", "rewrite", "is"),
    Arm("dart_sft", "DART+SFT", "mapper", "nll"),
    Arm("pr_sft", "PR+SFT", "prompted", "nll"),
    Arm("direct_rl", "GRPO (direct RL)"),
)
# training set -> the pipeline stages that build it (in order); their compute is charged to the arms using it
SOURCE_STAGES: dict[str, tuple[str, ...]] = {"expert": (), "rewrite": ("rewrite",),
                                             "mapper": ("mapper_train", "mapper"), "prompted": ("prompted",)}

ARMS: tuple[str, ...] = ()
ARM_LABELS: dict[str, str] = {}
# arm -> (training data source, loss), for the arms that fine-tune the target on a set
TRAINED_ARMS: dict[str, tuple[str, str]] = {}


def set_table(table: tuple[Arm, ...]) -> tuple[Arm, ...]:
    """Make `table` the study's arms (what a plugin or a test adding an arm calls); returns the previous one.
    Readers look names up here at call time (`arms.TRAINED_ARMS`), so the change reaches all of them."""
    global TABLE, ARMS, ARM_LABELS, TRAINED_ARMS
    previous = TABLE
    unknown = [a.name for a in table if a.source is not None and a.source not in SOURCE_STAGES]
    if unknown:
        raise ValueError(f"arm(s) {unknown}: source must be one of {', '.join(SOURCE_STAGES)}")
    TABLE = tuple(table)
    ARMS = tuple(a.name for a in TABLE)
    ARM_LABELS = {"raw": "raw model", **{a.name: a.label for a in TABLE}}
    TRAINED_ARMS = {a.name: (a.source, a.loss) for a in TABLE if a.source}
    return previous


set_table(TABLE)
