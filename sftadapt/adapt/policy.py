"""The keep / guide / fallback decisions of the rewriting stage, as pure functions (no model, no I/O).

- `ngram_jaccard(a, b, n=5)`: character n-gram Jaccard similarity of two texts (whitespace collapsed, case
  folded); a guided response at or above `near_copy_threshold` (default 0.9) of the expert text is a copy.
- `reference_mention(text, phrases)`: the first phrase ("teacher", "reference solution", ...) the text
  mentions, case-insensitively; a guided response that talks about its reference cannot be a training
  response for the plain prompt, where there is no reference.
- `guided_rejection(...)`: the reason a *correct* guided response is still refused, or None. (rewrite.py also
  refuses a correct response cut by `max_new_tokens`: "truncated".)
- `candidates_to_score(...)` / `choose(...)`: which verified responses need a target log-prob, and which are
  kept: `most_likely` (highest mean token log-prob under the target, ties to the earlier sample), `first`
  (earliest correct sample), `all_distinct` (every distinct correct text, most likely first, up to
  `max_keep`; "distinct" = different after collapsing whitespace — RFT dedups by equation sequence, we
  use the text).
- `explain_empty(...)`: one sentence for the summary on why an origin has no rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

KEEP_POLICIES = ("most_likely", "first", "all_distinct")


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def char_ngrams(text: str, n: int = 5) -> set[str]:
    """Character n-grams of the normalised text; a text shorter than n is its own single gram."""
    text = _normalise(text)
    if len(text) < n:
        return {text} if text else set()
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def ngram_jaccard(a: str, b: str, n: int = 5) -> float:
    """|A ∩ B| / |A ∪ B| over character n-grams; two empty texts are identical (1.0)."""
    grams_a, grams_b = char_ngrams(a, n), char_ngrams(b, n)
    union = grams_a | grams_b
    if not union:
        return 1.0
    return len(grams_a & grams_b) / len(union)


def reference_mention(text: str, phrases: Sequence[str]) -> str | None:
    folded = _normalise(text)
    for phrase in phrases:
        if phrase and _normalise(phrase) in folded:
            return phrase
    return None


def guided_rejection(
    text: str, reference: str, threshold: float, phrases: Sequence[str], n: int = 5
) -> tuple[str | None, float]:
    """(reason or None, Jaccard similarity to the reference) for a verified guided response."""
    similarity = ngram_jaccard(text, reference, n)
    if similarity >= threshold:
        return f"near_copy: {n}-gram Jaccard {similarity:.3f} >= {threshold:g}", similarity
    phrase = reference_mention(text, phrases)
    if phrase is not None:
        return f"mentions_reference: '{phrase}'", similarity
    return None, similarity


def rejection_kind(reason: str | None) -> str | None:
    """`near_copy` | `mentions_reference` | `truncated` | None, the counter a rejection reason goes to."""
    return reason.split(":", 1)[0] if reason else None


# ---------------------------------------------------------------- keep policy
@dataclass(frozen=True)
class Candidate:
    """A verified, not rejected response: its sample index, text and (once scored) mean target log-prob."""

    index: int
    text: str
    target_mean: float | None = None


def distinct(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The first candidate of each distinct text, in sample order."""
    seen: set[str] = set()
    out = []
    for cand in candidates:
        key = " ".join(cand.text.split())
        if key not in seen:
            seen.add(key)
            out.append(cand)
    return out


def candidates_to_score(candidates: Sequence[Candidate], keep: str) -> list[Candidate]:
    """The candidates whose target log-probs the policy needs: all distinct ones to rank, or just the first."""
    if keep not in KEEP_POLICIES:
        raise ValueError(f"keep policy '{keep}' is unknown: choose one of {KEEP_POLICIES}")
    ordered = sorted(candidates, key=lambda c: c.index)
    if keep == "first":
        return ordered[:1]
    return distinct(ordered)


def choose(candidates: Sequence[Candidate], keep: str, max_keep: int = 4) -> list[Candidate]:
    """The kept candidates (empty when there are none). Ranking policies need `target_mean` on each."""
    pool = candidates_to_score(candidates, keep)
    if not pool or keep == "first":
        return pool
    missing = [c.index for c in pool if c.target_mean is None]
    if missing:
        raise ValueError(f"keep={keep} ranks by target log-prob, but samples {missing} were not scored")
    ranked = sorted(pool, key=lambda c: (-c.target_mean, c.index))  # type: ignore[operator]
    return ranked[:1] if keep == "most_likely" else ranked[:max_keep]


# ---------------------------------------------------------------- summary text
def explain_empty(origin: str, method: str, counts: dict[str, int], k: int, tries: int) -> str:
    """Why `origin` has no rows, from the stage counters (problems, self_solved, guided_tried, ...)."""
    n = counts.get("problems", 0)
    if origin == "self":
        if method == "prompted_rewrite":
            return "self: 0 rows — the prompted-rewrite baseline does not sample the target on its own"
        if method == "select_most_likely" and counts.get("self_solved", 0):
            return (
                f"self: 0 rows — {counts['self_solved']} problems had correct samples, but the target found "
                "the expert solution more likely every time"
            )
        cut = counts.get("self_truncated", 0)
        why = f"self: 0 rows — none of the {n} problems had a correct answer among its k={k} samples"
        return why + (f" that ended within max_new_tokens ({cut} correct ones were cut off)" if cut else "")
    if origin == "guided":
        if method != "mind_the_gap":
            return f"guided: 0 rows — the {method} method has no guided stage"
        tried = counts.get("guided_tried", 0)
        if tried == 0:
            return "guided: 0 rows — every problem was solved in stage 1"
        return (
            f"guided: 0 rows — none of the {tried} problems that reached stage 2 got an accepted response in "
            f"{tries} tries ({counts.get('guided_correct', 0)} of {tried * tries} tries correct; refused: "
            f"{counts.get('guided_near_copy', 0)} near-copies, {counts.get('guided_mentions_reference', 0)} "
            f"mentioning the reference, {counts.get('guided_truncated', 0)} cut by max_new_tokens)"
        )
    if origin == "expert":
        if method == "select_most_likely":
            return "expert: 0 rows — for every problem one of the target's own correct samples was more likely"
        return "expert: 0 rows — every problem got a verified response of the target, none fell back"
    if origin == "rewrite":
        if method != "prompted_rewrite":
            return "rewrite: 0 rows — only the prompted_rewrite method writes them"
        cut = counts.get("rewrite_truncated", 0)
        return (
            f"rewrite: 0 rows — none of the {n} rewrites kept the gold answer"
            + (f" within max_new_tokens ({cut} correct ones were cut off)" if cut else "")
            + ", all fell back to the expert"
        )
    return f"{origin}: 0 rows"
