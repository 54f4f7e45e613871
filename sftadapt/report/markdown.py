"""Compare evaluated models side by side: a markdown and a JSON table, deltas against a baseline, PNG plots.

Input: run folders written by `sftadapt eval` (each holds `results.json`). A run is named by its folder name.

- One metric per table (`--metric avg` = avg@n, the papers' headline; or `maj`, `pass@K`), in percent, with
  its 95% bootstrap interval over problems, and a `mean` column = the unweighted mean over the benchmarks
  every run has (the papers' "average"), its interval from resampling each benchmark's problems independently.
- Deltas against `--baseline NAME` with a bootstrap interval of the delta. When two runs scored the same
  problems of a benchmark, the delta is **paired** (problems resampled once, per-problem differences
  averaged, so problem difficulty cancels); otherwise unpaired, and marked so.
- The protocol that produced the numbers is printed above the table. Results of different protocols (hash of
  template, chat, n, temperature, top_p, max new tokens, seed, answer format) are never put in one table:
  `build_report` raises `ReportError` naming the runs and the fields that differ.
- Plots (matplotlib, Agg): `accuracy.png`, the metric per benchmark per run with interval error bars; and
  `gap_vs_accuracy.png`, when at least one run carries a gap record, the mean accuracy against the gap of
  the training set that produced the model.

- `--html` (report_html.py): also `report.html`, one self-contained page with the table, plots, training and
  RL curves found from the runs' model folders, and a browser over every sample and adapted training row.

**The gap record** (`RUN_DIR/gap.json`) says how far the training data were from the target model before
training (docs/methods.md): `{"gap": float, "train_set": str, "n_examples": int, "model": str}` where `gap` is the
mean over training rows of `Example.target_logprob_mean` (each row's mean per-token log-prob of its response
under the *untrained target* given the plain QA prompt; higher = closer to the model). `write_gap(run_dir,
train_file)` computes it from a training set of Examples; `--gap NAME=TRAIN_FILE` does it from the command.

    sftadapt report runs/eval/base runs/eval/dft --baseline base --out runs/report
    sftadapt report runs/eval/* --baseline base --metric maj --gap dft=runs/adapt/dr/train.jsonl --out runs/report
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sftadapt.eval.metrics import DEFAULT_BOOTSTRAP, bootstrap_macro_delta, scores_from_counts

RESULTS = "results.json"
GAP = "gap.json"


class ReportError(ValueError):
    pass


# ---------------------------------------------------------------- inputs
def load_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run folder's results.json (+ gap.json if present), named by the folder."""
    from sftadapt.runtime.paths import path_problem, shown

    why = path_problem(run_dir)  # before exists(): a name over the file system's limit raises there
    if why:
        raise ReportError(f"{shown(run_dir)}: {why}")
    run_dir = Path(run_dir)
    path = run_dir / RESULTS
    if not path.exists():
        raise ReportError(f"{run_dir}: no {RESULTS} (is it an `sftadapt eval` output folder?)")
    results = json.loads(path.read_text())
    for key in ("protocol", "model", "benchmarks"):
        if key not in results:
            raise ReportError(f"{path}: missing '{key}' (not written by `sftadapt eval`?)")
    gap_path = run_dir / GAP
    gap = json.loads(gap_path.read_text()) if gap_path.exists() else None
    return {"name": run_dir.resolve().name, "dir": str(run_dir), "results": results, "gap": gap}


def write_gap(run_dir: str | os.PathLike, train_file: str | os.PathLike, model: str | None = None) -> dict[str, Any]:
    """Write RUN_DIR/gap.json from a training set of Examples (mean of their `target_logprob_mean`)."""
    from sftadapt.data.records import Example, read_records

    rows = read_records(train_file, Example)
    values = [r.target_logprob_mean for r in rows if r.target_logprob_mean is not None]
    if not values:
        raise ReportError(
            f"{train_file}: no row has target_logprob_mean, so its gap is unknown "
            "(adapt stages write it; score the set with the target first)"
        )
    record = {
        "gap": float(np.mean(values)),
        "train_set": str(train_file),
        "n_examples": len(values),
        "model": model or (rows[0].provenance.get("model") if rows[0].provenance else None),
    }
    Path(run_dir, GAP).write_text(json.dumps(record, indent=1))
    return record


def check_same_protocol(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The one protocol record shared by all runs, or ReportError naming who differs and in what."""
    first = runs[0]["results"]["protocol"]
    for run in runs[1:]:
        other = run["results"]["protocol"]
        if other.get("hash") != first.get("hash"):
            fields = sorted(
                k for k in set(first) | set(other) if k not in ("name", "hash") and first.get(k) != other.get(k)
            )
            diff = ", ".join(f"{k}: {first.get(k)!r} vs {other.get(k)!r}" for k in fields)
            raise ReportError(
                f"runs '{runs[0]['name']}' (protocol {first.get('name')} {first.get('hash')}) and '{run['name']}' "
                f"(protocol {other.get('name')} {other.get('hash')}) were evaluated under different protocols "
                f"({diff or 'hash differs'}); their numbers do not belong in one table: report them separately"
            )
    return first


# ---------------------------------------------------------------- the table
def metric_key(metric: str, n: int) -> str:
    if metric in ("avg", "maj"):
        return f"{metric}@{n}"
    if metric.startswith("pass@") and metric[5:].isdigit() and 1 <= int(metric[5:]) <= n:
        return metric
    if metric.startswith("pass@"):
        raise ReportError(f"metric '{metric}': k must be an integer between 1 and n={n}")
    raise ReportError(f"unknown metric '{metric}': use avg, maj or pass@K")


def problem_scores(bench: dict[str, Any], metric: str) -> tuple[list[str], np.ndarray]:
    per = bench.get("per_problem")
    if not per:
        raise ReportError("results.json has no per_problem counts (written by an older sftadapt?)")
    ids = list(per)
    c, n, maj = zip(*(per[i] for i in ids))
    return ids, scores_from_counts(c, n, maj, metric)


def aligned(a: tuple[list[str], np.ndarray], b: tuple[list[str], np.ndarray]):
    """Both score arrays in a common problem order when the problem sets are equal (paired), else as they are."""
    ids_a, sa = a
    ids_b, sb = b
    if set(ids_a) == set(ids_b) and len(ids_a) == len(ids_b):
        order = {pid: k for k, pid in enumerate(ids_b)}
        return sa, sb[[order[pid] for pid in ids_a]], True
    return sa, sb, False


def build_report(
    runs: Sequence[dict[str, Any]],
    baseline: str | None = None,
    metric: str = "avg",
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int | None = None,
) -> dict[str, Any]:
    """The report as a dict (what report.json holds): protocol, metric, benchmarks, one row per run.

    The bootstrap seed defaults to the protocol's, so a run's own intervals match those `sftadapt eval`
    printed (same B, same seed)."""
    if not runs:
        raise ReportError("no runs to report")
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ReportError(f"two runs share a folder name ({names}): runs are named by their folder; rename one")
    protocol = check_same_protocol(runs)
    if baseline is not None and baseline not in names:
        raise ReportError(f"baseline '{baseline}' is not one of the runs: {', '.join(names)}")
    key = metric_key(metric, protocol["n"])
    seed = protocol.get("seed", 0) if seed is None else seed
    benchmarks = list(dict.fromkeys(b for r in runs for b in r["results"]["benchmarks"]))
    common = [b for b in benchmarks if all(b in r["results"]["benchmarks"] for r in runs)]
    scores = {
        r["name"]: {b: problem_scores(r["results"]["benchmarks"][b], metric) for b in r["results"]["benchmarks"]}
        for r in runs
    }
    base = scores.get(baseline) if baseline else None
    rows = []
    for run in runs:
        mine = scores[run["name"]]
        row: dict[str, Any] = {
            "name": run["name"],
            "dir": run["dir"],
            "model": run["results"]["model"],
            "gap": run["gap"],
            "benchmarks": {},
        }
        for b in benchmarks:
            if b not in mine:
                continue
            cell = dict(bootstrap_macro_delta([mine[b][1]], n_boot=n_boot, seed=seed))
            cell["n_problems"] = len(mine[b][0])
            if base is not None and run["name"] != baseline and b in base:
                a, bb, paired = aligned(mine[b], base[b])
                cell["delta"] = {
                    **bootstrap_macro_delta([a], [bb], [paired], n_boot=n_boot, seed=seed),
                    "paired": paired,
                }
            row["benchmarks"][b] = cell
        if common:
            row["mean"] = bootstrap_macro_delta([mine[b][1] for b in common], n_boot=n_boot, seed=seed)
            if base is not None and run["name"] != baseline:
                pairs = [aligned(mine[b], base[b]) for b in common]
                row["mean"]["delta"] = {
                    **bootstrap_macro_delta(
                        [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs], n_boot=n_boot, seed=seed
                    ),
                    "paired": all(p[2] for p in pairs),
                }
        rows.append(row)
    return {
        "protocol": protocol,
        "metric": key,
        "baseline": baseline,
        "benchmarks": benchmarks,
        "mean_over": common,
        "n_boot": n_boot,
        "runs": rows,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "details": {r["name"]: _details(r["results"]) for r in runs},
    }


def _details(results: dict[str, Any]) -> dict[str, Any]:
    """Every metric of every benchmark of a run, minus the per-problem counts."""
    return {b: {k: v for k, v in res.items() if k != "per_problem"} for b, res in results["benchmarks"].items()}


# ---------------------------------------------------------------- rendering
def _pct(cell: dict[str, float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{100 * cell['value']:{sign}.1f} [{100 * cell['lo']:{sign}.1f}, {100 * cell['hi']:{sign}.1f}]"


def protocol_line(protocol: dict[str, Any]) -> str:
    return (
        f"protocol **{protocol['name']}** (hash `{protocol['hash']}`): template `{protocol['template']}`, "
        f"chat template {'on' if protocol['chat'] else 'off'}, n={protocol['n']}, T={protocol['temperature']}, "
        f"top_p={protocol['top_p']}, max_new_tokens={protocol['max_new_tokens']}, seed={protocol['seed']}, "
        f"answers `{protocol['answer_format']}`"
    )


def to_markdown(report: dict[str, Any]) -> str:
    bench = report["benchmarks"]
    has_mean = bool(report["mean_over"]) and len(bench) > 1
    cols = bench + (["mean"] if has_mean else [])
    out = [
        f"# Evaluation report ({report['created']})",
        "",
        f"All numbers below come from one {protocol_line(report['protocol'])}.",
        "",
        f"Metric: **{report['metric']}**, in %, with 95% bootstrap intervals over problems "
        f"(B={report['n_boot']})."
        + (
            f" Deltas are against **{report['baseline']}**: paired over problems "
            "where both runs scored the same problems; † = unpaired (different "
            "problem sets)."
            if report["baseline"]
            else ""
        ),
        "",
    ]
    if has_mean:
        out += [f"`mean` = unweighted mean over {', '.join(report['mean_over'])}.", ""]
    out += ["| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in report["runs"]:
        cells = []
        for col in cols:
            cell = row.get("mean") if col == "mean" else row["benchmarks"].get(col)
            if cell is None:
                cells.append("–")
                continue
            text = _pct(cell)
            if "delta" in cell:
                text += f"<br>Δ {_pct(cell['delta'], signed=True)}" + ("" if cell["delta"]["paired"] else " †")
            cells.append(text)
        label = row["name"] + (" (baseline)" if row["name"] == report["baseline"] else "")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    n = report["protocol"]["n"]
    out += [
        "",
        "## Details",
        "",
        f"| run | benchmark | problems | avg@{n} | pass@{n} | maj@{n} | no_answer | timeout "
        "| error | truncated | tokens/sample |",
        "|---" * 11 + "|",
    ]
    for name, benches in report["details"].items():
        for b, r in benches.items():
            c = r["counts"]
            out.append(
                f"| {name} | {b} | {r['n_problems']} | {_pct(r[f'avg@{n}'])} | {_pct(r[f'pass@{n}'])} "
                f"| {_pct(r[f'maj@{n}'])} | {c['no_answer']} | {c['timeout']} | {c['error']} "
                f"| {r.get('truncated', '–')} | {r.get('mean_tokens', float('nan')):.0f} |"
            )
    gaps = [r for r in report["runs"] if r["gap"]]
    if gaps:
        out += [
            "",
            "## Training-set gap",
            "",
            "| run | gap (mean target log-prob) | training set | rows |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {r['name']} | {r['gap']['gap']:.3f} | {r['gap'].get('train_set')} | {r['gap'].get('n_examples')} |"
            for r in gaps
        ]
    out += ["", "![accuracy per benchmark](accuracy.png)"]
    if any(r["gap"] and r.get("mean") for r in report["runs"]):
        out += ["", "![gap vs accuracy](gap_vs_accuracy.png)"]
    out += ["", "Models:", ""]
    out += [
        f"- {r['name']}: `{r['model'].get('spec')}` (weights {r['model'].get('revision', '?')}), {r['dir']}"
        for r in report["runs"]
    ]
    return "\n".join(out) + "\n"


def plot_accuracy(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = report["benchmarks"] + (["mean"] if report["mean_over"] and len(report["benchmarks"]) > 1 else [])
    runs = report["runs"]
    width = 0.8 / len(runs)
    # about a third of an inch per bar, within a page's width
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.3 * len(bench) * len(runs) + 2)), 4.5))
    x = np.arange(len(bench))
    for k, row in enumerate(runs):
        cells = [row.get("mean") if b == "mean" else row["benchmarks"].get(b) for b in bench]
        val = np.array([100 * c["value"] if c else np.nan for c in cells])
        err = np.array(
            [
                [100 * (c["value"] - c["lo"]) if c else 0 for c in cells],
                [100 * (c["hi"] - c["value"]) if c else 0 for c in cells],
            ]
        )
        ax.bar(x + (k - (len(runs) - 1) / 2) * width, val, width, yerr=err, capsize=3, label=row["name"])
    ax.set_xticks(x, bench)
    ax.set_ylabel(f"{report['metric']} (%)")
    p = report["protocol"]
    ax.set_title(
        f"protocol {p['name']} ({p['hash']}): n={p['n']}, T={p['temperature']}, {p['max_new_tokens']} tokens; 95% CI",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_gap(report: dict[str, Any], path: Path) -> Path | None:
    """Mean accuracy (over the common benchmarks) against the training-set gap, one point per run with a gap."""
    rows = [r for r in report["runs"] if r["gap"] and r.get("mean")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rows:
        m = r["mean"]
        ax.errorbar(
            [r["gap"]["gap"]],
            [100 * m["value"]],
            capsize=3,
            fmt="o",
            yerr=[[100 * (m["value"] - m["lo"])], [100 * (m["hi"] - m["value"])]],
        )
        ax.annotate(
            r["name"], (r["gap"]["gap"], 100 * m["value"]), textcoords="offset points", xytext=(5, 5), fontsize=8
        )
    ax.set_xlabel("training-set gap: mean target log-prob per token (higher = closer)")
    ax.set_ylabel(f"{report['metric']} (%), mean over {len(report['mean_over'])} benchmarks")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    baseline: str | None = None,
    metric: str = "avg",
    gaps: dict[str, str] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
) -> dict[str, Any]:
    """Load the runs, (optionally) write gap.json files, build the report, write report.md/json and plots."""
    by_name = {Path(d).resolve().name: d for d in run_dirs}
    for name, train_file in (gaps or {}).items():
        if name not in by_name:
            raise ReportError(f"--gap {name}=...: '{name}' is not one of the runs: {', '.join(by_name)}")
        write_gap(by_name[name], train_file)
    runs = [load_run(d) for d in run_dirs]
    rep = build_report(runs, baseline=baseline, metric=metric, n_boot=n_boot)
    out_dir = Path(out_dir)
    from sftadapt.runtime.outdir import claim

    claim(out_dir, "report", force_option=None)  # `sftadapt report` has no --force
    rep["files"] = {
        "markdown": str(out_dir / "report.md"),
        "accuracy_plot": str(plot_accuracy(rep, out_dir / "accuracy.png")),
    }
    gap_plot = plot_gap(rep, out_dir / "gap_vs_accuracy.png")
    if gap_plot:
        rep["files"]["gap_plot"] = str(gap_plot)
    (out_dir / "report.md").write_text(to_markdown(rep))
    (out_dir / "report.json").write_text(json.dumps(rep, indent=1))
    return rep
