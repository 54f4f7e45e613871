"""The across-seed cells of the study table (`study_report.pooled_cells`): pure numbers, no models."""

import json

import numpy as np
import pytest

from sftadapt.eval.metrics import bootstrap_macro_delta, describe_delta, hierarchical_bootstrap
from sftadapt.report.study import pooled_cells, seed_averaged

IDS = [f"p{i}" for i in range(40)]
RNG = np.random.default_rng(3)


def _seed(p: float, ids=IDS) -> tuple[list[str], np.ndarray]:
    return list(ids), (RNG.random(len(ids)) < p).astype(float)


def test_one_seed_gives_the_per_seed_reports_numbers():
    arm, base = {"a": [_seed(0.6)], "b": [_seed(0.3)]}, {"a": [_seed(0.4)], "b": [_seed(0.3)]}
    cells = pooled_cells(arm, base, n_boot=500, seed=7)
    ref = bootstrap_macro_delta([arm["a"][0][1]], n_boot=500, seed=7)
    assert cells["a"]["mean"] == pytest.approx(ref["value"]) and cells["a"]["ci"] == [ref["lo"], ref["hi"]]
    assert cells["a"]["sd"] is None
    ref_mean = bootstrap_macro_delta(
        [arm["a"][0][1], arm["b"][0][1]], [base["a"][0][1], base["b"][0][1]], [True, True], n_boot=500, seed=7
    )
    assert cells["mean"]["delta"] == pytest.approx(ref_mean["value"])
    assert cells["mean"]["delta_ci"] == [ref_mean["lo"], ref_mean["hi"]]


def test_seeds_are_averaged_per_problem_and_their_spread_is_reported():
    seeds = [_seed(0.2), _seed(0.5), _seed(0.8)]
    cells = pooled_cells({"a": seeds}, n_boot=500)
    per_seed = [s[1].mean() for s in seeds]
    assert cells["a"]["per_seed"] == pytest.approx(per_seed)
    assert cells["a"]["mean"] == pytest.approx(np.mean(per_seed))
    assert cells["a"]["sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert cells["a"]["ci"][0] < cells["a"]["mean"] < cells["a"]["ci"][1]
    assert cells["a"]["delta"] is None and cells["mean"]["mean"] == pytest.approx(cells["a"]["mean"])


def test_problems_are_matched_by_id_not_position():
    ids, scores = _seed(0.5)
    shuffled = RNG.permutation(len(ids))
    second = ([ids[i] for i in shuffled], scores[shuffled])
    pid, avg = seed_averaged([(ids, scores), second])
    assert pid == ids and np.array_equal(avg, scores)  # the same answers in another order: nothing changes
    # an arm identical to base, problem for problem, differs from it by exactly 0 with a zero-width interval
    cells = pooled_cells({"a": [(ids, scores), second]}, {"a": [second, (ids, scores)]}, n_boot=200)
    assert cells["a"]["delta"] == 0 and cells["a"]["delta_ci"] == [0, 0]


def test_only_problems_every_seed_scored_are_pooled_and_none_shared_is_an_error():
    a = (["p1", "p2", "p3"], np.array([1.0, 0.0, 1.0]))
    b = (["p2", "p3", "p4"], np.array([1.0, 0.0, 1.0]))
    assert seed_averaged([a, b])[0] == ["p2", "p3"]
    assert seed_averaged([a, b])[1].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="share no scored problem"):
        seed_averaged([a, (["q"], np.array([1.0]))])


# ---------------------------------------------------------------- the hierarchical bootstrap (seeds, then problems)
def test_seeds_that_disagree_widen_the_interval_the_problem_bootstrap_alone_would_give():
    # every problem scores the same within a seed, so only the seed level can move a replicate: the mean of 3
    # seeds drawn from {1, 0, 0.5}; all three drawn from one seed has chance 1/27 > 2.5%, so the interval is [0, 1]
    matrix = np.array([[1.0] * 30, [0.0] * 30, [0.5] * 30])
    est = hierarchical_bootstrap([matrix], n_boot=2000, seed=1)
    assert est["value"] == pytest.approx(0.5) and est["lo"] == 0.0 and est["hi"] == 1.0
    flat = bootstrap_macro_delta([matrix.mean(axis=0)], n_boot=2000, seed=1)  # problems only: no width at all
    assert flat["lo"] == flat["hi"] == 0.5


def test_identical_seeds_leave_the_problem_bootstrap():
    row = (np.random.default_rng(0).random(200) < 0.4).astype(float)
    est = hierarchical_bootstrap([np.stack([row] * 3)], n_boot=4000, seed=2)
    ref = bootstrap_macro_delta([row], n_boot=4000, seed=5)
    assert est["value"] == pytest.approx(row.mean())
    assert est["lo"] == pytest.approx(ref["lo"], abs=0.015) and est["hi"] == pytest.approx(ref["hi"], abs=0.015)


def test_the_delta_is_paired_within_seeds():
    # seed 0 is a hard run (all 0) and seed 1 an easy one (all 1) for both arms: seed against seed, no difference
    base = np.array([[0.0] * 20, [1.0] * 20])
    paired = hierarchical_bootstrap([base.copy()], [base], n_boot=500)
    assert paired == {"value": 0.0, "lo": 0.0, "hi": 0.0}
    # an arm 0.1 better in every seed and problem: exactly +0.1, whatever the seeds draw
    better = hierarchical_bootstrap([base + 0.1], [base], n_boot=500)
    assert better["value"] == pytest.approx(0.1) and better["lo"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="shape"):
        hierarchical_bootstrap([base], [base[:1]])
    with pytest.raises(ValueError, match="same seeds"):
        pooled_cells({"a": [_seed(0.5)] * 2}, {"a": [_seed(0.5)] * 3})


def test_pooled_cells_use_the_hierarchical_interval():
    seeds = [_seed(0.2), _seed(0.5), _seed(0.8)]
    cells = pooled_cells({"a": seeds}, n_boot=800, seed=4)
    ref = hierarchical_bootstrap([np.stack([s[1] for s in seeds])], n_boot=800, seed=4)
    assert cells["a"]["ci"] == [ref["lo"], ref["hi"]]
    # the seeds' spread (0.2 / 0.5 / 0.8) is in the interval: wider than averaging over seeds first would give
    flat = bootstrap_macro_delta([np.mean([s[1] for s in seeds], axis=0)], n_boot=800, seed=4)
    assert cells["a"]["ci"][1] - cells["a"]["ci"][0] > 1.5 * (flat["hi"] - flat["lo"])


def test_a_delta_whose_interval_holds_zero_reads_as_no_detectable_difference():
    text = describe_delta(-0.012, -0.043, 0.022)
    assert text.startswith("no detectable difference: -1.2 points")
    assert "loss of 4.3 to a gain of 2.2" in text
    assert describe_delta(0.05, 0.01, 0.09).startswith("higher by 5.0 points")
    assert describe_delta(-0.05, -0.09, -0.01).startswith("lower by 5.0 points")
    assert describe_delta(0.0, 0.0, 0.0) == "+0.0 points on every resample (no spread to measure)"
    assert "a gain of 0.0" in describe_delta(-0.08, -0.2, -0.0)


def test_arm_against_arm_contrasts_are_the_pairs_that_ran_as_paired_deltas(tmp_path):
    import html_fixture as fx

    from sftadapt.report.study import _arm_scores

    study = fx.build(tmp_path, seeds=(0, 1))
    pairs = [(c["arm"], c["reference"]) for c in study["contrasts"]]
    # the CONTRASTS whose two arms are in the run, in the table's order
    assert pairs == [("dr_sft", "sft"), ("dart_sft", "sft"), ("direct_rl", "dart_sft")]
    scores = {
        arm: {s: _arm_scores(tmp_path / f"seed-{s}" / f"eval_{arm}", "avg") for s in (0, 1)}
        for arm in ("dr_sft", "sft")
    }
    ref = pooled_cells(
        {b: [scores["dr_sft"][s][b] for s in (0, 1)] for b in fx.BENCHMARKS},
        {b: [scores["sft"][s][b] for s in (0, 1)] for b in fx.BENCHMARKS},
        n_boot=json.loads((tmp_path / "report" / "seed-0" / "report.json").read_text())["n_boot"],
        seed=0,
    )["mean"]
    first = study["contrasts"][0]
    assert first["delta"] == pytest.approx(ref["delta"]) and first["delta_ci"] == pytest.approx(ref["delta_ci"])
    assert first["delta"] > 0  # the fixture's DR+SFT (45%) is built above its SFT (20%)
    md = (tmp_path / "report" / "study.md").read_text()
    assert "## Arm against arm" in md and "| Mind the Gap rewriting vs the expert set (SFT) | DR+SFT | SFT |" in md
