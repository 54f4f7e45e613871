"""What each arm of a study cost and how far its training set is from the target: the compute columns and the
gap column of the study report (study.py) and the HTML report (html.py), read from the stage folders.

Compute charged to an arm = the stages that built its training set (arms.SOURCE_STAGES: the rewrite, or the
mapper's RL and synthesis, ...) + its own training; `direct_rl` (and each budget `direct_rl@N`) = its own GRPO
run, in the stage folder of that name. Tokens are counted as each
stage's compute.json records them (generated, scored by a frozen model, trained). Like for like between DART and
direct RL: both are charged the prompt + completion tokens their GRPO policy processed (`tokens_trained`), the
rollout tokens it generated and the seconds of the stage; `score_seconds` is the frozen target's scoring time
(DART's reward, the synthesis and rewrite gap scores), part of `seconds`, shown so the reward's cost is visible.

`tokens_trained` adds up two kinds of token, as the study report's footnote says: for an SFT-family training,
the response tokens through the loss (steps x global batch x mean response tokens per row); for a GRPO run
(direct RL, DART's and Patch's mapper RL), the prompt + completion tokens the policy processed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sftadapt import arms


def adapt_stages(arm: str) -> list[str]:
    """The stages that built `arm`'s training set (their compute is charged to the arm)."""
    source = arms.TRAINED_ARMS.get(arm, (None,))[0]
    return list(arms.SOURCE_STAGES.get(source, ()))


def gap_source(arm: str) -> tuple[str, str] | None:
    """(stage summary, key) holding the gap of `arm`'s training set; every adapt stage scores the expert set."""
    if arm not in arms.TRAINED_ARMS:
        return None
    source = arms.TRAINED_ARMS[arm][0]
    return ("rewrite", "expert_set") if source == "expert" else (arms.SOURCE_STAGES[source][-1], "final_set")


def arm_gap(arm: str, results: dict[str, dict[str, Any]]) -> float | None:
    """The gap of the set an arm trained on, from the adapt stages' summaries (the expert set's gap is scored
    by every adapt stage; any of them will do)."""
    if gap_source(arm) is None:
        return None
    stage, key = gap_source(arm)
    last_stages = [chain[-1] for chain in arms.SOURCE_STAGES.values() if chain]
    for name in [stage] + last_stages if key == "expert_set" else [stage]:
        gap = (results.get(name) or {}).get("gap") or {}
        if gap.get(key) is not None:
            return float(gap[key])
    return None


def _compute_file(folder: Path) -> dict[str, Any]:
    path = folder / "compute.json"
    return json.loads(path.read_text()) if path.exists() else {}


def arm_compute(arm: str, root: Path, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Tokens generated / scored / trained, optimiser steps and seconds that producing `arm` took."""
    total = {
        "tokens_generated": 0,
        "tokens_scored": 0,
        "tokens_trained": 0,
        "optimizer_steps": 0,
        "seconds": 0.0,
        "score_seconds": 0.0,
    }
    for stage in adapt_stages(arm):
        res = results.get(stage) or {}
        comp = _compute_file(root / stage)
        totals = res.get("totals") or {}
        total["tokens_generated"] += int(comp.get("tokens_generated", totals.get("generated_tokens", 0)) or 0)
        total["tokens_scored"] += int(comp.get("tokens_scored", totals.get("scored_tokens", 0)) or 0)
        total["tokens_trained"] += int(comp.get("policy_tokens_processed", 0) or 0)  # mapper RL's policy
        total["optimizer_steps"] += int(comp.get("optimizer_steps", 0) or 0)
        total["seconds"] += float(res.get("stage_seconds", 0.0))
        # mapper RL: the reward's counter; synthesis and rewrite: the engine's totals. Records of mapper RL
        # written before that counter existed (2026-12-03) carry target_score_seconds_this_run instead.
        legacy = comp.get("target_score_seconds_this_run", totals.get("score_seconds", 0.0))
        total["score_seconds"] += float(comp.get("score_seconds", legacy) or 0.0)
    if arms.is_direct_rl(arm):
        res, comp = results.get(arm) or {}, _compute_file(root / arm)
        total.update(
            tokens_generated=int(comp.get("tokens_generated", 0)),
            tokens_trained=int(comp.get("policy_tokens_processed", 0)),
            optimizer_steps=int(comp.get("optimizer_steps", 0)),
            seconds=float(res.get("stage_seconds", 0)),
        )
    train = results.get(f"train_{arm}")
    if train:
        rows = max(int(train.get("rows", 0)), 1)
        # response tokens seen = steps x global batch x mean response tokens per row (exact when epochs are whole)
        total["tokens_trained"] += round(train["steps"] * train["global_batch"] * train["response_tokens"] / rows)
        total["optimizer_steps"] += int(train["steps"])
        total["seconds"] += float(train.get("stage_seconds", 0.0))
    total["seconds"] = round(total["seconds"], 1)
    total["score_seconds"] = round(total["score_seconds"], 1)
    return total
