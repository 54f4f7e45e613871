"""Is a response's final answer equal to the gold answer? Answer extraction + math-verify equivalence,
with a per-item wall-clock timeout.

Two steps per item:
1. `extract_answer(text) -> (answer | None, rule)` takes the final answer out of a response, trying these
   rules in order and recording which one fired:
   - `boxed`: the last non-empty `\\boxed{...}` or `\\fbox{...}` (nested braces; the bare `\\boxed 5` form too).
   - `gsm8k`: the last `#### N` line.
   - `answer_is`: "The answer is ...", "final answer is ...", "Answer: ..." (to the end of the sentence).
   - `last_number`: the last number in the text, the last resort (thousands separators, negatives,
     decimals, simple fractions).
   - `none`: no answer was found.
2. Plain numbers first: when gold and extracted answer are both plain numbers, two integers compare exactly
   and equal decimals/fractions are correct, without math-verify (its LaTeX parse is ~2 ms, the whole cost
   of a simple item); any other pair goes on to math-verify. With an unclosed `{` in the text (truncated or
   garbled LaTeX) the `last_number` rule does not fire: the number is a fragment, not an answer.
3. Equivalence through math-verify: `verify(parse(gold), parse(pred))`, gold FIRST (it is not symmetric).
   Both sides are parsed wrapped as `$\\boxed{...}$`. A bare LaTeX gold such as `\\frac{\\sqrt2}{2}` parses
   to nothing, and `$...$` fails on golds such as `\\$18.90`; `\\boxed{}` parses every MATH-500 and GSM8K
   gold.

Verdicts (`Verdict.verdict`):
- `correct`, `wrong`.
- `no_answer`: nothing was extracted.
- `timeout`: the item ran past its time budget. It is its own verdict, never "wrong".
- `error`: the gold answer does not parse (or does not parse within the time limit), so the item cannot
  be verified (open-r1 returns None there), or the worker crashed on the item.

Numbers longer than Python's 4300-digit int-string limit (`10^{100000}` written out) are numbers: the
workers lift the limit (their wall-clock deadline bounds the cost), and `verify_one` lifts it for its call.

Why a process pool: math-verify bounds each of its parse/compare calls with `signal.alarm`. That works
only in the main thread and counts whole seconds. The limit applies per call, and an item makes several
calls, so an item can run several times the limit. A signal handler also runs only between Python
bytecodes, so a long call inside a C extension is not interrupted. (In our tests, sympy's big powers and
factorials such as `\\boxed{10^{10^{10}}}` did stop on time.) So `Verifier` runs items in worker processes
(spawn context: the caller may hold torch threads). The caller waits on pipes with a wall-clock deadline
per item; it uses no signals, so any thread may call it. A worker that overruns its item is killed
(SIGKILL) and restarted in the background. That item gets `timeout` and the batch carries on.
Items travel in chunks, and results come back in batches, to cut IPC. The deadline still applies per
item: each worker records in shared memory which item it is on and when that item started. When a worker
is killed, its other items (finished but not yet sent, or not started) are sent out again. Workers start
once per `Verifier` and warm up before their first item.

    from sftadapt.verify import Verifier, extract_answer, verify_one

    extract_answer("... so the answer is \\\\boxed{\\\\frac{1}{2}}.")    # ('\\\\frac{1}{2}', 'boxed')
    verify_one("0.5", "The answer is 1/2.").verdict                    # 'correct' (in-process, main thread)
    with Verifier(workers=2, timeout=5.0) as verifier:                  # any thread
        verdicts = verifier.verify_many(golds, texts)                   # order preserved
        accuracy = sum(v.verdict == "correct" for v in verdicts) / len(verdicts)

A script that uses `Verifier` needs the `if __name__ == "__main__":` guard, because spawned workers
import the main module. The benchmark is `python benchmarks/bench_verify.py`; its results are in
benchmarks/verify.md.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass

from sftadapt.data.records import VERDICTS  # the one list of verdicts, shared with the records

RULES = ("boxed", "gsm8k", "answer_is", "last_number", "none")
__all__ = ["RULES", "VERDICTS", "Verdict", "extract_answer", "verifier_version", "verify_one"]  # Verifier: pool.py


@dataclass(frozen=True)
class Verdict:
    """The outcome for one (gold, response) pair."""

    verdict: str  # one of VERDICTS
    extracted: str | None  # the answer taken from the response, None if nothing was found
    rule: str  # the extraction rule that fired (one of RULES)
    seconds: float  # time spent on the item (worker compute time; wall time for a timeout)
    detail: str = ""  # why, for error and timeout verdicts


# ---------------------------------------------------------------- extraction
_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])(?:\s*(?=\{)|[ \t]*)")
# Any backslash pair is consumed as one token so that `\{` `\}` (escaped) and `\\{` (line break, then a
# real brace) are told apart.
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.S)
# `\boxed 5`: one token that looks like an answer (not the next word of "put it in \boxed and ...").
_BARE_BOX_ARG = re.compile(r"[-\d.\\][^\s${}]*|[A-Za-z](?![^\s$.,;])")
_GSM8K = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"\b(?:final\s+)?answer\s*(?:is\s*:?|:)\s*", re.I)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
_NUMBER = re.compile(
    r"(?:(?<![\w)\]])[-\u2212])?"  # a sign, unless it is a binary minus (`x-5`, `3-5`)
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+|(?=\.\d))"  # integer part, with thousands separators or not
    r"(?:\.\d+)?"  # decimals
    r"(?:/\d+(?:\.\d+)?)?"  # a simple fraction 3/4
)
_THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER_THEN_WORDS = re.compile(r"(-?[\d.,/]+)\s*[A-Za-z][A-Za-z\s]*")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def _matching_braces(text: str, start: int = 0) -> dict[int, int]:
    """Position of each closed `{` at or after `start` -> position of its `}`, in one pass (so 5000 nested
    levels or 1 MB of text cost linear time, where a scan from every `\\boxed` would be quadratic). Braces
    before `start` cannot change how the later ones pair up."""
    closing, stack = {}, []
    for token in _BRACE_TOKEN.finditer(text, start):
        char = token.group()
        if char == "{":
            stack.append(token.start())
        elif char == "}" and stack:
            closing[stack.pop()] = token.start()
    return closing


_BOXED_FULL_STOP = re.compile(r"(?<=[0-9}])\.$")


def _last_boxed(text: str) -> str | None:
    starts = list(_BOX_START.finditer(text))
    if not starts:
        return None
    closing = _matching_braces(text, starts[0].start())
    # From the last box backwards: an unclosed box (truncated generation) or an empty one (an echo of the
    # prompt's "\boxed{}") gives way to the box before it.
    for start in reversed(starts):
        at = start.end()
        if at < len(text) and text[at] == "{":
            end = closing.get(at)
            content = text[at + 1 : end].strip() if end is not None else ""
            # a sentence's full stop inside the box (`\boxed{104.}`, seen in AIME24 gold solutions) is not
            # part of the answer; math-verify would read "104." as something other than 104
            content = _BOXED_FULL_STOP.sub("", content)
        else:
            bare = _BARE_BOX_ARG.match(text, at)
            content = bare.group().rstrip(".,;") if bare else ""
        if content:
            return content
    return None


def _plain_number(answer: str) -> str:
    """`1,000` -> `1000` (a thousands separator would otherwise read as a tuple); `−5` -> `-5`."""
    answer = re.sub(r"^\u2212(?=[\d.])", "-", answer)
    return answer.replace(",", "") if _THOUSANDS_NUMBER.fullmatch(answer) else answer


def _clean_sentence_answer(answer: str) -> str:
    """Strip what surrounds an answer written in prose: `$`, `\\( \\)`, `**bold**`, a trailing period,
    and unit words after a number ("42 apples" -> "42")."""
    answer = answer.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
    answer = _UNESCAPED_DOLLAR.sub("", answer).replace("**", "").strip().rstrip(".").strip()
    words_after = _NUMBER_THEN_WORDS.fullmatch(answer)
    if words_after:
        answer = words_after.group(1).rstrip(".,")
    return _plain_number(answer)


def _unclosed_brace(text: str) -> bool:
    """True if some `{` of the text is never closed (escaped braces and `\\{` line breaks aside)."""
    depth = 0
    for token in _BRACE_TOKEN.finditer(text):
        char = token.group()
        if char == "{":
            depth += 1
        elif char == "}" and depth:
            depth -= 1
    return depth > 0


def extract_answer(text: str) -> tuple[str | None, str]:
    """The final answer in a response and the rule that found it: boxed | gsm8k | answer_is | last_number
    | none (then the answer is None)."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    gsm8k = [match.group(1).strip() for match in _GSM8K.finditer(text)]
    gsm8k = [answer for answer in gsm8k if answer]
    if gsm8k:
        return _clean_sentence_answer(gsm8k[-1]), "gsm8k"
    for match in reversed(list(_ANSWER_IS.finditer(text))):
        rest = text[match.end() :]
        end = _SENTENCE_END.search(rest)
        answer = _clean_sentence_answer(rest[: end.start()] if end else rest)
        if answer:
            return answer, "answer_is"
    if _unclosed_brace(text):
        # Truncated or garbled LaTeX (`\\frac{1}{` repeated): its last number is a fragment of an
        # expression that never ended, not an answer.
        return None, "none"
    last_number = None
    for match in _NUMBER.finditer(text):
        last_number = match.group()
    if last_number:
        return _plain_number(last_number), "last_number"
    return None, "none"


# ---------------------------------------------------------------- equivalence (in-process)
def _math_verify():
    # Imported on first use: it costs ~0.6 s, and `import sftadapt.verify.extract` should stay cheap for the CLI.
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    return parse, verify, TimeoutException


def _as_boxed(answer: str) -> str:
    if "\\boxed" in answer or "\\fbox" in answer:
        return answer
    return f"$\\boxed{{{_UNESCAPED_DOLLAR.sub('', answer).strip()}}}$"


def _parse(answer: str, seconds: int | None) -> list:
    """math-verify's parse of an answer wrapped in `$\\boxed{}$`; [] if nothing parses. Raises math-verify's
    TimeoutException when its own (signal) timeout fires."""
    parse, _, timeout_error = _math_verify()
    try:
        return parse(_as_boxed(answer), parsing_timeout=seconds, raise_on_error=True)
    except timeout_error:
        raise
    except Exception:
        return []


def _equivalent(gold: list, pred: list, seconds: int | None) -> bool | None:
    """True if any parsed gold matches any parsed prediction (as math-verify's `verify` does), None if none
    matched and at least one comparison timed out."""
    _, verify, timeout_error = _math_verify()
    timed_out = False
    for gold_item in gold:
        for pred_item in pred:
            try:
                if verify(gold_item, pred_item, timeout_seconds=seconds, raise_on_error=True):
                    return True
            except timeout_error:
                timed_out = True
            except Exception:
                continue
    return None if timed_out else False


_PLAIN_INTEGER = re.compile(r"-?\d{1,4000}")
_PLAIN_NUMBER = re.compile(r"-?(?:\d{1,100}(?:\.\d{1,100})?|\.\d{1,100})(?:/\d{1,100})?")


def _fast_numeric(gold: str, extracted: str) -> str | None:
    """`correct` / `wrong` for two plain numbers without math-verify (whose LaTeX parse costs ~2 ms, the
    whole cost of a simple item); None when math-verify must decide. Exact: two equal numbers (0.5 and 1/2)
    are correct, two different integers are wrong; different decimals or fractions go to math-verify, which
    rounds."""
    gold, extracted = _plain_number(gold.strip()), _plain_number(extracted.strip())
    if _PLAIN_INTEGER.fullmatch(gold) and _PLAIN_INTEGER.fullmatch(extracted):
        return "correct" if int(gold) == int(extracted) else "wrong"
    if _PLAIN_NUMBER.fullmatch(gold) and _PLAIN_NUMBER.fullmatch(extracted):
        from fractions import Fraction

        try:
            if Fraction(gold) == Fraction(extracted):
                return "correct"
        except (ValueError, ZeroDivisionError):
            return None
    return None


QUICK_MAX_CHARS = 100_000  # longer texts always go to a worker (with its deadline), even for the quick path


def quick_verdict(gold: str, text: str) -> Verdict | None:
    """The verdict of an item whose gold and extracted answer are plain numbers, decided without
    math-verify (see `_fast_numeric`); None otherwise. Cheap and linear-time, so the pool's caller runs it
    itself and sends only the rest to the workers."""
    if len(text) > QUICK_MAX_CHARS or len(str(gold)) > 4000:
        return None
    started = time.perf_counter()
    extracted, rule = extract_answer(text)
    if extracted is None:
        return None
    fast = _fast_numeric(str(gold), extracted)
    return None if fast is None else Verdict(fast, extracted, rule, time.perf_counter() - started)


def verify_item(gold: str, text: str, seconds: int | None, phase=None) -> Verdict:
    """One item, in this process. `seconds` is math-verify's own per-call signal timeout (None = off).
    `phase[0]` (if given) is 1 while the gold answer is being parsed, so that a pool that kills the worker
    then can say `error` (a gold that does not parse in time) rather than `timeout`."""
    _, _, timeout_error = _math_verify()
    started = time.perf_counter()
    extracted, rule = None, "none"

    def verdict(name: str, detail: str = "") -> Verdict:
        return Verdict(name, extracted, rule, time.perf_counter() - started, detail)

    try:
        extracted, rule = extract_answer(text)
        if extracted is not None:
            fast = _fast_numeric(str(gold), extracted)
            if fast is not None:
                return verdict(fast)
        if phase is not None:
            phase[0] = 1.0
        try:
            gold_parsed = _parse(str(gold).strip(), seconds) if str(gold).strip() else []
        except timeout_error:
            # The phase stays 1 until the worker starts its next item: a pool whose wall-clock deadline falls
            # between this return and the result's send must still read the verdict as the gold's fault.
            return verdict("error", f"the gold answer {str(gold)[:200]!r} did not parse within the time limit")
        if phase is not None:
            phase[0] = 0.0
        if not gold_parsed:
            return verdict("error", f"the gold answer {str(gold)[:200]!r} does not parse")
        if extracted is None:
            return verdict("no_answer")
        pred_parsed = _parse(extracted, seconds)
        if not pred_parsed:
            return verdict("wrong", "the extracted answer does not parse")
        same = _equivalent(gold_parsed, pred_parsed, seconds)
        if same is None:
            return verdict("timeout", "math-verify comparison timed out")
        return verdict("correct" if same else "wrong")
    except timeout_error:
        return verdict("timeout", "math-verify parse timed out")
    except RecursionError:
        return verdict("wrong", "the answer is nested too deeply to parse")


def signal_seconds(timeout: float | None) -> int | None:
    return None if timeout is None else max(1, math.ceil(timeout))


def verifier_version() -> dict[str, str]:
    """What provenance records about the verifier: math-verify's version and ours (extraction rules)."""
    from importlib.metadata import PackageNotFoundError, version

    from sftadapt import __version__

    try:
        math_verify = version("math-verify")
    except PackageNotFoundError:
        math_verify = "not installed"
    return {"math_verify": math_verify, "sftadapt": __version__}


def verify_one(gold: str, text: str, timeout: float | None = 5.0) -> Verdict:
    """Verify one response in this process, serially. math-verify's signal timeouts (whole seconds, per
    parse/compare call, so an item may take a few times `timeout`) need the main thread; from another
    thread use `Verifier`, or pass timeout=None (no time limit at all)."""
    if timeout is not None and threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "verify_one with a timeout uses signal.alarm, which works only in the main thread: "
            "use Verifier(...).verify_one from other threads, or pass timeout=None (no time limit)"
        )
    import sys

    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # a 100,001-digit answer is a number, not an error (workers do the same)
    try:
        return verify_item(gold, text, signal_seconds(timeout))
    finally:
        sys.set_int_max_str_digits(limit)
