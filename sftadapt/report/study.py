"""The end of `sftadapt run`: one table per study with accuracy, the gap of each training set, and compute.

Per seed, the eval folders of every arm go through `report.report` (same protocol enforced, paired deltas
against the base arm, plots). Across seeds (`pooled_cells`), every seed scores the same test problems: an arm's
accuracy is the mean over seeds and problems, and its 95% interval a hierarchical bootstrap (eval/metrics.py
`hierarchical_bootstrap`): seeds are resampled, then problems, so the interval holds both what a re-run with
another seed (new data draw, sampling, training seed) moves and what another test set would. The delta against
base is paired within seeds and problems: seed s of the arm against seed s of base (they share that seed's
warm-up and data), problem against problem. The sd of the per-seed accuracies is shown beside it. With one seed
there is no seed level and the cells equal the per-seed report's.

Besides study.json and study.md, `study.html` (report_html.py): the same table with every plot, the training and
RL curves and a browser over every eval sample and adapted training row, in one self-contained page.

Gap (docs/methods.md): the mean per-token log-prob of a training set's responses under the target with the plain QA
prompt (higher = closer to the target). Compute per arm: what producing that arm cost beyond the shared
warm-up: adaptation (tokens generated and scored), training (optimiser steps, response tokens trained), wall
time. Arms that share an adaptation (DR+SFT/DFT/IS share one rewrite) are each charged its full cost.

RL learning signal (report/rl_signal.py), last in study.md: per GRPO run and seed, whether any group of rollouts
had unequal rewards (else every advantage was zero and the run did not move its model), read from rl_log.jsonl.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sftadapt import arms as arm_table
from sftadapt.eval.metrics import describe_delta
from sftadapt.report.compute import arm_compute, arm_gap
from sftadapt.report.rl_signal import markdown_lines, study_signals


def _arm_scores(eval_dir: Path, metric: str) -> dict[str, tuple[list[str], np.ndarray]]:
    from sftadapt.report.markdown import load_run, problem_scores

    return {b: problem_scores(bench, metric) for b, bench in load_run(eval_dir)["results"]["benchmarks"].items()}


def seed_matrix(
    per_seed: Sequence[tuple[list[str], np.ndarray]], ids: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Seeds × problems scores on the problems every seed scored (in the first seed's order, or `ids`')."""
    maps = [dict(zip(pids, scores)) for pids, scores in per_seed]
    ids = [pid for pid in (ids if ids is not None else per_seed[0][0]) if all(pid in m for m in maps)]
    if not ids:
        raise ValueError("the seeds share no scored problem: were they evaluated on different test sets?")
    return ids, np.array([[float(m[pid]) for pid in ids] for m in maps])


def seed_averaged(per_seed: Sequence[tuple[list[str], np.ndarray]]) -> tuple[list[str], np.ndarray]:
    """Each problem's score averaged over seeds, on the problems every seed scored (in the first seed's order)."""
    ids, matrix = seed_matrix(per_seed)
    return ids, matrix.mean(axis=0)


def paired_matrices(
    arm: Sequence[tuple[list[str], np.ndarray]], base: Sequence[tuple[list[str], np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """The arm's and base's seeds × problems matrices on the problems both scored in every seed, same column
    order; row s of each is seed s (the study lists both arms' seeds in one order)."""
    if len(arm) != len(base):
        raise ValueError(f"the arm has {len(arm)} seeds and base {len(base)}: a paired delta needs the same seeds")
    ids, base_matrix = seed_matrix(base, seed_matrix(arm)[0])
    return seed_matrix(arm, ids)[1], base_matrix


def pooled_cells(
    arm: dict[str, list[tuple[list[str], np.ndarray]]],
    base: dict[str, list[tuple[list[str], np.ndarray]]] | None = None,
    n_boot: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """One cell per benchmark and a `mean` cell (unweighted over benchmarks) for an arm scored by several seeds:
    {benchmark: [(problem ids, per-problem scores) per seed]} -> mean over seeds with a bootstrap interval over
    problems, sd and values per seed, and (given the base arm's scores) the paired delta with its interval, both
    from the hierarchical bootstrap (seeds, then problems)."""
    from sftadapt.eval.metrics import DEFAULT_BOOTSTRAP, hierarchical_bootstrap

    n_boot = n_boot or DEFAULT_BOOTSTRAP
    matrices = {b: seed_matrix(runs)[1] for b, runs in arm.items()}
    pairs = {b: paired_matrices(arm[b], base[b]) for b in arm} if base else {}
    per_seed = {b: [float(np.mean(sc)) for _, sc in runs] for b, runs in arm.items()}
    per_seed["mean"] = [statistics.fmean(vals) for vals in zip(*per_seed.values())]
    cells: dict[str, dict[str, Any]] = {}
    for name, bench in [(b, [b]) for b in arm] + [("mean", list(arm))]:
        est = hierarchical_bootstrap([matrices[b] for b in bench], n_boot=n_boot, seed=seed)
        cell = {
            "mean": est["value"],
            "ci": [est["lo"], est["hi"]],
            "per_seed": per_seed[name],
            "sd": statistics.stdev(per_seed[name]) if len(per_seed[name]) > 1 else None,
            "delta": None,
            "delta_ci": None,
        }
        if pairs:
            d = hierarchical_bootstrap(
                [pairs[b][0] for b in bench], [pairs[b][1] for b in bench], n_boot=n_boot, seed=seed
            )
            cell.update(delta=d["value"], delta_ci=[d["lo"], d["hi"]])
        cells[name] = cell
    return cells


def write_study_report(cfg, per_seed: dict[int, dict[str, Any]], out: Path) -> dict[str, Any]:
    from sftadapt.report.markdown import report

    out.mkdir(parents=True, exist_ok=True)
    metric = cfg.report.get("metric", "avg")
    seeds: dict[int, dict[str, Any]] = {}
    for seed, res in per_seed.items():
        stages = res["stages"]
        arms = list(res["models"])
        for arm in arms:
            gap = arm_gap(arm, stages.results)
            if gap is not None:
                (stages.root / f"eval_{arm}" / "gap.json").write_text(
                    json.dumps(
                        {
                            "gap": gap,
                            "train_set": arm_table.TRAINED_ARMS[arm][0] if arm in arm_table.TRAINED_ARMS else None,
                            "model": res["paths"].get("warmup") or cfg.model,
                        }
                    )
                )
        rep = report(
            [stages.root / f"eval_{a}" for a in arms], out / f"seed-{seed}", baseline="eval_base", metric=metric
        )
        rows = {r["name"].removeprefix("eval_"): r for r in rep["runs"]}
        seeds[seed] = {
            "report": rep,
            "rows": rows,
            "compute": {a: arm_compute(a, stages.root, stages.results) for a in arms},
            "warmup": stages.results.get("warmup"),
            "stages_run": list(stages.ran),
        }
    first = next(iter(seeds.values()))
    benchmarks = first["report"]["benchmarks"]
    n_boot, boot_seed = first["report"]["n_boot"], first["report"]["protocol"].get("seed", 0)
    scores = {
        arm: {s: _arm_scores(per_seed[s]["stages"].root / f"eval_{arm}", metric) for s in seeds}
        for arm in first["rows"]
    }
    table = []
    for arm in first["rows"]:
        entry: dict[str, Any] = {"arm": arm, "label": arm_table.ARM_LABELS.get(arm, arm)}
        base = scores["base"] if arm != "base" and "base" in scores else None
        entry["benchmarks"] = pooled_cells(
            {b: [scores[arm][s][b] for s in seeds] for b in benchmarks},
            {b: [base[s][b] for s in seeds] for b in benchmarks} if base else None,
            n_boot=n_boot,
            seed=boot_seed,
        )
        gaps = [s["rows"][arm]["gap"]["gap"] for s in seeds.values() if s["rows"][arm].get("gap")]
        entry["gap"] = statistics.fmean(gaps) if gaps else None
        comps = [s["compute"][arm] for s in seeds.values()]
        entry["compute"] = {k: statistics.fmean(c[k] for c in comps) for k in comps[0]}
        table.append(entry)
    contrasts = []
    for arm, ref, question in arm_table.CONTRASTS:
        if arm in scores and ref in scores:
            cell = pooled_cells(
                {b: [scores[arm][s][b] for s in seeds] for b in benchmarks},
                {b: [scores[ref][s][b] for s in seeds] for b in benchmarks},
                n_boot=n_boot,
                seed=boot_seed,
            )["mean"]
            contrasts.append(
                {
                    "arm": arm,
                    "reference": ref,
                    "question": question,
                    "delta": cell["delta"],
                    "delta_ci": cell["delta_ci"],
                }
            )
    study = {
        "name": cfg.name,
        "protocol": first["report"]["protocol"],
        "metric": first["report"]["metric"],
        "seeds": list(seeds),
        "benchmarks": benchmarks,
        "arms": table,
        "contrasts": contrasts,
        "warmup": {s: v["warmup"] for s, v in seeds.items()},
        "stages_run": {s: v["stages_run"] for s, v in seeds.items()},
        "plots": {s: v["report"]["files"] for s, v in seeds.items()},
        "rl_signal": study_signals({s: per_seed[s]["stages"].root for s in seeds}, list(first["rows"])),
    }
    (out / "study.json").write_text(json.dumps(study, indent=1, default=str))
    md = to_markdown(study)
    (out / "study.md").write_text(md)
    study["markdown"] = md
    study["markdown_path"] = str(out / "study.md")
    study["html_path"] = write_html(
        study, {s: per_seed[s]["stages"].root for s in seeds}, out, cfg.report.get("html_samples")
    )
    return study


def write_html(
    study: dict[str, Any], seed_roots: dict[int, Path], out: Path, max_samples: int | None = None
) -> str | None:
    """`study.html` beside study.md (report_html.py). The viewer is no reason to fail a finished study: if it
    cannot be built, one line says why and the run goes on (study.json and study.md are already written)."""
    from sftadapt.report.html import MAX_SAMPLES, write_study_html

    try:
        return str(write_study_html(study, seed_roots, out, max_samples or MAX_SAMPLES))
    except Exception as err:  # noqa: BLE001
        print(f"[report] study.html not written: {type(err).__name__}: {err}", flush=True)
        return None


def _cell(c: dict[str, Any] | None) -> str:
    if not c:
        return "–"
    text = f"{100 * c['mean']:.1f} [{100 * c['ci'][0]:.1f}, {100 * c['ci'][1]:.1f}]"
    if c["sd"] is not None:
        text += f" sd {100 * c['sd']:.1f}"
    return text


def _delta(c: dict[str, Any] | None) -> str:
    if not c or c["delta"] is None:
        return "–"
    text = f"{100 * c['delta']:+.1f}"
    if c["delta_ci"]:
        text += f" [{100 * c['delta_ci'][0]:+.1f}, {100 * c['delta_ci'][1]:+.1f}]"
    return text


def to_markdown(study: dict[str, Any]) -> str:
    p = study["protocol"]
    n_seeds = len(study["seeds"])
    spread = (
        "95% bootstrap interval over problems"
        if n_seeds == 1
        else f"mean over {n_seeds} seeds (seeds {', '.join(map(str, study['seeds']))}) [95% hierarchical bootstrap "
        "interval: seeds resampled, then problems] and the sd of the per-seed accuracies; Δ paired within "
        "seeds and problems. A Δ interval that holds 0 means no detectable difference, not no difference"
    )
    lines = [
        f"# {study['name']}: {study['metric']} (%) per arm",
        "",
        f"Protocol `{p['name']}` ({p['hash']}): n={p['n']}, T={p['temperature']}, top_p={p['top_p']}, "
        f"{p['max_new_tokens']} new tokens, chat={p['chat']}, seed={p['seed']}. Cells: {spread}. "
        "Gap: mean target log-prob per token of the arm's training set (higher = closer to the target).",
        "",
        "| arm | gap | " + " | ".join(study["benchmarks"]) + " | mean | Δ mean vs base |",
        "|---|---|" + "---|" * len(study["benchmarks"]) + "---|---|",
    ]
    for a in study["arms"]:
        b = a["benchmarks"]
        gap = "–" if a["gap"] is None else f"{a['gap']:.3f}"
        lines.append(
            f"| {a['label']} | {gap} | "
            + " | ".join(_cell(b.get(x)) for x in study["benchmarks"])
            + f" | {_cell(b.get('mean'))} | {_delta(b.get('mean'))} |"
        )
    readings = [
        f"- {a['label']}: {describe_delta(c['delta'], *c['delta_ci'])}"
        for a in study["arms"]
        if (c := a["benchmarks"].get("mean")) and c.get("delta") is not None and c.get("delta_ci")
    ]
    if readings:
        lines += ["", "Mean over benchmarks against base, in words:", "", *readings]
    labels = {a["arm"]: a["label"] for a in study["arms"]}
    if study.get("contrasts"):
        lines += [
            "",
            "## Arm against arm (mean over benchmarks, paired on seeds and problems)",
            "",
            "| question | arm | against | Δ mean | in words |",
            "|---|---|---|---|---|",
        ]
        for c in study["contrasts"]:
            lines.append(
                f"| {c['question']} | {labels[c['arm']]} | {labels[c['reference']]} | {_delta(c)} | "
                f"{describe_delta(c['delta'], *c['delta_ci'])} |"
            )
    lines += [
        "",
        "## Compute per arm (beyond the shared warm-up)",
        "",
        "| arm | tokens generated | tokens scored | tokens trained | optimizer steps | wall s | scoring s |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in study["arms"]:
        c = a["compute"]
        lines.append(
            f"| {a['label']} | {c['tokens_generated']:.0f} | {c['tokens_scored']:.0f} | "
            f"{c['tokens_trained']:.0f} | {c['optimizer_steps']:.0f} | {c['seconds']:.0f} | "
            f"{c.get('score_seconds', 0):.0f} |"
        )
    lines += [
        "",
        "tokens trained: response tokens through the SFT loss, plus, for GRPO (direct RL, and the mapper "
        "RL of DART and Patch), the prompt + completion tokens through the policy. scoring s: seconds the frozen target "
        "spent scoring (part of wall s). Arms sharing an adaptation are each charged its full cost.",
    ]
    # last, so that `sftadapt run` prints it right above its closing lines (report/rl_signal.py)
    lines += markdown_lines(study.get("rl_signal") or [])
    return "\n".join(lines) + "\n"
