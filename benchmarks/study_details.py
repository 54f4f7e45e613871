"""What happened inside each seed of a `sftadapt run` study, as markdown: stage wall times, the rewrite's
origins, the DART mapper's and direct GRPO's learning curves (first vs second half of the steps), and the
warmed-up target's own pass rate on the training problems (the rewrite's k self samples per problem: the regime
the study runs in, as a histogram, and by the number of steps of synthetic problems). Where the study chose its
problems by that rate (the select stage, `task.select_pool`), the selection's own histograms come first: the
rewrite's samples are drawn afresh, so its histogram is an independent measurement of the chosen problems.

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
    out += self_pass(names, seeds)
    return "\n".join(out) + "\n"


def _self_rates(seed: Path) -> list[tuple[int, int, int | None]]:
    """(correct, samples, steps) per training problem from the rewrite's self shards; steps from the seed's
    expert set where its rows carry them (the synthetic task), else None."""
    steps: dict[str, int] = {}
    for expert in (seed / "data" / "expert.jsonl", seed / "data" / "pool.jsonl"):  # pool: the select stage's
        if not expert.exists():
            continue
        for line in expert.read_text().splitlines():
            row = json.loads(line)
            if isinstance(row.get("meta"), dict) and "steps" in row["meta"]:
                steps[row["id"]] = row["meta"]["steps"]
    rates = []
    for shard in sorted((seed / "rewrite" / "shards" / "self").glob("shard-*.jsonl")):
        for line in shard.read_text().splitlines():
            row = json.loads(line)
            attempts = row["attempts"]
            correct = sum(a.get("verdict") == "correct" for a in attempts)
            rates.append((correct, len(attempts), steps.get(row["problem_id"])))
    return rates


def self_pass(names: list[str], seeds: list[Path]) -> list[str]:
    """The self pass-rate section: per seed, how many problems the target solved c of its k samples of, the
    share whose rate lies in [0.2, 0.6] and the share solved at least once; then the same by steps."""
    out = [
        "",
        "## The target's own pass rate on the training problems",
        "",
        "Per problem: correct / k of the rewrite's self samples (the warmed-up target, before any adaptation).",
        "",
    ]
    for name, s in zip(names, seeds):
        out += _selection(name, s)
        rates = _self_rates(s)
        if not rates:
            continue
        k = max(n for _, n, _ in rates)
        hist = [sum(1 for c, n, _ in rates if c == j and n == k) for j in range(k + 1)]
        middle = sum(1 for c, n, _ in rates if n and 0.2 <= c / n <= 0.6)
        solved = sum(1 for c, _, _ in rates if c > 0)
        out += [
            f"**{name}** ({len(rates)} problems, k = {k}): "
            + ", ".join(f"{j}/{k}: {h}" for j, h in enumerate(hist))
            + f"; pass rate in [0.2, 0.6]: {middle} ({middle / len(rates):.0%}); "
            f"solved at least once: {solved} ({solved / len(rates):.0%}); "
            f"mean pass rate {sum(c for c, _, _ in rates) / sum(n for _, n, _ in rates):.2f}",
            "",
        ]
        by_steps = sorted({st for _, _, st in rates if st is not None})
        if by_steps:
            out += ["| steps | problems | mean pass rate | solved at least once |", "|---|---|---|---|"]
            for st in by_steps:
                rows = [(c, n) for c, n, t in rates if t == st]
                mean = sum(c for c, _ in rows) / sum(n for _, n in rows)
                once = sum(1 for c, _ in rows if c > 0)
                out.append(f"| {st} | {len(rows)} | {mean:.2f} | {once} ({once / len(rows):.0%}) |")
            out.append("")
    return out


def _selection(name: str, seed: Path) -> list[str]:
    """The select stage's record (select/selection.json), where the seed has one."""
    path = seed / "select" / "selection.json"
    if not path.exists():
        return []
    r = json.loads(path.read_text())
    low, high = r["band"]

    def hist(h: dict) -> str:
        return ", ".join(f"{b}: {c}" for b, c in h.items())

    return [
        f"**{name}, selection** ({r['pool']} candidates, k = {r['k']}, band [{low}, {high}]): pool "
        f"{hist(r['pool_histogram'])}; {r['in_band']} in the band; chosen {r['chosen']} "
        f"({hist(r['chosen_histogram'])}; {r['outside_band']} outside the band). The rewrite's samples below "
        "measure the chosen problems again.",
        "",
    ]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/study_details.py RUN_DIR")
    print(details(Path(sys.argv[1])), end="")
