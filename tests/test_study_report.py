"""The across-seed cells of the study table (`study_report.pooled_cells`): pure numbers, no models."""

import numpy as np
import pytest

from sftadapt.eval.metrics import bootstrap_macro_delta
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
    ref_mean = bootstrap_macro_delta([arm["a"][0][1], arm["b"][0][1]], [base["a"][0][1], base["b"][0][1]],
                                     [True, True], n_boot=500, seed=7)
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
