"""Answer extraction, math-verify equivalence, and the process pool's timeouts (sftadapt/verify/extract.py)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from sftadapt.verify import Verdict, Verifier, extract_answer, verify_one

REPO_ROOT = Path(__file__).resolve().parents[1]

# (gold, response text, expected verdict). The expectation is the mathematically right verdict; cases that
# math-verify gets wrong are marked xfail(strict=True) below, never flipped.
EQUIVALENCE = [
    # fractions, decimals, \frac vs /, \dfrac
    ("0.75", "so the answer is \\boxed{3/4}.", "correct"),
    ("\\frac{3}{4}", "The answer is 0.75.", "correct"),
    ("3/4", "$\\boxed{\\frac{3}{4}}$", "correct"),
    ("\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}", "correct"),
    ("\\dfrac{7}{3}", "\\boxed{7/3}", "correct"),
    ("1.5", "\\boxed{\\frac{3}{2}}", "correct"),
    ("0.1", "\\boxed{\\tfrac{1}{10}}", "correct"),
    ("72", "\\boxed{72.0}", "correct"),
    # units and \text{}, money, degrees
    ("5", "The side is \\boxed{5 \\text{ cm}}.", "correct"),
    ("5 \\text{ cm}", "\\boxed{5}", "correct"),
    ("\\$36", "\\boxed{36}", "correct"),
    ("36", "\\boxed{\\$36}", "correct"),
    ("30^\\circ", "\\boxed{30}", "correct"),
    # percentages: 50% = 0.5; a bare 50 answers a "what percent" question (MATH writes the gold as 50\%)
    ("50\\%", "\\boxed{0.5}", "correct"),
    ("50\\%", "\\boxed{50}", "correct"),
    # thousands separators
    ("1000", "\\boxed{1,000}", "correct"),
    ("104", "so the answer is \\boxed{104.}", "correct"),  # a full stop inside the box (AIME24 gold)
    ("3.5", "\\boxed{3.5.}", "correct"),
    ("1,000", "#### 1000", "correct"),
    ("1234567", "So the total is 1,234,567 dollars.", "correct"),
    # equations
    ("5", "\\boxed{x=5}", "correct"),
    ("x=5", "\\boxed{5}", "correct"),
    ("y = 2x + 3", "\\boxed{y=2x+3}", "correct"),
    # intervals, sets, unordered solution lists, matrices
    ("(1,2]", "\\boxed{(1, 2]}", "correct"),
    ("[0,\\infty)", "\\boxed{[0, \\infty)}", "correct"),
    ("\\{1,2,3\\}", "\\boxed{\\{3,2,1\\}}", "correct"),
    ("-2, 1", "\\boxed{1, -2}", "correct"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "correct"),
    # negative numbers
    ("-3", "\\boxed{-3}", "correct"),
    ("-\\frac{1}{2}", "The answer is $-0.5$.", "correct"),
    ("-7", "The temperature fell to -7 degrees.", "correct"),
    # answers inside text (GSM8K style)
    ("72", "Natalia sold 48 + 24 = 72 clips in April and May.", "correct"),
    ("18", "She makes 9 * 2 = 18 dollars.\n#### 18", "correct"),
    ("42", "The answer is 42 apples because she has more.", "correct"),
    # multiple-choice letters
    ("B", "The answer is (B).", "correct"),
    ("\\text{(C)}", "\\boxed{C}", "correct"),
    ("\\text{Evelyn}", "\\boxed{\\text{Evelyn}}", "correct"),
    # expressions, sqrt, pi
    ("(x+1)^2", "\\boxed{x^2+2x+1}", "correct"),
    ("x^2+7x+10", "\\boxed{(x+5)(x+2)}", "correct"),
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\sqrt{2}/2}", "correct"),
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\frac{1}{\\sqrt{2}}}", "correct"),
    ("2\\sqrt{3}", "\\boxed{\\sqrt{12}}", "correct"),
    ("\\pi", "\\boxed{\\pi}", "correct"),
    ("-\\frac{\\pi}{6}", "\\boxed{-\\pi/6}", "correct"),
    ("1.2\\times 10^{3}", "\\boxed{1200}", "correct"),
    ("10001_2", "\\boxed{10001_{2}}", "correct"),  # a base-2 numeral
    ("2", "\\boxed{\\sqrt{4}}", "correct"),
    ("100", "\\boxed{10^2}", "correct"),
    ("6", "\\boxed{\\binom{4}{2}}", "correct"),
    ("\\frac{9}{4}", "\\boxed{2\\frac{1}{4}}", "correct"),  # a mixed number
    ("[1,2]", "\\boxed{x \\in [1,2]}", "correct"),
    ("1 < x < 2", "\\boxed{(1,2)}", "correct"),  # the same solution set
    # math-verify gets these wrong (see KNOWN_MATH_VERIFY_ERRORS)
    ("\\frac{1}{3}", "\\boxed{0.\\overline{3}}", "correct"),
    ("i", "\\boxed{\\sqrt{-1}}", "correct"),
    ("45^\\circ", "\\boxed{\\frac{\\pi}{4}}", "correct"),
    ("\\sqrt{2}", "\\boxed{1.414213562}", "wrong"),
    ("52_8", "\\boxed{52_9}", "wrong"),  # base-8 52 is 42, base-9 52 is 47
    # clearly wrong
    ("8", "\\boxed{7}", "wrong"),
    ("0.75", "\\boxed{3/5}", "wrong"),
    ("-3", "\\boxed{3}", "wrong"),
    ("1000", "\\boxed{100}", "wrong"),
    ("5", "\\boxed{x=6}", "wrong"),
    ("(1,2]", "\\boxed{[1, 2]}", "wrong"),
    ("\\{1,2,3\\}", "\\boxed{\\{1,2\\}}", "wrong"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix}1\\\\3\\end{pmatrix}}", "wrong"),
    ("B", "\\boxed{C}", "wrong"),
    ("(x+1)^2", "\\boxed{x^2+1}", "wrong"),
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\sqrt{2}}", "wrong"),
    ("\\pi", "\\boxed{3.14}", "wrong"),  # an approximation is not the exact value
    ("\\frac{1}{3}", "The answer is 0.33.", "wrong"),
    ("72", "48 + 24 = 71 clips.", "wrong"),
    ("42", "The answer is forty-two.", "wrong"),
    ("(2, 3)", "\\boxed{(3, 2)}", "wrong"),  # an ordered pair
    ("\\infty", "\\boxed{-\\infty}", "wrong"),
    ("1", "\\boxed{0.999}", "wrong"),
    ("5", "\\boxed{5, 6}", "wrong"),  # words are an answer, but not one math-verify reads
    # no answer
    ("5", "I don't know.", "no_answer"),
    ("5", "", "no_answer"),
    ("5", "Please reason step by step and put your final answer within \\boxed{}.", "no_answer"),
    # an unverifiable gold is an error, not a wrong answer
    ("", "\\boxed{5}", "error"),
    ("}{", "\\boxed{5}", "error"),
]

# Cases where math-verify 0.9 disagrees with the mathematically right verdict.
KNOWN_MATH_VERIFY_ERRORS = {
    ("\\frac{1}{3}", "\\boxed{0.\\overline{3}}"): "math-verify 0.9 does not read a repeating decimal \\overline{}",
    ("i", "\\boxed{\\sqrt{-1}}"): "math-verify 0.9 parses as reals unless the LaTeX looks complex, so sqrt(-1) != i",
    ("45^\\circ", "\\boxed{\\frac{\\pi}{4}}"): "math-verify 0.9 drops ^\\circ (45) instead of converting to radians",
    (
        "\\sqrt{2}",
        "\\boxed{1.414213562}",
    ): "math-verify 0.9 accepts a decimal that agrees to 6 places, not only exact values",
    ("52_8", "\\boxed{52_9}"): "math-verify 0.9 drops a numeral's base subscript, so 52_8 and 52_9 both read as 52",
}


def _cases():
    for gold, text, expected in EQUIVALENCE:
        reason = KNOWN_MATH_VERIFY_ERRORS.get((gold, text))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(gold, text, expected, marks=marks, id=f"{expected}:{gold[:20]}|{text[-24:]}")


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=2, timeout=5.0) as pool:
        yield pool


@pytest.mark.parametrize("gold, text, expected", list(_cases()))
def test_equivalence(gold, text, expected):
    result = verify_one(gold, text)
    assert result.verdict == expected, result


def test_pool_agrees_with_verify_one_in_order(verifier):
    golds = [gold for gold, _, _ in EQUIVALENCE]
    texts = [text for _, text, _ in EQUIVALENCE]
    pooled = verifier.verify_many(golds, texts)
    serial = [verify_one(gold, text) for gold, text in zip(golds, texts)]
    assert len(pooled) == len(EQUIVALENCE) >= 40
    # Order: each verdict carries its own item's extraction.
    assert [(v.verdict, v.extracted, v.rule) for v in pooled] == [(v.verdict, v.extracted, v.rule) for v in serial]


def test_pool_order_with_distinct_answers(verifier):
    golds = [str(n) for n in range(60)]
    texts = [f"so the answer is \\boxed{{{n if n % 3 else n + 1}}}" for n in range(60)]
    verdicts = verifier.verify_many(golds, texts)
    assert [v.extracted for v in verdicts] == [str(n if n % 3 else n + 1) for n in range(60)]
    assert [v.verdict for v in verdicts] == ["correct" if n % 3 else "wrong" for n in range(60)]


# ---------------------------------------------------------------- extraction rules
@pytest.mark.parametrize(
    "text, answer, rule",
    [
        ("so \\boxed{\\frac{1}{\\sqrt{2}}}.", "\\frac{1}{\\sqrt{2}}", "boxed"),
        ("first \\boxed{1}, finally \\boxed{2}", "2", "boxed"),
        ("\\fbox{3}", "3", "boxed"),
        ("the answer is $\\boxed 5$.", "5", "boxed"),
        ("\\boxed\n{12}", "12", "boxed"),
        ("put it in \\boxed and stop; 4 apples", "4", "last_number"),  # `\boxed and` is not an answer
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}", "boxed"),
        ("\\boxed{\\left\\{ x \\right.}", "\\left\\{ x \\right.", "boxed"),  # escaped braces do not count
        ("good \\boxed{7} then cut off \\boxed{\\frac{1", "7", "boxed"),  # unclosed last box: the one before
        ("echo \\boxed{} of the prompt, then \\boxed{9}", "9", "boxed"),
        ("#### 72", "72", "gsm8k"),
        ("She has 3 left.\n#### 1,000\n", "1000", "gsm8k"),
        ("The answer is 42.", "42", "answer_is"),
        ("The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}", "answer_is"),
        ("Answer: (B)", "(B)", "answer_is"),
        ("The answer is **3.5**.", "3.5", "answer_is"),
        ("So the total is 1,234,567 dollars.", "1234567", "last_number"),
        ("x - 5 = -3.25", "-3.25", "last_number"),
        ("12 - 5", "5", "last_number"),  # a binary minus is not a sign
        ("the ratio is 3/4", "3/4", "last_number"),
        ("I don't know", None, "none"),
        ("", None, "none"),
    ],
)
def test_extraction_rules(text, answer, rule):
    assert extract_answer(text) == (answer, rule)


def test_rule_order_boxed_before_others():
    assert extract_answer("The answer is 3. #### 4 \\boxed{5} and 6") == ("5", "boxed")
    assert extract_answer("The answer is 3.\n#### 4\nthen 6") == ("4", "gsm8k")
    assert extract_answer("The answer is 3. Then 6 more") == ("3", "answer_is")


def test_deeply_nested_box_extracts_in_linear_time():
    depth = 5000
    text = "\\boxed{" + "{" * depth + "1" + "}" * depth + "}"
    started = time.perf_counter()
    answer, rule = extract_answer(text)
    assert (rule, len(answer)) == ("boxed", 2 * depth + 1)
    many_unclosed = "\\boxed{" * 100_000  # 700 kB of unclosed boxes: no quadratic rescans
    assert extract_answer(many_unclosed) == (None, "none")
    assert time.perf_counter() - started < 2.0


# ---------------------------------------------------------------- timeouts and the pool
PATHOLOGICAL = {
    "nested_braces": "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    "huge_power": "so the answer is \\boxed{10^{10^{10}}}",
    "power_tower": "\\boxed{" + "9^{" * 30 + "9" + "}" * 30 + "}",
    "one_megabyte": "\\frac{1}{2} + " * (1_000_000 // 14) + "\\boxed{" + "x+" * 1000 + "1}",
}


@pytest.fixture(scope="module")
def fast_verifier():
    with Verifier(workers=2, timeout=1.0) as pool:
        pool.wait_ready()  # start-up is not part of any item's budget
        yield pool


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_input_is_bounded_and_pool_recovers(fast_verifier, name):
    started = time.monotonic()
    result = fast_verifier.verify_one("10", PATHOLOGICAL[name])
    elapsed = time.monotonic() - started
    assert result.verdict in ("timeout", "wrong", "no_answer"), result
    # bounded by the deadline plus the kill; the slack is for a loaded 2-core machine (measured 2.08 s there),
    # while an unbounded parse of these inputs runs for minutes
    assert elapsed < fast_verifier.timeout + 3.0, f"{name} took {elapsed:.2f} s"
    # The next item works, through a restarted worker if this one was killed.
    assert fast_verifier.verify_one("1/2", "\\boxed{0.5}").verdict == "correct"


def test_huge_power_is_a_timeout_that_kills_a_worker(fast_verifier):
    restarts = fast_verifier.restarts
    result = fast_verifier.verify_one("10", PATHOLOGICAL["huge_power"])
    assert result.verdict == "timeout"
    assert (result.extracted, result.rule) == ("10^{10^{10}}", "boxed")  # recorded even though it was killed
    assert fast_verifier.restarts == restarts + 1


def test_a_hung_item_does_not_take_its_chunk_neighbours_with_it(fast_verifier):
    golds = [str(n) for n in range(20)] + ["10"] + [str(n) for n in range(20)]
    texts = (
        [f"\\boxed{{{n}}}" for n in range(20)] + [PATHOLOGICAL["huge_power"]] + [f"\\boxed{{{n}}}" for n in range(20)]
    )
    started = time.monotonic()
    verdicts = fast_verifier.verify_many(golds, texts)
    assert [v.verdict for v in verdicts] == ["correct"] * 20 + ["timeout"] + ["correct"] * 20
    assert fast_verifier.timeout <= verdicts[20].seconds < 2 * fast_verifier.timeout
    assert time.monotonic() - started < 2 * fast_verifier.timeout + 5


def test_large_texts_mixed_with_small_ones_come_back_in_order(verifier):
    # 100 kB texts are too big to queue behind a busy worker; small ones are queued. Neither may deadlock.
    texts = [("x " * 50_000 if n % 3 == 0 else "") + f"so \\boxed{{{n}}}" for n in range(24)]
    verdicts = verifier.verify_many([str(n) for n in range(24)], texts)
    assert [(v.verdict, v.extracted) for v in verdicts] == [("correct", str(n)) for n in range(24)]


def test_a_worker_that_dies_gives_error_and_is_replaced():
    import signal

    with Verifier(workers=1, timeout=30.0) as pool:
        pool.wait_ready()
        (pid,) = pool.pids
        killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
        killer.start()
        golds, texts = ["10", "2"], [PATHOLOGICAL["huge_power"], "\\boxed{2}"]
        verdicts = pool.verify_many(golds, texts)
        assert [v.verdict for v in verdicts] == ["error", "correct"]
        assert "died" in verdicts[0].detail and pool.pids != [pid] and pool.restarts == 1


def test_normal_items_never_restart_workers(verifier):
    pids, restarts = verifier.pids, verifier.restarts
    verifier.verify_many(["1/2"] * 30, ["\\boxed{0.5}"] * 30)
    assert (verifier.pids, verifier.restarts) == (pids, restarts)  # start-up is paid once


def test_pool_works_from_a_non_main_thread(fast_verifier):
    box: dict[str, list[Verdict]] = {}
    golds, texts = ["3/4", "8", "10"], ["\\boxed{0.75}", "\\boxed{7}", PATHOLOGICAL["huge_power"]]
    thread = threading.Thread(target=lambda: box.setdefault("out", fast_verifier.verify_many(golds, texts)))
    thread.start()
    thread.join(timeout=30)
    assert [v.verdict for v in box["out"]] == ["correct", "wrong", "timeout"]


def test_verify_one_in_a_thread_needs_timeout_none():
    errors, results = [], []

    def run():
        try:
            verify_one("1", "\\boxed{1}")
        except RuntimeError as err:
            errors.append(err)
        results.append(verify_one("1", "\\boxed{1}", timeout=None))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert len(errors) == 1 and "main thread" in str(errors[0])
    assert results[0].verdict == "correct"


def test_closed_verifier_refuses_work():
    pool = Verifier(workers=1, timeout=5.0)
    assert pool.verify_one("2", "\\boxed{2}").verdict == "correct"
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        pool.verify_many(["1"], ["1"])


def test_mismatched_lengths_are_rejected(verifier):
    with pytest.raises(ValueError, match="2 gold answers but 1 texts"):
        verifier.verify_many(["1", "2"], ["1"])


# ---------------------------------------------------------------- real data
def _data_dir() -> Path | None:
    for candidate in (os.environ.get("SFTADAPT_DATA_DIR"), REPO_ROOT.parent / "shared" / "data"):
        if candidate and Path(candidate, "gsm8k", "test.jsonl").is_file():
            return Path(candidate)
    return None


def test_gsm8k_gold_answers_verify_against_themselves(verifier):
    data_dir = _data_dir()
    if data_dir is None:
        pytest.skip("GSM8K test data not found: set SFTADAPT_DATA_DIR or put it at ../shared/data")
    with open(data_dir / "gsm8k" / "test.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line, _ in zip(handle, range(100))]
    golds = [row["answer"].split("#### ")[-1].strip() for row in rows]
    assert len(golds) == 100 and all(golds)
    bare = verifier.verify_many(golds, golds)
    assert [(gold, v.verdict) for gold, v in zip(golds, bare) if v.verdict != "correct"] == []
    solutions = verifier.verify_many(golds, [row["answer"] for row in rows])  # full worked solutions
    assert [(gold, v.verdict) for gold, v in zip(golds, solutions) if v.verdict != "correct"] == []
    assert {v.rule for v in solutions} == {"gsm8k"}
