"""Metrics: pass@k against brute-force enumeration, maj@n tie rule, bootstrap intervals, degenerate cases."""

import itertools
import math

import numpy as np
import pytest

from sftadapt.eval.metrics import (
    ProblemSamples,
    bootstrap_delta,
    bootstrap_mean,
    default_ks,
    maj_correct,
    majority_vote,
    normalize_answer,
    pass_at_k,
    per_problem_scores,
    scores_from_counts,
    summarize_samples,
    verdict_counts,
)


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c of them correct) that hold a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_equals_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_closed_forms_and_large_n():
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)  # pass@1 = c/n
    assert pass_at_k(16, 0, 8) == 0.0
    assert pass_at_k(16, 9, 8) == 1.0  # n - c < k: every subset has a correct one
    # The product form must agree with exact binomials where floats would overflow a naive C(n,k).
    n, c, k = 2000, 3, 500
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 0)


def test_majority_vote_tie_goes_to_first_appearance():
    # "7" and "72" have two votes each; "7" appeared first.
    winner, members = majority_vote(["7", "72", None, "72", "7"])
    assert winner == "7" and members == [0, 4]
    winner, members = majority_vote(["72", "7", "7", "72"])
    assert winner == "72" and members == [0, 3]
    assert majority_vote([None, None]) == (None, [])
    assert majority_vote([]) == (None, [])


def test_majority_vote_groups_normalised_strings():
    winner, members = majority_vote(["\\dfrac{1}{2}", "0.5", " \\frac{1}{2}. ", "$\\frac {1}{2}$", "0.5"])
    assert winner == "\\frac{1}{2}" and members == [0, 2, 3]


def test_normalize_answer():
    assert normalize_answer("\\left( 3, \\frac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert normalize_answer("  ") is None
    assert normalize_answer(None) is None
    assert normalize_answer("72.") == "72"


def test_maj_correct_uses_winning_group():
    tied_wrong_first = ProblemSamples("p", ["wrong", "correct", "correct", "wrong"], ["7", "72", "72", "7"])
    assert maj_correct(tied_wrong_first) == 0
    tied_right_first = ProblemSamples("p", ["correct", "wrong", "wrong", "correct"], ["72", "7", "7", "72"])
    assert maj_correct(tied_right_first) == 1
    # No-answer samples do not vote, even when they are the majority.
    assert maj_correct(ProblemSamples("p", ["no_answer"] * 3 + ["correct"], [None] * 3 + ["5"])) == 1
    assert maj_correct(ProblemSamples("p", ["no_answer"] * 2, [None, None])) == 0
    # A timeout inside the winning group does not hide a correct verdict of the same string.
    assert maj_correct(ProblemSamples("p", ["timeout", "correct", "wrong"], ["x", "x", "y"])) == 1


def test_summarize_values_and_counts():
    samples = [
        ProblemSamples("a", ["correct", "correct", "wrong", "no_answer"], ["1", "1", "2", None]),
        ProblemSamples("b", ["wrong", "timeout", "wrong", "error"], ["3", "4", "3", None]),
    ]
    out = summarize_samples(samples, n_boot=200)
    assert out["n"] == 4 and out["n_problems"] == 2 and out["n_samples"] == 8
    assert out["avg@4"]["value"] == pytest.approx((2 / 4 + 0) / 2)
    assert out["pass@1"]["value"] == pytest.approx(0.25)
    assert out["pass@2"]["value"] == pytest.approx((1 - math.comb(2, 2) / math.comb(4, 2)) / 2)
    assert out["pass@4"]["value"] == pytest.approx(0.5)
    assert out["maj@4"]["value"] == pytest.approx(0.5)
    assert out["counts"] == {"correct": 2, "wrong": 3, "no_answer": 1, "timeout": 1, "error": 1}
    assert set(k for k in out if k.startswith("pass@")) == {"pass@1", "pass@2", "pass@4"}


def test_summarize_degenerate_cases():
    all_right = [ProblemSamples(str(i), ["correct"] * 3, ["5"] * 3) for i in range(10)]
    out = summarize_samples(all_right)
    for key in ("avg@3", "pass@1", "pass@2", "pass@3", "maj@3"):
        assert out[key] == {"value": 1.0, "lo": 1.0, "hi": 1.0}
    single = summarize_samples([ProblemSamples("x", ["wrong"], ["4"])])
    assert single["n"] == 1 and single["avg@1"] == {"value": 0.0, "lo": 0.0, "hi": 0.0}
    assert [k for k in single if k.startswith("pass@")] == ["pass@1"]
    with pytest.raises(ValueError):
        summarize_samples([ProblemSamples("a", ["correct"], ["1"]), ProblemSamples("b", ["correct"] * 2, ["1"] * 2)])
    with pytest.raises(ValueError):
        summarize_samples([])
    with pytest.raises(ValueError):
        verdict_counts([ProblemSamples("a", ["maybe"], ["1"])])


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(16) == [1, 2, 4, 8, 16]
    assert default_ks(6) == [1, 2, 4, 6]


def test_bootstrap_contains_point_shrinks_and_is_seeded():
    rng = np.random.default_rng(0)
    small = rng.random(20) < 0.4
    large = rng.random(2000) < 0.4
    a, b = bootstrap_mean(small, seed=1), bootstrap_mean(large, seed=1)
    for res in (a, b):
        assert res["lo"] <= res["value"] <= res["hi"]
    assert (b["hi"] - b["lo"]) < (a["hi"] - a["lo"]) / 4  # width ~ 1/sqrt(P): 100x problems -> ~10x narrower
    # Binomial standard error: the 95% width of a mean of 2000 Bernoulli(~0.4) is about 2*1.96*0.011 = 0.043.
    assert b["hi"] - b["lo"] == pytest.approx(2 * 1.96 * math.sqrt(0.24 / 2000), rel=0.15)
    assert bootstrap_mean(large, seed=1) == b
    assert bootstrap_mean(large, seed=2) != b  # (small sets can land on the same grid of quantiles)


def test_bootstrap_delta_paired_is_tighter_and_exact_when_constant():
    rng = np.random.default_rng(3)
    difficulty = rng.random(300)
    base = (difficulty > 0.5).astype(float)
    better = np.maximum(base, (difficulty > 0.4).astype(float))  # solves the same problems plus 10% more
    paired = bootstrap_delta(better, base, paired=True)
    unpaired = bootstrap_delta(better, base, paired=False)
    assert paired["value"] == unpaired["value"] == pytest.approx(better.mean() - base.mean())
    assert paired["lo"] > 0  # a consistent gain is significant when paired
    assert (paired["hi"] - paired["lo"]) < (unpaired["hi"] - unpaired["lo"])
    same = bootstrap_delta(base, base, paired=True)
    assert same == {"value": 0.0, "lo": 0.0, "hi": 0.0}
    with pytest.raises(ValueError):
        bootstrap_delta([1.0, 0.0], [1.0], paired=True)


def test_scores_from_counts_match_samples():
    samples = [
        ProblemSamples("a", ["correct", "wrong", "wrong"], ["1", "2", "2"]),
        ProblemSamples("b", ["correct", "correct", "wrong"], ["1", "1", "3"]),
    ]
    c, n = [s.n_correct for s in samples], [s.n for s in samples]
    maj = [maj_correct(s) for s in samples]
    for metric in ("avg", "maj", "pass@2"):
        assert np.allclose(scores_from_counts(c, n, maj, metric), per_problem_scores(samples, metric))
    with pytest.raises(ValueError):
        per_problem_scores(samples, "best")


def test_bootstrap_macro_is_mean_of_group_means():
    from sftadapt.eval.metrics import bootstrap_macro_delta

    small, large = [1.0, 0.0], [0.0] * 9 + [1.0]  # means 0.5 and 0.1: macro 0.3, not the pooled 2/12
    res = bootstrap_macro_delta([small, large])
    assert res["value"] == pytest.approx(0.3)
    assert res["lo"] <= 0.3 <= res["hi"]
    # A paired delta whose per-problem differences are constant has a zero-width interval.
    shifted = bootstrap_macro_delta([[1.0, 1.0], [1.0] * 10], [[0.0, 0.0], [0.5] * 10], paired=[True, True])
    assert shifted == {"value": pytest.approx(0.75), "lo": pytest.approx(0.75), "hi": pytest.approx(0.75)}
    with pytest.raises(ValueError):
        bootstrap_macro_delta([[1.0], []])
