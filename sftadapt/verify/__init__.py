"""Answer checking: `extract` (answer extraction and math_verify equivalence, one item at a time) and `pool`
(the `Verifier`: worker processes with hard per-item deadlines, because math_verify's timeouts use
`signal.alarm` and a pathological answer can hang a parse). The pool imports extract, never the reverse.

    from sftadapt.verify import Verifier
    with Verifier(workers=2, timeout=5.0) as v:
        verdicts = v.verify_many(["42"], ["... so the answer is \\boxed{42}"])
"""

from sftadapt.verify.extract import (
    RULES,
    Verdict,
    extract_answer,
    quick_verdict,
    verifier_version,
    verify_item,
    verify_one,
)
from sftadapt.verify.pool import Verifier

__all__ = [
    "RULES",
    "Verdict",
    "Verifier",
    "extract_answer",
    "quick_verdict",
    "verifier_version",
    "verify_item",
    "verify_one",
]
