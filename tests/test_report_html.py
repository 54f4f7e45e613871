"""The HTML report without a browser: self-contained, hostile text inert, data joined and complete, CLI flag."""

import base64
import hashlib
import json
import re
from html import escape
from pathlib import Path

import html_fixture as fx
import pytest

from sftadapt.report.html import ProblemTexts, RunRef, eval_samples, json_for_script
from sftadapt.report.svgplot import Point, Series, line_chart, nice_ticks, scatter


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    return root, fx.build(root)


def _page_data(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="sftadapt-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


def test_json_for_script_cannot_close_the_block_and_parses_back():
    value = {"t": "</script><script>x()</script><!-- \u2028\u2029 & > <", "n": [1, 2.5, None]}
    text = json_for_script(value)
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    assert json.loads(text) == value


def test_study_html_is_written_beside_the_markdown_and_needs_no_network(study_run):
    root, study = study_run
    path = Path(study["html_path"])
    assert path == root / "report" / "study.html" and (root / "report" / "study.md").exists()
    html = path.read_text(encoding="utf-8")
    # nothing to fetch: the only URL is the SVG namespace, which is a name, not a request
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert "<link" not in html and " src=" not in html.split('id="sftadapt-data"')[0]
    # exactly the data block and the one inline script; the CSP admits that script by its hash
    assert html.count("<script") == 2 and html.count("</script>") == 2
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html


def test_hostile_text_is_kept_as_data_and_never_as_markup(study_run):
    root, study = study_run
    html = Path(study["html_path"]).read_text(encoding="utf-8")
    assert "<img" not in html and 'onerror="window' not in html and "\u2028" not in html
    data = _page_data(html)
    assert any(s["t"] == fx.HOSTILE for s in data["samples"])  # the eval response, verbatim after parsing
    assert any(fx.HOSTILE in r["q"] for r in data["adapted"])  # the adapted row's problem text


def test_every_sample_is_there_with_its_problem_and_gold_joined(study_run):
    root, study = study_run
    data = _page_data(Path(study["html_path"]).read_text(encoding="utf-8"))
    expected = fx.expected_counts(root)
    assert len(data["samples"]) == expected["total"]
    assert [r["arm"] for r in data["runs"]] == list(fx.ARMS)
    from sftadapt.data.sources import load_benchmark

    for bench in fx.BENCHMARKS:
        truth = {p.id: [p.problem, p.answer] for p in load_benchmark(bench, fx.LIMIT)}
        assert data["problems"][bench] == truth
    for s in data["samples"]:
        assert s["p"] in data["problems"][s["b"]] and s["v"] in data["verdicts"] and s["u"] in ("boxed", "none")
    # adapted sets: both adapt stages' rows, with origins and attempts
    assert {r["s"] for r in data["adapted"]} == {"rewrite", "mapper"}
    assert {r["o"] for r in data["adapted"] if r["s"] == "rewrite"} == {"self", "guided", "expert"}
    mapper_row = next(r for r in data["adapted"] if r["s"] == "mapper")
    assert mapper_row["a"][1]["w"] == "gate: wrong_answer" and mapper_row["pr"] == 0.5


def test_page_has_the_table_rows_and_every_plot(study_run):
    root, study = study_run
    html = Path(study["html_path"]).read_text(encoding="utf-8")
    assert re.findall(r'<tr class="arm-row" data-arm="([^"]+)"', html) == list(fx.ARMS)
    for title in (
        "gap vs accuracy",
        "compute vs accuracy (seconds)",
        "compute vs accuracy (tokens)",
        "training loss per arm",
        "DART mapper RL: reward",
        "DART mapper RL: gate pass rate",
        "DART mapper RL: gate reasons",
        "direct RL: reward",
        "direct RL: accuracy",
    ):
        assert f'aria-label="{title}' in html, title
    for series in ("base (warm-up SFT)", "SFT", "DR+SFT", "DART+SFT", "no_answer", "length_low"):
        assert f'data-series="{series}"' in html, series
    # arms without a training set have no gap point; all five have a compute point (base at zero)
    gap_chart = html.split('aria-label="gap vs accuracy"')[1].split("</svg>")[0]
    assert re.findall(r'class="point" data-label="([^"]+)"', gap_chart) == ["SFT", "DR+SFT", "DART+SFT"]


def test_report_command_writes_html_for_eval_folders(study_run, tmp_path):
    from typer.testing import CliRunner

    from sftadapt.cli import app

    root, _ = study_run
    runs = [str(root / f"eval_{a}") for a in fx.ARMS]
    result = CliRunner().invoke(app, ["report", *runs, "--baseline", "eval_base", "--out", str(tmp_path), "--html"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert str(tmp_path / "report.html") in result.output
    assert re.findall(r'<tr class="arm-row" data-arm="([^"]+)"', html) == [f"eval_{a}" for a in fx.ARMS]
    # the eval folders sit in a run folder: compute and the training curves are found from them
    tokens = html.split('aria-label="compute vs accuracy (tokens)"')[1].split("</svg>")[0]
    assert len(re.findall(r'class="point"', tokens)) == len(fx.ARMS)
    assert 'data-series="eval_dr_sft"' in html
    assert len(_page_data(html)["samples"]) == fx.expected_counts(root)["total"]
    # without --html, no page
    other = tmp_path / "plain"
    assert CliRunner().invoke(app, ["report", *runs, "--out", str(other)]).exit_code == 0
    assert not (other / "report.html").exists()


def test_samples_are_capped_by_whole_problems_and_the_cut_is_said(study_run):
    root, _ = study_run
    run = RunRef("sft", "SFT", "sft", 0, root / "eval_sft")
    results = json.loads((run.eval_dir / "results.json").read_text())
    notes = []
    rows = eval_samples(0, run, results, ProblemTexts(), 3, notes)
    per_bench = {b: [r for r in rows if r["b"] == b] for b in fx.BENCHMARKS}
    assert all(len(v) == 2 * fx.N for v in per_bench.values())  # 3 samples started a second problem: kept whole
    assert len(notes) == 2 and "showing 4 of 12 samples (the first 2 problems)" in notes[0]


def test_missing_benchmark_texts_become_a_note_not_a_crash():
    texts = ProblemTexts()
    texts.load("no_such_benchmark", 3)
    assert texts.by_bench == {} and "no_such_benchmark: problem texts not found" in texts.notes[0]


def test_svg_axes_cover_the_data_and_labels_are_escaped():
    for lo, hi in ((1, 12), (-2.4, -1.1), (0, 66.7), (3, 3)):
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) >= 2
    svg = line_chart([Series("<b>x</b>", [(1, 1.0), (2, None), (3, 2.0)])], "t<", "x", "y")
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and svg.count("<polyline") == 2  # None = a gap
    svg = scatter([Point('"><script>', 1.0, 2.0, 1.0, 3.0)], "s", "x", "y")
    assert "<script>" not in svg and "&quot;&gt;&lt;script&gt;" in svg
    assert "no data" in scatter([], "empty", "x", "y")


def test_several_seeds_get_one_run_per_arm_and_seed(tmp_path):
    study = fx.build(tmp_path, seeds=(0, 1))
    html = Path(study["html_path"]).read_text(encoding="utf-8")
    assert study["html_path"] == str(tmp_path / "report" / "study.html")
    data = _page_data(html)
    assert [r["label"] for r in data["runs"][:2]] == ["base · seed 0", "SFT · seed 0"]
    assert len(data["runs"]) == 2 * len(fx.ARMS)
    assert len(data["samples"]) == sum(fx.expected_counts(tmp_path / f"seed-{s}")["total"] for s in (0, 1))
    assert {r["s"] for r in data["adapted"]} == {
        "rewrite · seed 0",
        "rewrite · seed 1",
        "mapper · seed 0",
        "mapper · seed 1",
    }
    for name in ("DART mapper RL · seed 1", "direct RL · seed 0", "DR+SFT · seed 1"):
        assert escape(name) in html, name
    assert "sd " in html.split('id="study-table"')[1].split("</table>")[0]  # the pooled cells carry their sd
