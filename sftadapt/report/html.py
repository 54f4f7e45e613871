"""One self-contained HTML page per report: the table, the plots, and a browser over every sample and training row.

`sftadapt report --html` writes `OUT/report.html` beside report.md; `sftadapt run` writes `RUN/report/study.html`
beside study.md. The page needs no network (no CDN, no web fonts): the CSS and the small vanilla script in
`sftadapt/report/assets/` are inlined, the plots are inline SVG (svgplot.py), and the data the browser filters
are one JSON block in the page.

What it shows, and where each part is read from (the layout the stages write):
- the table: the study's cells (pooled over seeds, with intervals, sd and Δ vs base) or, for `sftadapt report`,
  the per-run cells of `report.build_report`;
- gap vs accuracy (each arm's training-set gap), compute vs accuracy (wall seconds and tokens per arm, as
  `report.compute.arm_compute` counts them);
- training-loss curves per arm: `train_log.jsonl` of the folder each eval run's model came from (the base arm's
  model is the warm-up, so its curve is the warm-up SFT);
- RL curves: `rl_log.jsonl` of direct GRPO (the model folder itself) and of the DART mapper (found through the
  adapted set's `summary.json`, which names the mapper folder): reward, gate pass rate, the rate of each gate
  reason, rollout accuracy;
- samples: every eval `Attempt` (`<eval>/<benchmark>/attempts.jsonl`) with its problem text and gold answer,
  joined once per benchmark from the benchmark's own problems (`sources.load_benchmark` with the run's `limit`,
  by problem id), so the eval stage need not copy them into every row;
- adapted sets: each `train.jsonl` an arm trained on that an adapt stage wrote (a folder with `summary.json`):
  every row's origin, gap (`target_logprob_mean`), pass rate, response and all its attempts with verdicts and
  gate or refusal reasons.

Everything from data or model output is hostile input: the server-side markup escapes it (html.escape), the JSON
block escapes `<`, `>`, `&` and U+2028/U+2029 so no `</script>` can close it, the script only ever writes text
with `textContent`, and a Content-Security-Policy allows exactly the one inline script and style (by hash), no
other script, no network. A page may get large on a big study: samples are capped per run and benchmark
(`max_samples`, whole problems kept; the page says when it cut).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from sftadapt.report.svgplot import PALETTE, Point, Series, line_chart, scatter

ASSETS = Path(__file__).resolve().parent / "assets"
MAX_SAMPLES = 400  # eval samples kept per run and benchmark (whole problems); the page notes any cut
MAX_ADAPTED_ROWS = 2000  # rows kept per adapted set
VERDICTS = ("correct", "wrong", "no_answer", "timeout", "error")


@dataclass
class RunRef:
    """One evaluated model on the page: `key` is unique (arm, and the seed when there are several)."""

    key: str
    label: str
    arm: str
    seed: int | None
    eval_dir: Path


# ---------------------------------------------------------------- small readers
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a JSONL file; unreadable lines are skipped (a viewer must not die on one bad line)."""
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    return rows


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


# ---------------------------------------------------------------- where each run's inputs are
def model_dir(results: dict[str, Any]) -> Path | None:
    """The folder the evaluated model was loaded from, when it is a folder on this machine."""
    model = results.get("model") or {}
    for key in ("path", "spec"):
        value = model.get(key)
        if value and Path(value).is_dir():
            return Path(value)
    return None


def discover(results: dict[str, Any]) -> dict[str, Any]:
    """The training log, RL logs and adapted sets behind one evaluated model (any that exist)."""
    found: dict[str, Any] = {"train_log": None, "rl_logs": [], "adapted": []}
    folder = model_dir(results)
    if folder is None:
        return found
    if (folder / "train_log.jsonl").exists():
        found["train_log"] = folder / "train_log.jsonl"
    if (folder / "rl_log.jsonl").exists():
        found["rl_logs"].append(
            ("direct RL" if folder.name.startswith("direct_rl") else folder.name, folder / "rl_log.jsonl")
        )
    config = (_read_json(folder / "train_config.json") or {}).get("config") or {}
    for data in config.get("data") or []:
        data = Path(data)
        summary = _read_json(data.parent / "summary.json")
        if summary is None:
            continue  # the expert set itself: no adapt stage wrote it
        found["adapted"].append((data.parent.name, data))
        mapper = Path(((summary.get("mapper") or {}).get("path")) or "")
        if str(mapper) not in ("", ".") and (mapper / "rl_log.jsonl").exists():
            # the Patch arm's mapper is trained like DART's, with reward kind patch: its own curve, its own name
            kind = ((_read_json(mapper / "rl_config.json") or {}).get("reward") or {}).get("kind")
            found["rl_logs"].append(
                ("Patch mapper RL" if kind == "patch" else "DART mapper RL", mapper / "rl_log.jsonl")
            )
    return found


# ---------------------------------------------------------------- problems, samples, adapted rows
class ProblemTexts:
    """Problem text and gold answer per benchmark, loaded once per (benchmark, limit) and joined by id."""

    def __init__(self, data_dir: str | Path | None = None):
        self.data_dir = data_dir
        self.by_bench: dict[str, dict[str, list[str]]] = {}
        self.notes: list[str] = []
        self._loaded: set[tuple[str, int | None]] = set()

    def load(self, benchmark: str, limit: int | None) -> None:
        if (benchmark, limit) in self._loaded:
            return
        self._loaded.add((benchmark, limit))
        from sftadapt.data.sources import load_benchmark

        try:
            problems = load_benchmark(benchmark, limit, data_dir=self.data_dir)
        except Exception as err:  # noqa: BLE001 — a missing benchmark file leaves the text out, said on the page
            self.notes.append(f"{benchmark}: problem texts not found ({err})")
            return
        mine = self.by_bench.setdefault(benchmark, {})
        for p in problems:
            mine.setdefault(p.id, [p.problem, p.answer])


def eval_samples(
    run_index: int, run: RunRef, results: dict[str, Any], problems: ProblemTexts, max_samples: int, notes: list[str]
) -> list[dict[str, Any]]:
    """Compact rows of every stored eval attempt of one run (whole problems, up to `max_samples` per benchmark)."""
    out = []
    for bench in results.get("benchmarks") or {}:
        problems.load(bench, results.get("limit"))
        rows = _read_jsonl(run.eval_dir / bench / "attempts.jsonl")
        kept, seen = [], set()
        for a in rows:
            pid = str(a.get("problem_id"))
            if len(kept) >= max_samples and pid not in seen:
                continue
            seen.add(pid)
            kept.append(a)
        if len(kept) < len(rows):
            notes.append(
                f"{run.label} / {bench}: showing {len(kept)} of {len(rows)} samples (the first {len(seen)} problems)"
            )
        for a in kept:
            meta = a.get("meta") or {}
            out.append(
                {
                    "r": run_index,
                    "b": bench,
                    "p": str(a.get("problem_id")),
                    "i": a.get("index"),
                    "v": a.get("verdict") or "error",
                    "x": a.get("extracted"),
                    "u": a.get("rule"),
                    "t": a.get("text") or "",
                    "f": a.get("finish_reason"),
                    "n": meta.get("n_tokens"),
                }
            )
    return out


def _attempt_why(a: dict[str, Any]) -> str:
    meta = a.get("meta") or {}
    if meta.get("gate_reasons"):
        return "gate: " + ", ".join(map(str, meta["gate_reasons"]))
    if meta.get("passed") is True:
        return "gate: pass"
    if meta.get("rejected"):
        return "refused: " + str(meta["rejected"])
    return ""


def adapted_rows(name: str, path: Path, limit: int) -> list[dict[str, Any]]:
    """Compact rows of one adapted training set: origin, gap, pass rate, response and every attempt."""
    out = []
    for r in _read_jsonl(path, limit):
        meta = r.get("meta") or {}
        out.append(
            {
                "s": name,
                "id": str(r.get("id")),
                "q": r.get("problem") or "",
                "g": r.get("answer"),
                "o": r.get("origin"),
                "gap": _num(r.get("target_logprob_mean")),
                "pr": _num(
                    r.get("self_pass_rate") if r.get("self_pass_rate") is not None else meta.get("mapper_pass_rate")
                ),
                "t": r.get("response") or "",
                "a": [
                    {
                        "st": a.get("stage"),
                        "i": a.get("index"),
                        "v": a.get("verdict"),
                        "x": a.get("extracted"),
                        "u": a.get("rule"),
                        "w": _attempt_why(a),
                        "t": a.get("text") or "",
                    }
                    for a in (r.get("attempts") or [])
                    if isinstance(a, dict)
                ],
            }
        )
    return out


# ---------------------------------------------------------------- the table
def table_from_study(study: dict[str, Any]) -> dict[str, Any]:
    """Rows of the study table (pooled over seeds) in one shape: cells {mean, lo, hi, sd, delta, dlo, dhi}."""
    rows = []
    for a in study["arms"]:
        cells = {}
        for b, c in a["benchmarks"].items():
            cells[b] = {
                "mean": c["mean"],
                "lo": c["ci"][0],
                "hi": c["ci"][1],
                "sd": c.get("sd"),
                "delta": c.get("delta"),
                "dlo": (c.get("delta_ci") or [None, None])[0],
                "dhi": (c.get("delta_ci") or [None, None])[1],
            }
        rows.append(
            {"arm": a["arm"], "label": a["label"], "gap": a.get("gap"), "cells": cells, "compute": a.get("compute")}
        )
    n = len(study["seeds"])
    note = (
        "95% bootstrap interval over problems"
        if n == 1
        else f"mean over {n} seeds [95% bootstrap interval over problems] and sd of the per-seed accuracies"
    )
    return {
        "benchmarks": list(study["benchmarks"]),
        "rows": rows,
        "metric": study["metric"],
        "note": note,
        "protocol": study["protocol"],
        "baseline": "base",
    }


def table_from_report(rep: dict[str, Any], computes: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Rows of `report.build_report`'s table in the same shape as `table_from_study`'s."""

    def cell(c):
        d = c.get("delta") or {}
        return {
            "mean": c["value"],
            "lo": c["lo"],
            "hi": c["hi"],
            "sd": None,
            "delta": d.get("value"),
            "dlo": d.get("lo"),
            "dhi": d.get("hi"),
        }

    rows = []
    for r in rep["runs"]:
        cells = {b: cell(c) for b, c in r["benchmarks"].items()}
        if r.get("mean"):
            cells["mean"] = cell(r["mean"])
        rows.append(
            {
                "arm": r["name"],
                "label": r["name"],
                "gap": (r.get("gap") or {}).get("gap"),
                "cells": cells,
                "compute": (computes or {}).get(r["name"]),
            }
        )
    return {
        "benchmarks": list(rep["benchmarks"]),
        "rows": rows,
        "metric": rep["metric"],
        "note": f"95% bootstrap interval over problems (B={rep['n_boot']})",
        "protocol": rep["protocol"],
        "baseline": rep.get("baseline"),
    }


def _pct(v: float | None, signed: bool = False) -> str:
    return "–" if v is None else f"{100 * v:{'+' if signed else ''}.1f}"


def table_html(table: dict[str, Any]) -> str:
    benches = table["benchmarks"]
    cols = benches + (["mean"] if any("mean" in r["cells"] for r in table["rows"]) else [])
    base = table.get("baseline")
    head = (
        "<tr><th>arm</th><th>gap</th>"
        + "".join(f"<th>{escape(b)}</th>" for b in cols)
        + (f"<th>Δ mean vs {escape(base)}</th>" if base else "")
        + "</tr>"
    )
    body = []
    for r in table["rows"]:
        gap = "–" if r["gap"] is None else f"{r['gap']:.3f}"
        tds = [f"<th scope=row>{escape(r['label'])}</th>", f"<td>{gap}</td>"]
        for b in cols:
            c = r["cells"].get(b)
            if not c:
                tds.append("<td>–</td>")
                continue
            text = f"{_pct(c['mean'])} <span class=ci>[{_pct(c['lo'])}, {_pct(c['hi'])}]</span>"
            if c.get("sd") is not None:
                text += f" <span class=sd>sd {_pct(c['sd'])}</span>"
            tds.append(f"<td>{text}</td>")
        if base:
            m = r["cells"].get("mean") or {}
            if m.get("delta") is None:
                tds.append("<td>–</td>")
            else:
                tds.append(
                    f"<td>{_pct(m['delta'], True)} <span class=ci>[{_pct(m['dlo'], True)}, "
                    f"{_pct(m['dhi'], True)}]</span></td>"
                )
        body.append(f'<tr class="arm-row" data-arm="{escape(r["arm"])}">' + "".join(tds) + "</tr>")
    return f'<table id="study-table"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


# ---------------------------------------------------------------- plots
def _colors(keys: Iterable[str]) -> dict[str, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(dict.fromkeys(keys))}


def summary_plots(table: dict[str, Any]) -> list[str]:
    """Gap vs accuracy and compute vs accuracy (mean over benchmarks, with its interval)."""
    colors = _colors(r["arm"] for r in table["rows"])
    metric = table["metric"]
    out = []
    gap_pts = [
        Point(
            r["label"],
            r["gap"],
            100 * r["cells"]["mean"]["mean"],
            100 * r["cells"]["mean"]["lo"],
            100 * r["cells"]["mean"]["hi"],
            colors[r["arm"]],
        )
        for r in table["rows"]
        if r["gap"] is not None and "mean" in r["cells"]
    ]
    out.append(
        scatter(
            gap_pts,
            "gap vs accuracy",
            "training-set gap: mean target log-prob per token (higher = closer)",
            f"{metric} (%), mean",
            y_include=(0, 10),
        )
    )
    comp = [r for r in table["rows"] if r.get("compute") and "mean" in r["cells"]]
    for key, xlabel in (
        ("seconds", "wall seconds beyond the warm-up"),
        ("tokens", "tokens generated + scored + trained"),
    ):
        pts = []
        for r in comp:
            c = r["compute"]
            x = (
                c.get("seconds", 0.0)
                if key == "seconds"
                else sum(float(c.get(k, 0) or 0) for k in ("tokens_generated", "tokens_scored", "tokens_trained"))
            )
            m = r["cells"]["mean"]
            pts.append(Point(r["label"], float(x), 100 * m["mean"], 100 * m["lo"], 100 * m["hi"], colors[r["arm"]]))
        out.append(scatter(pts, f"compute vs accuracy ({key})", xlabel, f"{metric} (%), mean", y_include=(0, 10)))
    return out


def training_plot(curves: dict[str, list[dict[str, Any]]], colors: dict[str, str]) -> str:
    series = [
        Series(name, [(r.get("step"), _num(r.get("loss"))) for r in rows], colors.get(name))
        for name, rows in curves.items()
    ]
    return line_chart(series, "training loss per arm", "optimiser step", "loss")


def rl_plots(name: str, rows: list[dict[str, Any]]) -> list[str]:
    """Reward, gate pass rate (or rollout accuracy) and gate-reason rates of one RL run, per step."""
    steps = [r.get("step") for r in rows]

    def series(key: str, label: str | None = None, color: str | None = None) -> Series:
        return Series(label or key, [(s, _num(r.get(key))) for s, r in zip(steps, rows)], color)

    reward_key = "reward_mean" if any(_num(r.get("reward_mean")) is not None for r in rows) else "reward"
    out = [line_chart([series(reward_key, "reward", PALETTE[0])], f"{name}: reward", "step", "mean reward")]
    rates = [
        series(k, k, c)
        for k, c in (("gate_pass_rate", PALETTE[2]), ("accuracy", PALETTE[1]))
        if any(_num(r.get(k)) is not None for r in rows)
    ]
    if rates:
        out.append(
            line_chart(
                rates,
                f"{name}: " + " / ".join(s.name.replace("_", " ") for s in rates),
                "step",
                "share of rollouts",
                y_include=(0, 1),
            )
        )
    reasons = sorted({k for r in rows for k in r if k.startswith("fail_")})
    used = [k for k in reasons if any((_num(r.get(k)) or 0) > 0 for r in rows)]
    if reasons:
        out.append(
            line_chart(
                [series(k, k[5:], PALETTE[(i + 3) % len(PALETTE)]) for i, k in enumerate(used)],
                f"{name}: gate reasons (share of rollouts)",
                "step",
                "rate",
                y_include=(0, 1),
            )
        )
    return out


# ---------------------------------------------------------------- the page
def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def json_for_script(data: Any) -> str:
    """JSON that can sit inside <script type="application/json">: no `<`, `>`, `&`, U+2028 or U+2029 left raw
    (so neither `</script>` nor `<!--` can end or change the block), and still the same JSON once parsed."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    for raw, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, esc)
    return text


def _clean(value: Any) -> Any:
    """NaN and infinities (json cannot hold them) -> None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def protocol_text(p: dict[str, Any]) -> str:
    return (
        f"protocol {p.get('name')} ({p.get('hash')}): n={p.get('n')}, T={p.get('temperature')}, "
        f"top_p={p.get('top_p')}, {p.get('max_new_tokens')} new tokens, chat={p.get('chat')}, "
        f"answers {p.get('answer_format')}, seed={p.get('seed')}"
    )


def build_page(
    title: str,
    table: dict[str, Any],
    runs: Sequence[RunRef],
    *,
    max_samples: int = MAX_SAMPLES,
    data_dir: str | Path | None = None,
    source: str = "",
) -> str:
    """The whole page as one string."""
    notes: list[str] = []
    problems = ProblemTexts(data_dir)
    samples: list[dict[str, Any]] = []
    train_curves: dict[str, list[dict[str, Any]]] = {}
    rl_logs: dict[str, Path] = {}
    adapted: dict[str, Path] = {}
    for k, run in enumerate(runs):
        results = _read_json(run.eval_dir / "results.json") or {}
        samples += eval_samples(k, run, results, problems, max_samples, notes)
        found = discover(results)
        if found["train_log"]:
            rows = [r for r in _read_jsonl(found["train_log"]) if "loss" in r and "train_runtime" not in r]
            name = run.label + (" (warm-up SFT)" if found["train_log"].parent.name == "warmup" else "")
            train_curves[name] = rows
        seed_tag = "" if run.seed is None or len({r.seed for r in runs}) < 2 else f" · seed {run.seed}"
        for name, path in found["rl_logs"]:
            rl_logs.setdefault(name + seed_tag, path)
        for name, path in found["adapted"]:
            adapted.setdefault(name + seed_tag, path)
    notes += problems.notes
    adapted_data = [row for name, path in adapted.items() for row in adapted_rows(name, path, MAX_ADAPTED_ROWS)]
    colors = _colors(train_curves)
    plots = summary_plots(table)
    plots.append(training_plot(train_curves, colors) if train_curves else "")
    rl_html = (
        "".join(
            f'<h3>{escape(name)}</h3><div class="plots">{"".join(rl_plots(name, _read_jsonl(p)))}</div>'
            for name, p in rl_logs.items()
        )
        or "<p class=muted>No RL stage in this report.</p>"
    )
    data = _clean(
        {
            "runs": [{"key": r.key, "label": r.label, "arm": r.arm, "seed": r.seed} for r in runs],
            "problems": problems.by_bench,
            "samples": samples,
            "adapted": adapted_data,
            "verdicts": list(VERDICTS),
        }
    )
    script, style = _asset("report.js"), _asset("report.css")
    csp = (
        f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    notes_html = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{escape(csp, quote=False)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{style}</style></head>
<body>
<header><h1>{escape(title)}</h1>
<p class=muted>{escape(protocol_text(table["protocol"]))}. Metric {escape(table["metric"])} in %; cells:
{escape(table["note"])}. Generated {escape(time.strftime("%Y-%m-%d %H:%M:%S"))}{" from " + escape(source) if source else ""}.</p>
<nav><a href="#table">Table</a> <a href="#plots">Plots</a> <a href="#rl">RL</a> <a href="#samples">Samples</a>
<a href="#adapted">Adapted sets</a></nav></header>
<section id="table"><h2>Accuracy per arm</h2>{table_html(table)}
<p class=muted>Gap: mean target log-prob per token of the arm's training set (higher = closer to the target).</p>
</section>
<section id="plots"><h2>Plots</h2><div class="plots">{"".join(plots)}</div></section>
<section id="rl"><h2>RL: reward, gate pass rate, gate reasons</h2>{rl_html}</section>
<section id="samples"><h2>Samples</h2>
<div class="controls"><label>arm <select id="f-run"></select></label>
<label>benchmark <select id="f-bench"></select></label>
<label>verdict <select id="f-verdict"></select></label>
<label>search <input id="f-search" type="search" placeholder="problem, response, answer, id"></label>
<span class="count"><span id="sample-count">0</span> of <span id="sample-total">0</span> samples</span></div>
<div id="sample-list"></div><button id="sample-more" type="button" hidden>show more</button></section>
<section id="adapted"><h2>Adapted training sets</h2>
<div class="controls"><label>set <select id="a-set"></select></label>
<label>origin <select id="a-origin"></select></label>
<label>search <input id="a-search" type="search" placeholder="problem, response, id"></label>
<span class="count"><span id="adapted-count">0</span> of <span id="adapted-total">0</span> rows</span></div>
<div id="adapted-list"></div><button id="adapted-more" type="button" hidden>show more</button></section>
{f'<section id="notes"><h2>Notes</h2><ul>{notes_html}</ul></section>' if notes else ""}
<script type="application/json" id="sftadapt-data">{json_for_script(data)}</script>
<script>{script}</script>
</body></html>
"""


# ---------------------------------------------------------------- entry points
def write_study_html(
    study: dict[str, Any], seed_roots: dict[int, Path], out: Path, max_samples: int = MAX_SAMPLES
) -> Path:
    """`RUN/report/study.html` from the study dict (study_report.write_study_report) and each seed's run folder."""
    from sftadapt.arms import ARM_LABELS

    many = len(seed_roots) > 1
    runs = [
        RunRef(
            key=f"{a['arm']}@{seed}",
            label=ARM_LABELS.get(a["arm"], a["arm"]) + (f" · seed {seed}" if many else ""),
            arm=a["arm"],
            seed=seed,
            eval_dir=root / f"eval_{a['arm']}",
        )
        for seed, root in seed_roots.items()
        for a in study["arms"]
    ]
    html = build_page(
        f"{study['name']}: study report",
        table_from_study(study),
        runs,
        max_samples=max_samples,
        source=str(Path(out).resolve().parent),
    )
    path = Path(out) / "study.html"
    path.write_text(html, encoding="utf-8")
    return path


def write_report_html(rep: dict[str, Any], out: Path, max_samples: int = MAX_SAMPLES) -> Path:
    """`OUT/report.html` for `sftadapt report --html` from `report.report`'s result (runs named by folder)."""
    computes = {}
    for row in rep["runs"]:
        comp = pipeline_compute(Path(row["dir"]))
        if comp is not None:
            computes[row["name"]] = comp
    runs = [
        RunRef(
            key=row["name"],
            label=row["name"],
            arm=row["name"].removeprefix("eval_"),
            seed=None,
            eval_dir=Path(row["dir"]),
        )
        for row in rep["runs"]
    ]
    html = build_page("Evaluation report", table_from_report(rep, computes), runs, max_samples=max_samples)
    path = Path(out) / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def pipeline_compute(eval_dir: Path) -> dict[str, Any] | None:
    """Compute of an arm when `eval_dir` is an `eval_<arm>` folder of a `sftadapt run` folder (stage.json beside
    it), counted as the study report counts it; None for a stand-alone eval."""
    from sftadapt.report.compute import arm_compute

    root = eval_dir.resolve().parent
    if not eval_dir.resolve().name.startswith("eval_") or not (eval_dir / "stage.json").exists():
        return None
    results = {}
    for stage in root.glob("*/stage.json"):
        meta = _read_json(stage) or {}
        if meta.get("status") == "done" and isinstance(meta.get("result"), dict):
            results[stage.parent.name] = meta["result"]
    return arm_compute(eval_dir.resolve().name.removeprefix("eval_"), root, results)
