"""How much of a re-measured pass-rate histogram a selection can put in a band: a beta-binomial fit to the select
stage's pool, and the share of chosen problems that k fresh samples would put back in the band.

Why. The select stage (sftadapt/adapt/select.py) keeps candidates the target solved c of k times with c/k in the
band; the rewrite then samples them k times afresh. A problem chosen at 1 of 4 may really be solved 10% of the
time (a lucky draw) or 40%: the fresh histogram spreads out again (regression to the mean). This script fits a
Beta(a, b) prior to the pool's counts by the method of moments, and for each selected count c prints the
posterior mean pass rate and the probability that k fresh samples land in the band; their average over the chosen
set is what the fit expects the rewrite's histogram to show, to compare with what it showed.

    python benchmarks/select_noise.py RUN_DIR            # a seed folder with select/selection.json
    python benchmarks/select_noise.py RUN_DIR --fresh-k 8
"""

from __future__ import annotations

import argparse
import json
from math import comb, exp, lgamma
from pathlib import Path


def fit_beta(hist: dict[int, int], k: int) -> tuple[float, float]:
    """Beta(a, b) whose beta-binomial(k) has the mean and variance of `hist` ({count: problems})."""
    n = sum(hist.values())
    mean = sum(c * m for c, m in hist.items()) / n
    var = sum(c * c * m for c, m in hist.items()) / n - mean**2
    mu = mean / k
    # Var = k mu (1 - mu) (1 + (k - 1) rho), rho = 1 / (a + b + 1)
    rho = (var / (k * mu * (1 - mu)) - 1) / (k - 1)
    if not 0 < rho < 1:
        raise ValueError(f"the pool's counts are not over-dispersed (rho {rho:.3f}): no beta prior fits them")
    total = 1 / rho - 1
    return mu * total, (1 - mu) * total


def beta_binomial(c: int, k: int, a: float, b: float) -> float:
    log = lgamma(c + a) + lgamma(k - c + b) - lgamma(k + a + b) - (lgamma(a) + lgamma(b) - lgamma(a + b))
    return comb(k, c) * exp(log)


def in_band(a: float, b: float, k: int, band: tuple[float, float]) -> float:
    """P(c / k in band) for c ~ BetaBinomial(k, a, b)."""
    return sum(beta_binomial(c, k, a, b) for c in range(k + 1) if band[0] <= c / k <= band[1])


def report(selection: dict, fresh_k: int, band: tuple[float, float]) -> str:
    k = selection["k"]
    pool = {int(key.split("/")[0]): v for key, v in selection["pool_histogram"].items()}
    chosen = {int(key.split("/")[0]): v for key, v in selection["chosen_histogram"].items()}
    a, b = fit_beta(pool, k)
    lines = [
        f"pool: {sum(pool.values())} candidates, k = {k}; Beta fit a = {a:.3f}, b = {b:.3f} "
        f"(mean pass rate {a / (a + b):.3f})",
        f"| chosen at | problems | posterior mean rate | P({fresh_k} fresh samples in [{band[0]}, {band[1]}]) |",
        "|---|---|---|---|",
    ]
    expected = 0.0
    for c, m in sorted(chosen.items()):
        p = in_band(a + c, b + k - c, fresh_k, band)
        expected += m * p
        if m:
            lines.append(f"| {c}/{k} | {m} | {(a + c) / (a + b + k):.3f} | {p:.3f} |")
    total = sum(chosen.values())
    lines.append(f"expected share of the chosen set in the band when re-measured: {expected / total:.1%}")
    # the ceiling: every chosen problem at the rate that k fresh samples put in the band most often
    best = max(
        (
            sum(
                comb(fresh_k, c) * r**c * (1 - r) ** (fresh_k - c)
                for c in range(fresh_k + 1)
                if band[0] <= c / fresh_k <= band[1]
            ),
            r,
        )
        for r in [i / 200 for i in range(1, 200)]
    )
    lines.append(
        f"ceiling: problems all solved exactly {best[1]:.3f} of the time land in the band {best[0]:.1%} of the time"
    )
    return "\n".join(lines)


def what_if(a: float, b: float, k: int, low: float, high: float, fresh_k: int, band, chosen: int = 64) -> str:
    """Another selection under the same prior: select_k = k, select_band = [low, high]."""
    counts = [c for c in range(k + 1) if low <= c / k <= high]
    share = sum(beta_binomial(c, k, a, b) for c in counts)
    fresh = sum(beta_binomial(c, k, a, b) * in_band(a + c, b + k - c, fresh_k, band) for c in counts) / share
    pool = chosen / share
    return (
        f"what if select_k = {k}, select_band = [{low}, {high}]: {share:.1%} of candidates in the band (a pool of "
        f"~{pool:.0f} for {chosen}, {pool * k:.0f} samples); expected fresh share in the band {fresh:.1%}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a seed folder (with select/selection.json)")
    ap.add_argument("--fresh-k", type=int, default=4, help="samples of the re-measurement (the rewrite's k)")
    ap.add_argument("--band", type=float, nargs=2, default=(0.2, 0.6), help="the band the histogram is read in")
    ap.add_argument(
        "--what-if",
        type=float,
        nargs=3,
        action="append",
        default=[],
        metavar=("K", "LOW", "HIGH"),
        help="also the expected fresh share of another selection (select_k K, select_band [LOW, HIGH])",
    )
    args = ap.parse_args(argv)
    selection = json.loads((args.run / "select" / "selection.json").read_text())
    print(report(selection, args.fresh_k, tuple(args.band)))
    pool = {int(key.split("/")[0]): v for key, v in selection["pool_histogram"].items()}
    a, b = fit_beta(pool, selection["k"])
    for k, low, high in args.what_if:
        print(what_if(a, b, int(k), low, high, args.fresh_k, tuple(args.band), selection["chosen"]))


if __name__ == "__main__":
    main()
