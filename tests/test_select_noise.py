"""benchmarks/select_noise.py: the beta-binomial fit to a selection pool and the share of a chosen set that fresh
samples put back in the band."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "select_noise.py"
_spec = importlib.util.spec_from_file_location("select_noise", _PATH)
noise = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(noise)


def test_the_fit_recovers_the_prior_of_an_exact_beta_binomial_pool():
    a, b, k = 0.5, 1.5, 4
    pool = {c: round(100000 * noise.beta_binomial(c, k, a, b)) for c in range(k + 1)}
    assert sum(noise.beta_binomial(c, k, a, b) for c in range(k + 1)) == pytest.approx(1.0)
    fit = noise.fit_beta(pool, k)
    assert fit == pytest.approx((a, b), rel=0.02)


def test_a_pool_without_spread_between_problems_has_no_prior():
    # every problem at the same rate: binomial counts, no over-dispersion
    pool = {0: 3164, 1: 4219, 2: 2109, 3: 469, 4: 39}  # Binomial(4, 0.25) x 10000
    with pytest.raises(ValueError, match="not over-dispersed"):
        noise.fit_beta(pool, 4)


def test_the_report_weighs_each_chosen_count_by_its_posterior():
    selection = {
        "k": 4,
        "pool_histogram": {"0/4": 118, "1/4": 46, "2/4": 25, "3/4": 17, "4/4": 18},
        "chosen_histogram": {"0/4": 0, "1/4": 43, "2/4": 21, "3/4": 0, "4/4": 0},
    }
    a, b = noise.fit_beta({0: 118, 1: 46, 2: 25, 3: 17, 4: 18}, 4)
    p1, p2 = (noise.in_band(a + c, b + 4 - c, 4, (0.2, 0.6)) for c in (1, 2))
    text = noise.report(selection, 4, (0.2, 0.6))
    assert (
        f"{(43 * p1 + 21 * p2) / 64:.1%}" in text and f"| 1/4 | 43 | {(a + 1) / (a + b + 4):.3f} | {p1:.3f} |" in text
    )
    assert "| 0/4 |" not in text  # no chosen problem at 0 of 4: no row
    # a band of c in {1, 2} of 4 holds the candidates a beta-binomial puts there
    line = noise.what_if(a, b, 4, 0.25, 0.5, 4, (0.2, 0.6))
    share = noise.beta_binomial(1, 4, a, b) + noise.beta_binomial(2, 4, a, b)
    assert f"{share:.1%} of candidates" in line and f"~{64 / share:.0f} for 64" in line
