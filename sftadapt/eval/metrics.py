"""Evaluation metrics over sampled answers: avg@n, unbiased pass@k, maj@n, bootstrap intervals. Pure: no I/O.

Input is one `ProblemSamples` per problem (the verdicts and extracted answers of its n samples); every metric
is a mean over problems of a per-problem score, and its 95% interval is a percentile bootstrap over problems.
Across several seeds of a study, `hierarchical_bootstrap` resamples seeds, then problems (report/study.py), and
`describe_delta` words a delta so that an interval holding 0 reads "no detectable difference", never "no change".

- **avg@n**: per problem `c/n` (c = samples judged `correct`), averaged over problems. With n=1 and greedy
  decoding it is plain accuracy. It is the papers' headline number (avg@16 at T=1).
- **pass@k** (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"): the unbiased estimate of
  the chance that at least one of k samples drawn without replacement from the n is correct,
  `1 - C(n-c, k) / C(n, k)`, computed as the stable product `1 - prod_{i=n-c+1}^{n} (1 - k/i)`.
- **maj@n** (majority vote): samples vote with their extracted answer after `normalize_answer` (a *string*
  normalisation: `\\frac12`-vs-`0.5` style equivalence is not merged, which can only split votes, never merge
  different answers). Samples with no extracted answer do not vote. The most voted answer wins; **ties go to
  the answer that appeared first** (lowest sample index). The problem scores 1 if the winning group holds a
  sample judged `correct` (identical normalised strings get the same verdict, except when one of them timed
  out), 0 otherwise, and 0 when no sample has an answer.

    from sftadapt.eval.metrics import ProblemSamples, summarize_samples
    summarize_samples([ProblemSamples("p1", ["correct", "wrong"], ["72", "7"])])["avg@2"]   # {'value': 0.5, ...}
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sftadapt.data.records import VERDICTS

DEFAULT_BOOTSTRAP = 1000
DEFAULT_CONFIDENCE = 0.95


@dataclass
class ProblemSamples:
    """The n samples of one problem: `verdicts[i]` in records.VERDICTS, `answers[i]` the extracted answer or None."""

    problem_id: str
    verdicts: list[str]
    answers: list[str | None]

    @property
    def n(self) -> int:
        return len(self.verdicts)

    @property
    def n_correct(self) -> int:
        return sum(v == "correct" for v in self.verdicts)


# ---------------------------------------------------------------- per-problem scores
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `c` correct out of `n` samples (needs 1 <= k <= n)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i): no huge binomials, no cancellation.
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


_SPACES = re.compile(r"\s+")
_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "$", "\\displaystyle")


def normalize_answer(answer: str | None) -> str | None:
    """The string samples vote with in maj@n: whitespace, `$`, sizing/spacing commands, `\\dfrac`/`\\tfrac`
    and a trailing period are removed; `{}`-wrapped text commands are kept. None/empty -> None."""
    if answer is None:
        return None
    text = answer
    for token in _DROP:
        text = text.replace(token, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _SPACES.sub("", text).rstrip(".")
    return text or None


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, list[int]]:
    """The winning normalised answer and the indices of the samples that voted for it.

    Ties between equally voted answers go to the one whose first vote came earliest. No votes -> (None, [])."""
    groups: dict[str, list[int]] = {}  # insertion order = order of first appearance
    for index, answer in enumerate(answers):
        key = normalize_answer(answer)
        if key is not None:
            groups.setdefault(key, []).append(index)
    if not groups:
        return None, []
    # max() returns the first maximal item, and dicts iterate in first-appearance order: that is the tie rule.
    winner = max(groups, key=lambda key: len(groups[key]))
    return winner, groups[winner]


def maj_correct(samples: ProblemSamples) -> int:
    """1 if the majority answer's group holds a `correct` sample, else 0 (see the module docstring)."""
    _, members = majority_vote(samples.answers)
    return int(any(samples.verdicts[i] == "correct" for i in members))


def per_problem_scores(samples: Sequence[ProblemSamples], metric: str) -> np.ndarray:
    """One score per problem for `metric` in `avg`, `maj`, `pass@K` (K an int)."""
    if metric == "avg":
        return np.array([s.n_correct / s.n for s in samples], dtype=float)
    if metric == "maj":
        return np.array([maj_correct(s) for s in samples], dtype=float)
    if metric.startswith("pass@"):
        k = int(metric.split("@", 1)[1])
        return np.array([pass_at_k(s.n, s.n_correct, k) for s in samples], dtype=float)
    raise ValueError(f"unknown metric '{metric}': use avg, maj or pass@K")


def scores_from_counts(n_correct: Sequence[int], n: Sequence[int], maj: Sequence[int], metric: str) -> np.ndarray:
    """Per-problem scores from stored counts (what results.json keeps per problem), for `avg`, `maj`, `pass@K`."""
    if metric == "avg":
        return np.asarray(n_correct, dtype=float) / np.asarray(n, dtype=float)
    if metric == "maj":
        return np.asarray(maj, dtype=float)
    if metric.startswith("pass@"):
        k = int(metric.split("@", 1)[1])
        return np.array([pass_at_k(ni, ci, k) for ci, ni in zip(n_correct, n)], dtype=float)
    raise ValueError(f"unknown metric '{metric}': use avg, maj or pass@K")


# ---------------------------------------------------------------- intervals
def _resampled_means(rng: np.random.Generator, scores: np.ndarray, n_boot: int) -> np.ndarray:
    return scores[rng.integers(0, scores.size, size=(n_boot, scores.size))].mean(axis=1)


def bootstrap_macro_delta(
    groups: Sequence[Sequence[float]],
    baseline_groups: Sequence[Sequence[float]] | None = None,
    paired: Sequence[bool] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, float]:
    """Mean over groups (benchmarks) of the per-group mean score, minus the same for `baseline_groups` if given,
    with a percentile-bootstrap interval; each group's problems are resampled independently (seeded).

    `paired[g]` (needs equal lengths): group g of both sides scores the same problems in the same order, so
    problems are resampled once and per-problem differences averaged (difficulty cancels: a tighter interval).
    Unpaired groups resample each side on its own. Returns {"value", "lo", "hi"}."""
    arrays = [np.asarray(g, dtype=float) for g in groups]
    bases = [np.asarray(g, dtype=float) for g in baseline_groups] if baseline_groups is not None else None
    if (
        not arrays
        or any(a.size == 0 for a in arrays)
        or (bases is not None and (len(bases) != len(arrays) or any(b.size == 0 for b in bases)))
    ):
        raise ValueError("bootstrap: every group needs at least one problem (and a baseline group of its own)")
    paired = list(paired) if paired is not None else [False] * len(arrays)
    rng = np.random.default_rng(seed)
    value, replicates = 0.0, np.zeros(n_boot)
    for g, a in enumerate(arrays):
        if bases is None:
            value += a.mean()
            replicates += _resampled_means(rng, a, n_boot)
        elif paired[g]:
            if a.size != bases[g].size:
                raise ValueError(f"bootstrap: paired group {g} needs equal lengths, got {a.size} and {bases[g].size}")
            value += a.mean() - bases[g].mean()
            replicates += _resampled_means(rng, a - bases[g], n_boot)
        else:
            value += a.mean() - bases[g].mean()
            replicates += _resampled_means(rng, a, n_boot) - _resampled_means(rng, bases[g], n_boot)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(replicates / len(arrays), [alpha, 1.0 - alpha])
    return {"value": float(value / len(arrays)), "lo": float(lo), "hi": float(hi)}


def bootstrap_mean(
    scores: Sequence[float], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, float]:
    """Mean of per-problem scores with a percentile-bootstrap interval over problems (resampled with
    replacement, `n_boot` times, seeded). Returns {"value", "lo", "hi"}."""
    return bootstrap_macro_delta([scores], n_boot=n_boot, seed=seed, confidence=confidence)


def bootstrap_delta(
    scores: Sequence[float],
    baseline: Sequence[float],
    paired: bool,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, float]:
    """`mean(scores) - mean(baseline)` with a bootstrap interval; paired = same problems in the same order
    (resample problems once, average the differences), else each side is resampled on its own."""
    return bootstrap_macro_delta([scores], [baseline], [paired], n_boot=n_boot, seed=seed, confidence=confidence)


def hierarchical_bootstrap(
    groups: Sequence[np.ndarray],
    baseline_groups: Sequence[np.ndarray] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, float]:
    """Mean over groups (benchmarks) of a seeds × problems score matrix's mean, minus the same for
    `baseline_groups` if given, with a two-level percentile-bootstrap interval: seeds, then problems.

    `groups[g][s, p]` is seed s's score on problem p of benchmark g; every seed scores the same problems in the
    same column order (a crossed design: one test set, several training runs). A replicate draws S seeds with
    replacement (one draw for all benchmarks: a seed is one whole run of the study) and, per benchmark, P problems
    with replacement, and averages the drawn block. The interval therefore holds both what a re-run with another
    seed moves and what another test set would: with 3 seeds the seed level is coarse, and the interval is wide
    exactly when the seeds disagree.

    `baseline_groups[g]` (same shape): the delta is paired within seeds and problems — seed s of the arm against
    seed s of the baseline (they share that seed's warm-up, data draw and test problems), problem p against p —
    so one draw of seeds and problems applies to both sides. With one seed the seed level is skipped and this is
    exactly `bootstrap_macro_delta` (paired) on the single row. Returns {"value", "lo", "hi"}."""
    arrays = [np.atleast_2d(np.asarray(g, dtype=float)) for g in groups]
    if baseline_groups is not None:
        bases = [np.atleast_2d(np.asarray(g, dtype=float)) for g in baseline_groups]
        if len(bases) != len(arrays) or any(a.shape != b.shape for a, b in zip(arrays, bases)):
            raise ValueError(
                "hierarchical bootstrap: each baseline group needs the arm's seeds × problems shape, got "
                f"{[a.shape for a in arrays]} and {[b.shape for b in bases]}"
            )
        arrays = [a - b for a, b in zip(arrays, bases)]
    if not arrays or any(a.size == 0 for a in arrays) or len({a.shape[0] for a in arrays}) != 1:
        raise ValueError("hierarchical bootstrap: every group needs problems, and all groups the same seeds")
    n_seeds = arrays[0].shape[0]
    if n_seeds == 1:
        return bootstrap_macro_delta([a[0] for a in arrays], n_boot=n_boot, seed=seed, confidence=confidence)
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    value, replicates = 0.0, np.zeros(n_boot)
    for a in arrays:
        value += a.mean()
        per_problem = a[seed_draws].mean(axis=1)  # (n_boot, P): each problem's mean over the drawn seeds
        problem_draws = rng.integers(0, a.shape[1], size=(n_boot, a.shape[1]))
        replicates += np.take_along_axis(per_problem, problem_draws, axis=1).mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(replicates / len(arrays), [alpha, 1.0 - alpha])
    return {"value": float(value / len(arrays)), "lo": float(lo), "hi": float(hi)}


def describe_delta(value: float, lo: float, hi: float, scale: float = 100.0, unit: str = " points") -> str:
    """Words for a delta and its interval that never read "no detectable difference" as "no difference":
    an interval that holds 0 says the data cannot tell the sign, and how large an effect it still allows."""
    if lo == hi:  # every resample gives the same delta (e.g. an arm that answers exactly as base does)
        return f"{scale * value:+.1f}{unit} on every resample (no spread to measure)"
    if lo > 0:
        return f"higher by {scale * value:.1f}{unit} (95% interval {scale * lo:+.1f} to {scale * hi:+.1f})"
    if hi < 0:
        return f"lower by {-scale * value:.1f}{unit} (95% interval {scale * lo:+.1f} to {scale * hi:+.1f})"
    loss, gain = max(-scale * lo, 0.0) + 0.0, max(scale * hi, 0.0) + 0.0  # + 0.0: never print "-0.0"
    return (
        f"no detectable difference: {scale * value:+.1f}{unit}, and the 95% interval "
        f"({scale * lo:+.1f} to {scale * hi:+.1f}) allows anything from a loss of {loss:.1f} to a gain of "
        f"{gain:.1f}"
    )


# ---------------------------------------------------------------- summary
def default_ks(n: int) -> list[int]:
    """pass@k for k = 1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks + ([n] if ks[-1] != n else [])


def verdict_counts(samples: Sequence[ProblemSamples]) -> dict[str, int]:
    """How many samples got each verdict (all of records.VERDICTS present, zeros included)."""
    counts = Counter(v for s in samples for v in s.verdicts)
    unknown = set(counts) - set(VERDICTS)
    if unknown:
        raise ValueError(f"unknown verdicts {sorted(unknown)}: expected one of {VERDICTS}")
    return {v: counts.get(v, 0) for v in VERDICTS}


def summarize_samples(
    samples: Sequence[ProblemSamples], ks: Sequence[int] | None = None, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> dict:
    """All metrics of one benchmark: `avg@n`, `pass@k` for each k, `maj@n`, each {"value","lo","hi"};
    plus `n`, `n_problems`, `n_samples` and verdict `counts`. Every problem must have the same n."""
    if not samples:
        raise ValueError("summarize_samples: no problems")
    sizes = {s.n for s in samples}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"summarize_samples: every problem needs the same n >= 1 samples, got sizes {sorted(sizes)}")
    n = sizes.pop()
    ks = list(ks) if ks is not None else default_ks(n)
    out: dict = {"n": n, "n_problems": len(samples), "n_samples": n * len(samples)}
    out[f"avg@{n}"] = bootstrap_mean(per_problem_scores(samples, "avg"), n_boot, seed)
    for k in ks:
        out[f"pass@{k}"] = bootstrap_mean(per_problem_scores(samples, f"pass@{k}"), n_boot, seed)
    out[f"maj@{n}"] = bootstrap_mean(per_problem_scores(samples, "maj"), n_boot, seed)
    out["counts"] = verdict_counts(samples)
    return out
