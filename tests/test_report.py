"""Report: protocol recorded and shown, refusal to mix protocols, deltas (paired and not), plots, gap record."""

import json

import pytest

from sftadapt.data.records import Attempt, Example, write_records
from sftadapt.eval.evaluate import benchmark_result
from sftadapt.eval.protocol import load_protocol
from sftadapt.report.markdown import ReportError, build_report, load_run, report, write_gap

QUICK = load_protocol("quick")


def make_run(path, correct: dict[str, list[int]], protocol=QUICK, ids: dict[str, list[str]] | None = None):
    """A run folder whose benchmark b has problems ids[b] (default q0..) answered right where correct[b] is 1."""
    benchmarks = {}
    for bench, flags in correct.items():
        names = (ids or {}).get(bench) or [f"q{i}" for i in range(len(flags))]
        attempts = [
            Attempt(
                pid,
                "eval",
                0,
                "h",
                "",
                verdict="correct" if ok else "wrong",
                extracted="1" if ok else "0",
                meta={"n_tokens": 3},
            )
            for pid, ok in zip(names, flags)
        ]
        benchmarks[bench] = benchmark_result(attempts, n_boot=200)
    path.mkdir(parents=True)
    (path / "results.json").write_text(
        json.dumps({"protocol": protocol.record(), "model": {"spec": path.name}, "benchmarks": benchmarks})
    )
    return path


def test_protocol_is_recorded_and_shown(tmp_path):
    a = make_run(tmp_path / "base", {"gsm8k": [1, 0, 0, 0]})
    b = make_run(tmp_path / "dft", {"gsm8k": [1, 1, 0, 0]})
    rep = report([a, b], tmp_path / "out", baseline="base")
    assert rep["protocol"] == QUICK.record()
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"protocol **quick** (hash `{QUICK.hash}`)" in md and "T=0.0" in md and "max_new_tokens=256" in md
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["protocol"]["hash"] == QUICK.hash and saved["metric"] == "avg@1"
    assert (tmp_path / "out" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "out" / "gap_vs_accuracy.png").exists()  # no run carries a gap record


def test_refuses_to_mix_protocols(tmp_path):
    a = make_run(tmp_path / "base", {"gsm8k": [1, 0]})
    b = make_run(tmp_path / "hot", {"gsm8k": [1, 1]}, protocol=load_protocol("quick", ["temperature=0.7"]))
    with pytest.raises(ReportError, match=r"different protocols \(temperature: 0.0 vs 0.7\)"):
        report([a, b], tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()
    # Only the label differs: same hash, so they may share a table.
    same = make_run(tmp_path / "renamed", {"gsm8k": [0, 0]}, protocol=load_protocol("quick", ["name=mine"]))
    build_report([load_run(a), load_run(same)])


def test_paired_deltas_align_problems_by_id(tmp_path):
    base = make_run(tmp_path / "base", {"math500": [1, 0, 0, 1, 0]}, ids={"math500": list("abcde")})
    # Same problems listed in another order; solves b and c on top of the baseline's a and d.
    better = make_run(tmp_path / "better", {"math500": [1, 1, 1, 1, 0]}, ids={"math500": list("dcbae")})
    rep = build_report([load_run(base), load_run(better)], baseline="base")
    cell = rep["runs"][1]["benchmarks"]["math500"]
    assert cell["value"] == pytest.approx(0.8)
    assert cell["delta"]["paired"] is True
    assert cell["delta"]["value"] == pytest.approx(0.4)
    # Paired differences are (0, 1, 1, 0, 0) after alignment by id; unaligned they would include a -1.
    assert cell["delta"]["lo"] >= 0.0
    assert "delta" not in rep["runs"][0]["benchmarks"]["math500"]  # the baseline has no delta to itself


def test_unpaired_when_problem_sets_differ_and_mean_column(tmp_path):
    base = make_run(tmp_path / "base", {"gsm8k": [1, 0, 0, 0], "math500": [0, 0]})
    other = make_run(tmp_path / "other", {"gsm8k": [1, 1, 0], "math500": [1, 0]})  # 3 gsm8k problems, not 4
    rep = build_report([load_run(base), load_run(other)], baseline="base")
    row = rep["runs"][1]
    assert row["benchmarks"]["gsm8k"]["delta"]["paired"] is False
    assert row["benchmarks"]["math500"]["delta"]["paired"] is True
    assert row["mean"]["value"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert row["mean"]["delta"]["value"] == pytest.approx((2 / 3 + 1 / 2) / 2 - (1 / 4 + 0) / 2)
    assert row["mean"]["delta"]["paired"] is False
    from sftadapt.report.markdown import to_markdown

    md = to_markdown(rep)
    assert "Δ +41.7" in md and "†" in md


def test_bad_inputs(tmp_path):
    a = make_run(tmp_path / "x" / "run", {"gsm8k": [1]})
    b = make_run(tmp_path / "y" / "run", {"gsm8k": [0]})
    with pytest.raises(ReportError, match="share a folder name"):
        build_report([load_run(a), load_run(b)])
    with pytest.raises(ReportError, match="baseline 'nope'"):
        build_report([load_run(a)], baseline="nope")
    with pytest.raises(ReportError, match="k must be"):
        build_report([load_run(a)], metric="pass@4")
    with pytest.raises(ReportError, match="no results.json"):
        load_run(tmp_path)


def test_gap_record_and_plot(tmp_path):
    base = make_run(tmp_path / "base", {"gsm8k": [0, 0, 1, 0]})
    dr = make_run(tmp_path / "dr", {"gsm8k": [1, 1, 0, 0]})
    train = tmp_path / "train.jsonl"
    write_records(
        train,
        [
            Example(id=str(i), problem="p", response="r", answer="1", origin="self", target_logprob_mean=v)
            for i, v in enumerate([-0.5, -1.5, None])
        ],
    )
    rep = report([base, dr], tmp_path / "out", baseline="base", gaps={"dr": str(train)})
    gap = json.loads((tmp_path / "dr" / "gap.json").read_text())
    assert gap["gap"] == pytest.approx(-1.0) and gap["n_examples"] == 2
    assert rep["runs"][1]["gap"]["gap"] == pytest.approx(-1.0)
    assert (tmp_path / "out" / "gap_vs_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "Training-set gap" in (tmp_path / "out" / "report.md").read_text()
    empty = tmp_path / "empty.jsonl"
    write_records(empty, [Example(id="0", problem="p", response="r", answer="1", origin="expert")])
    with pytest.raises(ReportError, match="target_logprob_mean"):
        write_gap(base, empty)


def test_report_command_refuses_mixed_protocols_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from sftadapt.cli import app

    a = make_run(tmp_path / "base", {"gsm8k": [1, 0]})
    b = make_run(tmp_path / "paper", {"gsm8k": [1, 1]}, protocol=load_protocol("paper"))
    res = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "different protocols" in res.output
    c = make_run(tmp_path / "other", {"gsm8k": [1, 1]})
    res = CliRunner().invoke(app, ["report", str(a), str(c), "--baseline", "base", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "Δ +50.0" in res.output and (tmp_path / "out" / "accuracy.png").exists()
