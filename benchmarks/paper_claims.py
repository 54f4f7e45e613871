"""Each published claim of the two papers the study tests, against what one study measured, as a markdown table.

    python benchmarks/paper_claims.py RUN/report/study.json [--out FILE.md]

(the report folder, or the run folder holding it, may be given instead of the file). It reads only the study.json
that `sftadapt run` or `sftadapt pool` writes (sftadapt/report/study.py `write_study_report`): no torch, no models.

A claim is "arm beats reference" (or, for claim 6, "arm is below reference"). Its delta, arm minus reference in
points of the study's metric, comes from the study: against `base`, the arm's `mean` cell (paired delta against
base, with one delta per benchmark beside it); against another arm, the `contrasts` entry of that pair, or of the
reversed pair, negated with its interval swapped (contrasts hold the mean over benchmarks only). The verdict reads
the 95% interval alone:

- **reproduced**: the interval excludes 0 on the side the paper claims;
- **reversed**: the interval excludes 0 on the other side;
- **undecided**: the interval contains 0 (an interval of exactly [0, 0] too): the study cannot tell the sign,
  which is not evidence of no difference;
- not in this study: one of the two arms did not run, or the study holds no paired delta for the pair.

With several seeds the interval is the study's hierarchical bootstrap (seeds, then problems); with one seed it is
over problems only, so it says nothing of what another seed (data draw, sampling, training seed) would move.
The papers' numbers, where they exist, are avg@16 at T=1 on their own models and benchmarks; compare directions,
not sizes, unless the study ran that protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sftadapt import arms as arm_table

MIND_THE_GAP = "Mind the Gap"
DART = "DART (arXiv 2605.26924; claimed without numbers available to us)"
# claim 11's reference: resolved per study to the direct-RL arm with the largest budget (`largest_direct_rl`)
LARGEST_DIRECT_RL = "direct_rl (largest budget)"

# Mind the Gap's avg@16 at T=1 (%), per model and arm: the claims' reference numbers
PAPER_AVG16: dict[str, dict[str, float]] = {
    "Qwen2.5-Math-7B": {"base": 21.67, "sft": 23.23, "dft": 36.61, "dr_sft": 30.33, "dr_dft": 42.03},
    "Llama-3.1-8B-Instruct": {"base": 15.41, "sft": 11.39, "dft": 22.54, "dr_sft": 19.14, "dr_dft": 24.05},
}


class Claim(NamedTuple):
    number: int
    text: str
    source: str
    arm: str
    reference: str  # `base`, another arm, or LARGEST_DIRECT_RL
    sign: int  # +1: the paper says arm > reference; -1: arm < reference


CLAIMS: tuple[Claim, ...] = (
    Claim(1, "rewriting the expert set helps: DR+SFT beats SFT (both models)", MIND_THE_GAP, "dr_sft", "sft", +1),
    Claim(2, "DR+SFT beats the untrained model (both models)", MIND_THE_GAP, "dr_sft", "base", +1),
    Claim(3, "DFT beats SFT on the expert set (both models)", MIND_THE_GAP, "dft", "sft", +1),
    Claim(4, "DR+DFT, the paper's best arm, beats DR+SFT (both models)", MIND_THE_GAP, "dr_dft", "dr_sft", +1),
    Claim(5, "DR+DFT beats the untrained model", MIND_THE_GAP, "dr_dft", "base", +1),
    Claim(
        6,
        "SFT on a mismatched expert set lowers the model (the Llama direction; on Qwen2.5-Math-7B SFT goes up)",
        MIND_THE_GAP,
        "sft",
        "base",
        -1,
    ),
    Claim(
        7,
        "importance-weighted SFT corrects the rewritten set's off-policy rows: DR+IS beats DR+SFT",
        "Mind the Gap (the correction it applies; SPEC section 2)",
        "dr_is",
        "dr_sft",
        +1,
    ),
    Claim(8, "better generalisation than SFT: DART+SFT beats SFT", DART, "dart_sft", "sft", +1),
    Claim(
        9,
        "the RL-trained mapper is what helps: DART+SFT beats the untrained mapper's set",
        DART,
        "dart_sft",
        "pr_sft",
        +1,
    ),
    Claim(10, "DART+SFT beats SDFT's prompted rewrite", DART, "dart_sft", "sdft_sft", +1),
    Claim(
        11,
        "higher training efficiency than direct RL: DART+SFT beats direct RL on the target",
        DART,
        "dart_sft",
        LARGEST_DIRECT_RL,
        +1,
    ),
)

# the compute shown beside claim 11, as study.py's arm_compute names it
COMPUTE_KEYS = (
    ("tokens_generated", "tokens generated"),
    ("tokens_scored", "tokens scored"),
    ("tokens_trained", "tokens trained"),
    ("optimizer_steps", "optimizer steps"),
    ("seconds", "wall s"),
)


class Row(NamedTuple):
    claim: Claim
    reference: str | None  # the arm compared against (claim 11: the direct-RL arm picked), None if there is none
    verdict: str | None  # reproduced | reversed | undecided; None when the study cannot answer
    delta: str  # "+26.0 [+20.0, +32.5]" (points), or "–"
    per_benchmark: dict[str, str]  # benchmark -> delta as above, "–" where the study holds none
    note: str


def largest_direct_rl(arms: Sequence[str]) -> str | None:
    """The direct-RL arm with the largest budget: plain `direct_rl` when it ran (its budget is the config's
    `grpo.max_steps`, which study.json does not record, so no `direct_rl@N` can be shown to exceed it), else the
    `direct_rl@N` of largest N."""
    if arm_table.DIRECT_RL in arms:
        return arm_table.DIRECT_RL
    budgets = [(steps, name) for name in arms if (steps := arm_table.direct_rl_steps(name)) is not None]
    return max(budgets)[1] if budgets else None


def points(value: float) -> str:
    """A fraction as signed points, one decimal; + 0.0 keeps a rounded -0.0 from printing as "-0.0"."""
    return f"{round(100 * value, 1) + 0.0:+.1f}"


def format_delta(delta: float | None, ci: Sequence[float] | None) -> str:
    if delta is None:
        return "–"
    return points(delta) + (f" [{points(ci[0])}, {points(ci[1])}]" if ci else "")


def verdict(ci: Sequence[float] | None, sign: int) -> str:
    """reproduced / reversed when the 95% interval excludes 0 on the claimed / the other side, else undecided."""
    if not ci:  # a delta without an interval cannot tell its sign from noise
        return "undecided"
    lo, hi = ci
    side = 1 if lo > 0 else -1 if hi < 0 else 0
    if side == 0:
        return "undecided"
    return "reproduced" if side == sign else "reversed"


def find_delta(study: dict[str, Any], arm: str, reference: str) -> tuple[float, list[float] | None, dict] | None:
    """(delta, interval, {benchmark: cell}) of arm minus reference, or None when the study holds no paired delta.
    The cells are the per-benchmark cells against base; a contrast has none (only its mean over benchmarks)."""
    entries = {a["arm"]: a for a in study["arms"]}
    if reference == "base":
        cells = entries[arm]["benchmarks"]
        mean = cells.get("mean") or {}
        if mean.get("delta") is None:
            return None
        return mean["delta"], mean.get("delta_ci"), {b: cells.get(b) for b in study.get("benchmarks", [])}
    for c in study.get("contrasts") or []:
        if (c["arm"], c["reference"]) == (arm, reference):
            return c["delta"], c.get("delta_ci"), {}
    for c in study.get("contrasts") or []:
        if (c["arm"], c["reference"]) == (reference, arm):  # reference minus arm: negate, the interval swaps ends
            ci = c.get("delta_ci")
            return -c["delta"], [-ci[1], -ci[0]] if ci else None, {}
    return None


def label(study: dict[str, Any], arm: str) -> str:
    return next((a["label"] for a in study["arms"] if a["arm"] == arm), arm_table.ARM_LABELS[arm])


def compute_text(study: dict[str, Any], arm: str) -> str:
    entry = next((a for a in study["arms"] if a["arm"] == arm), None)
    if entry is None:
        return f"{arm_table.ARM_LABELS[arm]}: did not run"
    comp = entry.get("compute") or {}
    parts = [f"{comp[key]:,.0f} {name}" for key, name in COMPUTE_KEYS if comp.get(key) is not None]
    return f"{label(study, arm)}: " + (", ".join(parts) if parts else "no compute recorded")


def evaluate(study: dict[str, Any]) -> list[Row]:
    """One row per claim of CLAIMS, in order."""
    ran = [a["arm"] for a in study["arms"]]
    benchmarks = study.get("benchmarks", [])
    rows = []
    for claim in CLAIMS:
        ref = largest_direct_rl(ran) if claim.reference == LARGEST_DIRECT_RL else claim.reference
        notes = []
        if claim.reference == LARGEST_DIRECT_RL:
            notes.append("; ".join(compute_text(study, a) for a in (claim.arm, ref or arm_table.DIRECT_RL)))
        missing = [a for a in (claim.arm, ref) if a is not None and a not in ran]
        found = None
        if ref is None:
            notes.insert(0, "no direct-RL arm in this study")
        elif missing:
            notes.insert(0, f"{', '.join(missing)} did not run")
        else:
            found = find_delta(study, claim.arm, ref)
            if found is None:
                # a pair outside arms.CONTRASTS, or a study written before the pair joined it (`sftadapt pool`
                # on its seeds writes the study again with today's pairs)
                notes.insert(0, f"no paired delta of {claim.arm} against {ref} in this study")
        if found is None:
            rows.append(Row(claim, ref, None, "–", dict.fromkeys(benchmarks, "–"), "; ".join(notes)))
            continue
        delta, ci, cells = found
        per_benchmark = {
            b: format_delta(c["delta"], c.get("delta_ci")) if (c := cells.get(b)) else "–" for b in benchmarks
        }
        rows.append(Row(claim, ref, verdict(ci, claim.sign), format_delta(delta, ci), per_benchmark, "; ".join(notes)))
    return rows


def paper_numbers(arm: str, reference: str) -> str:
    """Mind the Gap's avg@16 (T=1) of both arms and their difference, per model that reports both."""
    found = [
        f"{model} {nums[arm]:.2f} vs {nums[reference]:.2f} ({nums[arm] - nums[reference]:+.2f})"
        for model, nums in PAPER_AVG16.items()
        if arm in nums and reference in nums
    ]
    return "; ".join(found) or "–"


def to_markdown(study: dict[str, Any], rows: Sequence[Row]) -> str:
    p = study.get("protocol") or {}
    seeds = study.get("seeds") or []
    benchmarks = study.get("benchmarks", [])
    spread = (
        "95% bootstrap interval over problems only (one seed: what another seed would move is not in it)"
        if len(seeds) == 1
        else f"95% hierarchical bootstrap interval over {len(seeds)} seeds, then problems"
    )
    lines = [
        f"# The papers' claims in study `{study.get('name', '?')}`",
        "",
        f"Metric {study.get('metric', '?')} (protocol `{p.get('name', '?')}`: n={p.get('n', '?')}, "
        f"T={p.get('temperature', '?')}); Δ = arm − reference in points of the mean over benchmarks, {spread}. "
        "**reproduced**: the interval excludes 0 on the claimed side; **reversed**: on the other side; "
        "**undecided**: it contains 0. Paper: Mind the Gap's avg@16 at T=1 on its own models, for direction.",
        "",
        "| # | claim | source | expected | verdict | Δ mean [95%] | "
        + " | ".join(f"Δ {b}" for b in benchmarks)
        + " | seeds | paper | notes |",
        "|---|---|---|---|---|---|" + "---|" * len(benchmarks) + "---|---|---|",
    ]
    for row in rows:
        c = row.claim
        ref = row.reference or LARGEST_DIRECT_RL
        ref_label = label(study, ref) if row.reference else ref
        expected = f"{label(study, c.arm)} {'>' if c.sign > 0 else '<'} {ref_label}"
        lines.append(
            f"| {c.number} | {c.text} | {c.source} | {expected} | "
            + (f"**{row.verdict}**" if row.verdict else "not in this study")
            + f" | {row.delta} | "
            + "".join(f"{row.per_benchmark[b]} | " for b in benchmarks)
            + f"{len(seeds)} | {paper_numbers(c.arm, ref)} | {row.note or '–'} |"
        )
    return "\n".join(lines) + "\n"


def study_path(path: Path) -> Path:
    """study.json itself, or the one in a report folder, or in a run folder's report/."""
    for candidate in (path, path / "study.json", path / "report" / "study.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no study.json at {path}, {path / 'study.json'} or {path / 'report' / 'study.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="RUN/report/study.json, or the report folder holding it")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    try:
        path = study_path(args.study)
    except FileNotFoundError as err:
        parser.error(str(err))
    study = json.loads(path.read_text())
    md = to_markdown(study, evaluate(study))
    sys.stdout.write(md)
    if args.out:
        args.out.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
