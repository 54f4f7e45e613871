"""Verifier inputs a hostile model output or data set may hold (issue: hostile input)."""

import pytest

from sftadapt.verify import Verifier, extract_answer, quick_verdict, verify_one


def test_unbalanced_latex_is_no_answer_not_a_match():
    text = "\\frac{1}{" * 500
    assert extract_answer(text) == (None, "none")
    assert verify_one("1", text).verdict == "no_answer"
    # balanced text still falls back to its last number
    assert extract_answer("so we get {x} = 12 apples") == ("12", "last_number")


def test_a_gold_that_does_not_parse_in_time_is_error_not_timeout():
    gold = "\\frac{1}{" * 500
    assert verify_one(gold, "\\boxed{1}", timeout=1).verdict == "error"
    with Verifier(workers=1, timeout=1.0) as verifier:
        (v,) = verifier.verify_many([gold], ["\\boxed{1}"])
    assert v.verdict == "error" and "gold" in v.detail


def test_a_power_of_ten_against_its_100001_written_digits():
    digits = "1" + "0" * 100_000
    assert verify_one("10^{100000}", f"The answer is {digits}", timeout=10).verdict == "correct"
    assert verify_one("10^{100000}", f"The answer is {digits[:-1]}1", timeout=10).verdict == "wrong"
    with Verifier(workers=1, timeout=10.0) as verifier:
        got = verifier.verify_many(["10^{100000}", digits], [digits, "\\boxed{10^{100000}}"])
    assert [v.verdict for v in got] == ["correct", "correct"]


@pytest.mark.parametrize(
    "gold, text, verdict",
    [
        ("42", "#### 42", "correct"),
        ("42", "so \\boxed{41}", "wrong"),
        ("1,000", "The answer is 1000.", "correct"),
        ("0.5", "\\boxed{1/2}", "correct"),
        ("-3", "\\boxed{-3}", "correct"),
    ],
)
def test_plain_numbers_are_decided_without_math_verify_and_agree_with_it(gold, text, verdict):
    quick = quick_verdict(gold, text)
    assert quick is not None and quick.verdict == verdict
    import sftadapt.verify.extract as V
    from sftadapt.verify import verify_item

    # the slow path (math-verify) gives the same verdict when the quick path is switched off
    original = V._fast_numeric
    V._fast_numeric = lambda g, e: None
    try:
        assert verify_item(gold, text, 5).verdict == verdict
    finally:
        V._fast_numeric = original


def test_decimals_that_differ_still_go_to_math_verify():
    assert quick_verdict("0.333333", "\\boxed{1/3}") is None
    assert quick_verdict("\\frac{1}{2}", "\\boxed{0.5}") is None
