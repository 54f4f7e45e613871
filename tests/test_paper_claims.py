"""benchmarks/paper_claims.py: each paper claim read off a hand-written study.json gets the verdict its interval
gives (reproduced / reversed / undecided / not in this study), its delta in points, and the markdown table."""

import importlib.util
import json
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_claims.py"
_spec = importlib.util.spec_from_file_location("paper_claims", _PATH)
claims = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(claims)

BENCHMARKS = ["gsm8k", "math500"]


def _cell(mean, delta=None, ci=None):
    return {"mean": mean, "ci": [mean - 0.05, mean + 0.05], "per_seed": [mean], "sd": None, "delta": delta,
            "delta_ci": ci}  # fmt: skip


def _arm(arm, label, mean_delta=None, mean_ci=None, per_bench=None, compute=None):
    cells = {b: _cell(0.3, *(per_bench or {}).get(b, (None, None))) for b in BENCHMARKS}
    cells["mean"] = _cell(0.3, mean_delta, mean_ci)
    comp = {"tokens_generated": 0.0, "tokens_scored": 0.0, "tokens_trained": 0.0, "optimizer_steps": 0.0,
            "seconds": 0.0, "score_seconds": 0.0} | (compute or {})  # fmt: skip
    return {"arm": arm, "label": label, "benchmarks": cells, "gap": None, "compute": comp}


def _study(tmp_path: Path) -> Path:
    """No dr_is arm (claim 7 cannot be answered), no dr_dft/dft contrasts, and direct RL only as the reversed
    pair (direct_rl, dart_sft) of the study's CONTRASTS."""
    study = {
        "name": "hand",
        "protocol": {"name": "quick", "n": 4, "temperature": 1.0, "hash": "x"},
        "metric": "avg@4",
        "seeds": [0, 1, 2],
        "benchmarks": BENCHMARKS,
        "arms": [
            _arm("base", "base"),
            # claim 6 says SFT lowers the model: its interval is all below 0 -> reproduced
            _arm("sft", "SFT", -0.04, [-0.07, -0.012], {"gsm8k": (-0.05, [-0.1, -0.01]), "math500": (-0.03, None)}),
            # claim 2 says DR+SFT beats base: the interval is all below 0 -> reversed
            _arm("dr_sft", "DR+SFT", -0.0351, [-0.06, -0.0149]),
            _arm("dart_sft", "DART+SFT", 0.01, [-0.02, 0.03], compute={"tokens_generated": 1234567.0, "seconds": 42.4}),
            _arm("pr_sft", "PR best-of-k+SFT", 0.0, [-0.01, 0.01]),
            _arm("direct_rl@50", "GRPO 50 steps", 0.0, [-0.01, 0.01]),
            _arm("direct_rl", "GRPO (direct RL)", 0.02, [0.0, 0.04], compute={"optimizer_steps": 20.0}),
        ],
        "contrasts": [
            # claim 1 (DR+SFT > SFT): interval holds 0 -> undecided
            {"arm": "dr_sft", "reference": "sft", "question": "q", "delta": 0.004, "delta_ci": [-0.02, 0.031]},
            # claim 9 (DART+SFT > PR): reproduced
            {"arm": "dart_sft", "reference": "pr_sft", "question": "q", "delta": 0.26, "delta_ci": [0.2, 0.325]},
            # claim 11 reads it reversed: DART+SFT - direct RL = +0.12 [+0.05, +0.2] -> reproduced
            {"arm": "direct_rl", "reference": "dart_sft", "question": "q", "delta": -0.12, "delta_ci": [-0.2, -0.05]},
        ],
    }
    path = tmp_path / "report" / "study.json"
    path.parent.mkdir()
    path.write_text(json.dumps(study))
    return path


def test_each_claim_gets_the_verdict_and_delta_its_interval_gives(tmp_path):
    study = json.loads(_study(tmp_path).read_text())
    rows = {r.claim.number: r for r in claims.evaluate(study)}
    assert [r.claim.number for r in claims.evaluate(study)] == list(range(1, 12))
    got = {n: (r.verdict, r.delta) for n, r in rows.items()}
    assert got[1] == ("undecided", "+0.4 [-2.0, +3.1]")
    assert got[2] == ("reversed", "-3.5 [-6.0, -1.5]")
    assert got[6] == ("reproduced", "-4.0 [-7.0, -1.2]")  # expected sign -1: below base is the claim
    assert got[9] == ("reproduced", "+26.0 [+20.0, +32.5]")
    assert got[11] == ("reproduced", "+12.0 [+5.0, +20.0]")  # the reversed contrast, negated and swapped
    assert rows[11].reference == "direct_rl"  # plain direct_rl is preferred over direct_rl@50
    assert "1,234,567 tokens generated" in rows[11].note and "42 wall s" in rows[11].note
    assert "GRPO (direct RL):" in rows[11].note and "20 optimizer steps" in rows[11].note
    # a missing arm, and two arms that ran without a paired delta between them: no verdict
    assert got[7] == (None, "–") and "dr_is" in rows[7].note
    assert got[3] == (None, "–") and got[4] == (None, "–") and got[10] == (None, "–")
    assert got[8] == (None, "–") and "no paired delta of dart_sft against sft" in rows[8].note
    # against base the per-benchmark cells carry their delta; a contrast has only the mean
    assert rows[6].per_benchmark == {"gsm8k": "-5.0 [-10.0, -1.0]", "math500": "-3.0"}
    assert rows[9].per_benchmark == {"gsm8k": "–", "math500": "–"}


def test_the_interval_alone_decides_and_a_budget_arm_stands_in_for_direct_rl():
    assert claims.verdict([0.0, 0.0], +1) == "undecided"  # an interval that touches 0 does not exclude it
    assert claims.verdict([0.0, 0.03], +1) == "undecided"
    assert claims.verdict([0.01, 0.03], -1) == "reversed"
    assert claims.verdict(None, +1) == "undecided"
    assert claims.format_delta(-0.0004, [-0.01, 0.0]) == "+0.0 [-1.0, +0.0]"
    assert claims.largest_direct_rl(["sft", "direct_rl@50", "direct_rl@200", "direct_rl@7"]) == "direct_rl@200"
    assert claims.largest_direct_rl(["sft", "dart_sft"]) is None


def test_main_prints_the_table_and_writes_it(tmp_path, capsys):
    path = _study(tmp_path)
    out = tmp_path / "claims.md"
    assert claims.main([str(path.parent), "--out", str(out)]) == 0  # the report folder works as well as the file
    md = capsys.readouterr().out
    assert md == out.read_text()
    assert (
        "| # | claim | source | expected | verdict | Δ mean [95%] | Δ gsm8k | Δ math500 | seeds | paper | notes |" in md
    )
    assert "**reproduced**" in md and "**reversed**" in md and "**undecided**" in md and "not in this study" in md
    assert "95% hierarchical bootstrap interval over 3 seeds" in md
    row1 = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert "DR+SFT > SFT" in row1 and "| 3 |" in row1
    assert "Qwen2.5-Math-7B 30.33 vs 23.23 (+7.10); Llama-3.1-8B-Instruct 19.14 vs 11.39 (+7.75)" in row1
    row6 = next(line for line in md.splitlines() if line.startswith("| 6 |"))
    assert "SFT < base" in row6 and "(+1.56)" in row6 and "(-4.02)" in row6
    one_seed = json.loads(path.read_text()) | {"seeds": [0]}
    assert "over problems only" in claims.to_markdown(one_seed, claims.evaluate(one_seed))
