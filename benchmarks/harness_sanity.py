"""Harness sanity check: score the gold solutions of benchmarks as if a model had written them.

A correct harness (sources.py answer fields + verify.py extraction and math-verify equivalence) must get at
least 99% of them right; every failure is printed with its gold answer, what was extracted and by which rule,
so it can be explained as a verifier bug or a data issue. Results are recorded in benchmarks/harness_sanity.md.

    python benchmarks/harness_sanity.py                      # gsm8k and math500, all problems
    python benchmarks/harness_sanity.py --benchmarks minerva_math,olympiadbench --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from sftadapt.eval.evaluate import gold_sanity
from sftadapt.verify import Verifier

THRESHOLD = 0.99


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmarks", default="gsm8k,math500")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=5.0, help="verifier seconds per item")
    parser.add_argument("--json", default=None, help="also write the full results here")
    args = parser.parse_args(argv)
    results, ok = [], True
    with Verifier(timeout=args.timeout) as verifier:
        for name in args.benchmarks.split(","):
            start = time.perf_counter()
            res = gold_sanity(name, limit=args.limit, verifier=verifier)
            res["seconds"] = round(time.perf_counter() - start, 1)
            results.append(res)
            passed = res["rate"] >= THRESHOLD
            ok &= passed
            print(
                f"{name}: {res['correct']}/{res['n']} gold solutions verified correct = {100 * res['rate']:.2f}% "
                f"({'PASS' if passed else 'FAIL'} at {100 * THRESHOLD:.0f}%), verdicts {res['counts']}, "
                f"{res['seconds']} s"
            )
            for f in res["failures"]:
                print(
                    f"  {f['verdict']:9s} id={f['id']} gold={f['gold']!r} extracted={f['extracted']!r} rule={f['rule']}"
                )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":  # the Verifier's spawned workers import this module
    sys.exit(main())
