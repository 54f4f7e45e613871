"""The keep / guide / fallback decisions of the rewriting stage, as pure functions (no model, no I/O).

- `ngram_jaccard(a, b, n=5)`: character n-gram Jaccard similarity of two texts (whitespace collapsed, case
  folded); a guided response at or above `near_copy_threshold` (default 0.9) of the expert text is a copy.
- `reference_mention(text, phrases)`: the first phrase ("teacher", "reference solution", ...) the text
  mentions, case-insensitively; a guided response that talks about its reference cannot be a training
  response for the plain prompt, where there is no reference.
- `meta_text(text, context)`: what in the text talks about the mapping task instead of solving the problem (a
  word 6-gram of a mapping prompt's instruction, talk of rewriting), or None; `missing_reasoning(...)`: why a
  text is an answer-only filler, or None. DART's gate (reward.py: `meta_text`, `no_reasoning`) and the rewrite
  stage share them.
- `guided_rejection(...)`: the reason a *correct* guided response is still refused (near-copy, reference
  mention, meta text), or None; `rewrite_rejection(...)`: the same for a prompted rewrite (meta text,
  answer-only filler). (rewrite.py also refuses a correct response cut by `max_new_tokens`: "truncated".)
- `candidates_to_score(...)` / `choose(...)`: which verified responses need a target log-prob, and which are
  kept: `most_likely` (highest mean token log-prob under the target, ties to the earlier sample), `first`
  (earliest correct sample), `all_distinct` (every distinct correct text, most likely first, up to
  `max_keep`; "distinct" = different after collapsing whitespace — RFT dedups by equation sequence, we
  use the text).
- `explain_empty(...)`: one sentence for the summary on why an origin has no rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

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
    text: str, reference: str, threshold: float, phrases: Sequence[str], n: int = 5, problem: str = ""
) -> tuple[str | None, float]:
    """(reason or None, Jaccard similarity to the reference) for a verified guided response."""
    similarity = ngram_jaccard(text, reference, n)
    if similarity >= threshold:
        return f"near_copy: {n}-gram Jaccard {similarity:.3f} >= {threshold:g}", similarity
    phrase = reference_mention(text, phrases)
    if phrase is not None:
        return f"mentions_reference: '{phrase}'", similarity
    meta = meta_text(text, (problem, reference))
    if meta is not None:
        return f"meta_text: {meta}", similarity
    return None, similarity


def rewrite_rejection(text: str, problem: str, reference: str, answer: str | None = None) -> str | None:
    """The reason a *correct* one-rewrite baseline (SDFT's prompt, or the MAPPER prompt) is still refused, or None:
    it talks about the task (`meta_text`) or is an answer-only filler (`no_reasoning`, at MIN_REASONING_FRAC) —
    DART's gate rules for the same failures, so no adapted set keeps a row that echoes the mapping prompt."""
    meta = meta_text(text, (problem, reference))
    if meta is not None:
        return f"meta_text: {meta}"
    why = missing_reasoning(text, problem, reference, answer)
    return f"no_reasoning: {why}" if why else None


def rejection_kind(reason: str | None) -> str | None:
    """`near_copy` | `mentions_reference` | `meta_text` | `truncated` | None, the counter a rejection reason goes
    to."""
    return reason.split(":", 1)[0] if reason else None


# ---------------------------------------------------------------- meta text and answer-only filler
# A response that talks about the task ("Rewrite the solution: ...", "in your own words") instead of solving the
# problem is no training response for the plain solve prompt, where there is no task to talk about. Two signs:
# - it shares a word n-gram with the instruction text of a mapping prompt: every template of data/prompts.py that
#   embeds a solution (MAPPER, which DART and the prompted rewrite send; SDFT, SDFT's own; GUIDED), the problem
#   and the solution they embed left out. Derived from the templates themselves, so the check follows any edit of them;
# - it matches one of META_PATTERNS, talk of rewriting that does not echo the prompt word for word.
# Either one is ignored where the problem or the expert solution says it too (a problem may ask to rewrite an
# expression; an expert may "rewrite the equation"): only what the response adds counts.
META_NGRAM = 6
META_PATTERNS = (
    # "Rewriting the solution in ...", "rewrite the answer as": the act named with its object (words split by
    # whitespace only, so a LaTeX command such as \text is no object)
    r"\b(?:rewrit|reword|paraphras)\w*(?:\s+\w+){0,3}?\s+"
    r"(?:solutions?|answers?|reasoning|responses?|explanations?|version|words|steps)\b",
    # "Rewrite the problem as follows:", not "rewriting this problem into equation form"
    r"\b(?:rewrit|reword|paraphras)\w*\s+(?:the|this)\s+(?:problem|question)\s+(?:as|by|in)\b",
    # a heading: "Rewritten:", "Rewrite the problem:"
    r"\b(?:rewrit|reword|paraphras)\w*(?:\s+(?:the|this|my|your))?"
    r"(?:\s+(?:solution|problem|question|answer|reasoning|response|explanation|text))?\s*:",
    r"\b(?:your|my) own words\b",
    r"\b(?:as|in) your own\b",
    r"\bas (?:requested|instructed)\b",
    r"\bhere(?:'s| is) (?:the |my |a |your )?(?:rewritten|revised|reworded|paraphrased)\b",
)
_META_RES = tuple(re.compile(p) for p in META_PATTERNS)
_PLACEHOLDER = re.compile(r"\{(?:problem|solution)\}")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _word_ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def instruction_ngrams(n: int = META_NGRAM) -> frozenset[tuple[str, ...]]:
    """The word n-grams (case folded) of the instruction text of every mapping prompt template: the templates
    of data/prompts.py that embed a `{solution}`, split at their placeholders so no n-gram spans a problem or
    a solution. Read from prompts.TEMPLATES at every call (cached per set of templates), so an added or edited
    template is checked at once."""
    from sftadapt.data.prompts import TEMPLATES

    return _template_ngrams(tuple(t for t in TEMPLATES.values() if "{solution}" in t), n)


@lru_cache(maxsize=8)
def _template_ngrams(templates: tuple[str, ...], n: int) -> frozenset[tuple[str, ...]]:
    grams: set[tuple[str, ...]] = set()
    for template in templates:
        for piece in _PLACEHOLDER.split(template):
            grams.update(_word_ngrams(_words(piece.replace("{{", "{").replace("}}", "}")), n))
    return frozenset(grams)


def meta_text(text: str, context: Sequence[str] = (), n: int = META_NGRAM) -> str | None:
    """What in `text` talks about the mapping task instead of solving the problem, or None: the first word n-gram
    it shares with a mapping prompt's instruction text, else the first META_PATTERNS match. Whatever `context`
    (the problem, the expert solution) contains as well is not counted."""
    words = _words(text)
    known = {g for c in context for g in _word_ngrams(_words(c), n)}
    instruction = instruction_ngrams(n)
    for gram in _word_ngrams(words, n):
        if gram in instruction and gram not in known:
            return f"echoes the mapping prompt '{' '.join(gram)}'"
    folded, folded_context = _normalise(text), _normalise(" ".join(context))
    for pattern in _META_RES:
        match = pattern.search(folded)
        if match and not pattern.search(folded_context):
            return f"'{match.group(0)}'"
    return None


# Reasoning (answer-only filler): what a response shows outside its \boxed{}, measured against what the expert shows.
# - A computation is an "=" (or "equals", "≈") between a number or closing bracket and a number, an opening
#   bracket or a \frac ("13 + 19 = 32", "(2+6)·5=40"; not the assignment "c=13"); a text without any, but with an
#   arithmetic expression (two numbers joined by an operator, a \frac), shows one.
# - An intermediate result of the expert is a number right after one of its "=" that is in neither the problem nor
#   the final answer ("(2+6)·5+18=40+18=58": 40).
# A response carries the reasoning when it shows at least `min_frac` as many computations as the expert (at least
# one when the expert shows any), or reaches at least `min_frac` of the expert's intermediate results (a wordy
# derivation: "half of 32 is 16"). An answer-only filler ("I'll give you the answer. So the answer is \boxed{58}")
# does neither. Why not the intermediate results alone: the target's own correct solutions include some with a
# slip on the way that the final answer hides ("32 / 2 = 15 ... 15 - 13 = 3"); they carry reasoning, just not the
# expert's. The bar never exceeds what the expert shows, so the expert solution itself always passes, and a wordy
# expert without computations or intermediate results asks nothing.
MIN_REASONING_FRAC = 0.5
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?![\d,])(?:\.\d+)?|\d+(?:\.\d+)?")
_RESULT = re.compile(r"=\s*(?:\\?\$|\\[,;! ]|\{)*\s*-?\s*(\d{1,3}(?:,\d{3})+(?![\d,])(?:\.\d+)?|\d+(?:\.\d+)?)")
_EQUALS = re.compile(r"=|≈|\\approx\b|\bequals\b|\bis equal to\b", re.IGNORECASE)
_LEFT_OPERAND = re.compile(r"[\d)}\]]\s*\$?\s*$")
_RIGHT_OPERAND = re.compile(r"\s*\$?\s*(?:-?\s*\d|\(|\\frac\b)")
_OPERATOR = r"(?:[-+*/×÷·]|\\cdot|\\times|\\div|\bplus\b|\bminus\b|\btimes\b|\bdivided by\b|\bmultiplied by\b)"
_EXPRESSION = re.compile(rf"\d[\s$)\]}}]*{_OPERATOR}[\s$(\[{{]*-?\d|\\frac\s*\{{", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _number_key(raw: str) -> str:
    """One spelling per value: thousands separators and trailing decimal zeros dropped ("1,000.50" = "1000.5")."""
    text = raw.replace(",", "")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.lstrip("0") or "0"


def numbers(text: str) -> set[str]:
    """Every number written in `text` (sign ignored), normalised by `_number_key`."""
    return {_number_key(m) for m in _NUMBER.findall(text)}


def boxed_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every `\\boxed{...}` (or `\\fbox{...}`), braces balanced; an unclosed one runs to the end."""
    spans = []
    for match in _BOXED.finditer(text):
        if spans and match.start() < spans[-1][1]:
            continue  # nested inside the previous one
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        spans.append((match.start(), i))
    return spans


def without_boxed(text: str) -> str:
    """`text` with every `\\boxed{...}` cut out: what remains is the reasoning it shows."""
    out, last = [], 0
    for start, end in boxed_spans(text):
        out.append(text[last:start])
        last = end
    return " ".join(out + [text[last:]])


def last_boxed(text: str) -> str:
    """The content of the last `\\boxed{...}` ('' when there is none)."""
    spans = boxed_spans(text)
    if not spans:
        return ""
    start, end = spans[-1]
    return text[text.index("{", start) + 1 : end - 1]


def computations(text: str) -> int:
    """How many computations `text` shows outside its \\boxed{}: its equalities between numbers (see above), or 1
    for an arithmetic expression without any."""
    body = without_boxed(text)
    count = sum(
        bool(_LEFT_OPERAND.search(body[max(0, m.start() - 8) : m.start()]) and _RIGHT_OPERAND.match(body, m.end()))
        for m in _EQUALS.finditer(body)
    )
    return count or int(bool(_EXPRESSION.search(body)))


def intermediate_results(solution: str, problem: str, answer: str) -> set[str]:
    """The expert's intermediate results: numbers right after an "=" of `solution` (outside \\boxed{}) that are
    neither in `problem` nor in `answer`."""
    found = {_number_key(m) for m in _RESULT.findall(without_boxed(solution))}
    return found - numbers(problem) - numbers(answer)


def missing_reasoning(
    text: str, problem: str, solution: str, answer: str | None = None, min_frac: float = MIN_REASONING_FRAC
) -> str | None:
    """Why `text` carries no reasoning (an answer-only filler), or None: it shows fewer than `min_frac` as many
    computations as the expert `solution` (at least one when the expert shows any) and fewer than `min_frac` of
    the expert's intermediate results. `answer`: the gold answer (default: the last \\boxed{} of `solution`)."""
    expert_steps = computations(solution)
    needed = max(1, math.ceil(min_frac * expert_steps)) if expert_steps and min_frac > 0 else 0
    shown = computations(text)
    if shown >= needed:
        return None
    wanted = intermediate_results(solution, problem, last_boxed(solution) if answer is None else answer)
    reached = wanted & numbers(without_boxed(text))
    if wanted and len(reached) >= min_frac * len(wanted):
        return None
    why = f"{shown} computation(s) outside \\boxed{{}} where the expert shows {expert_steps} (needs {needed})"
    return why + (f", and {len(reached)} of its {len(wanted)} intermediate results" if wanted else "")


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
        cut, refused = counts.get("rewrite_truncated", 0), counts.get("rewrite_refused", 0)
        return (
            f"rewrite: 0 rows — none of the {n} rewrites kept the gold answer"
            + (f" within max_new_tokens ({cut} correct ones were cut off)" if cut else "")
            + (f" ({refused} correct ones were refused as meta text or answer-only filler)" if refused else "")
            + ", all fell back to the expert"
        )
    return f"{origin}: 0 rows"
