"""What happened inside each seed of a `sftadapt run` study, as markdown: stage wall times, the rewrite's
origins, the DART mapper's and direct GRPO's learning curves (first vs second half of the steps).

    python benchmarks/study_details.py RUN_DIR > details.md

Reads only the files the stages wrote (stage.json, rl_log.jsonl); the accuracy table is the study's own
report (RUN_DIR/report/study.md).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _result(folder: Path) -> dict:
    path = folder / "stage.json"
    return json.loads(path.read_text()).get("result", {}) if path.exists() else {}


def _halves(log: Path, key: str) -> str:
    if not log.exists():
        return "–"
    values = [row[key] for row in map(json.loads, log.read_text().splitlines()) if row.get(key) is not None]
    if len(values) < 2:
        return "–"
    half = len(values) // 2
    return f"{statistics.fmean(values[:half]):.2f} → {statistics.fmean(values[half:]):.2f}"


def seed_dirs(run: Path) -> list[tuple[int, Path]]:
    """(seed, folder) of each seed: seed-<s>/ of a multi-seed run, or the run itself when it ran one seed."""
    found = sorted((int(d.name.split("-", 1)[1]), d) for d in run.glob("seed-*") if d.is_dir())
    if found:
        return found
    return [(int(json.loads((run / "run_config.json").read_text())["seeds"][0]), run)]


def details(run: Path) -> str:
    found = seed_dirs(run)
    seeds = [d for _, d in found]
    names = [f"seed {s}" for s, _ in found]
    stages = sorted(
        {p.parent.name for s in seeds for p in s.glob("*/stage.json")},
        key=lambda n: min((s / n / "stage.json").stat().st_mtime for s in seeds if (s / n / "stage.json").exists()),
    )
    out = [
        "## Wall time per stage (s)",
        "",
        "| stage | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    totals = [0.0] * len(seeds)
    for name in stages:
        cells = []
        for k, s in enumerate(seeds):
            sec = _result(s / name).get("stage_seconds")
            totals[k] += sec or 0.0
            cells.append("–" if sec is None else f"{sec:.0f}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("| **total** | " + " | ".join(f"**{t:.0f}** ({t / 60:.0f} min)" for t in totals) + " |")

    out += [
        "",
        "## Adaptation per seed",
        "",
        "Rows of each adapted set by origin (self / guided for Mind the Gap, rewrite for SDFT, mapper for DART, "
        "Patch and the prompted rewrite; expert = fallback), the set's gap (mean target log-prob per token), and "
        "for RL stages the gate pass rate (direct RL: accuracy) first half -> second half of the steps.",
        "",
        "| seed | set | rows by origin | gap (expert set -> this set) | RL 1st -> 2nd half |",
        "|---|---|---|---|---|",
    ]
    sets = (
        ("rewrite", "Mind the Gap", None),
        ("sdft", "SDFT (one rewrite)", None),
        ("mapper", "DART", "mapper_train"),
        ("prompted", "PR best-of-k", None),
        ("mapper_patch", "Patch", "mapper_train_patch"),
    )
    for name, s in zip(names, seeds):
        for stage, label, rl in sets:
            res = _result(s / stage)
            if not res:
                continue
            origins = " / ".join(
                f"{k} {v.get('rows', 0) if isinstance(v, dict) else v}" for k, v in res.get("origins", {}).items()
            )
            gap = res.get("gap", {})
            curve = _halves(s / rl / "rl_log.jsonl", "gate_pass_rate") if rl else "–"
            out.append(
                f"| {name} | {label} | {origins} | {gap.get('expert_set', float('nan')):.3f} -> "
                f"{gap.get('final_set', float('nan')):.3f} | {curve} |"
            )
        if (s / "direct_rl" / "rl_log.jsonl").exists():
            out.append(f"| {name} | direct RL | – | – | {_halves(s / 'direct_rl' / 'rl_log.jsonl', 'accuracy')} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/study_details.py RUN_DIR")
    print(details(Path(sys.argv[1])), end="")
