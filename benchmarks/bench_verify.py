"""Verifier throughput and self-consistency: the `Verifier` pool (2 worker processes) against serial in-process
`verify_one`, on real gold answers.

Datasets: GSM8K test (1319 golds, after `#### `) and MATH-500 (500 golds, field `answer`). Two conditions:
- `self`: the gold checked against the text "... so the answer is \\boxed{GOLD}." All should be correct.
  Each one that is not is a verifier bug or a data problem, and is listed.
- `perturbed`: the gold checked against a wrong answer. The last integer in the gold is raised by 1; a gold
  with no digits takes the next row's different answer. Almost none should be correct. Each one that is
  correct is listed, because a perturbation can land on an equivalent answer.

Serial and pool run side by side in each repeat, on the same items. Each repeat starts from fresh
processes that have had the same warm-up: serial runs in a new process, and the pool gets a new
`Verifier`. Repeats in one process would time sympy's warm expression cache; in real use each item is
verified once. Start-up is kept out of the rates. The table gives items/s (median of the repeats), the
pool/serial speedup, CPU time per item (other jobs on the machine inflate it less than wall time), and
each side's correct rate.

    OMP_NUM_THREADS=1 python benchmarks/bench_verify.py                # full run (a few minutes on 2 cores)
    OMP_NUM_THREADS=1 python benchmarks/bench_verify.py --limit 50 --repeats 1   # smoke test

Recorded results: benchmarks/verify.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a checkout without installing

from sftadapt.verify import Verifier, verify_one  # noqa: E402
from sftadapt.verify.pool import _WARMUP  # noqa: E402

_LAST_INTEGER = re.compile(r"\d+(?!.*\d)", re.S)


def data_dir(given: str | None) -> Path:
    for candidate in (given, os.environ.get("SFTADAPT_DATA_DIR"), REPO_ROOT.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    sys.exit("data folder not found: pass --data-dir or set SFTADAPT_DATA_DIR")


def load_golds(folder: Path) -> dict[str, list[str]]:
    def rows(relative: str) -> list[dict]:
        with open(folder / relative, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    return {
        "gsm8k": [row["answer"].split("#### ")[-1].strip() for row in rows("gsm8k/test.jsonl")],
        "math500": [str(row["answer"]) for row in rows("math500/test.jsonl")],
    }


def perturb(golds: list[str]) -> list[str]:
    """A wrong answer for each gold: its last integer + 1, or else the next row's different answer."""
    wrong = []
    for index, gold in enumerate(golds):
        match = _LAST_INTEGER.search(gold)
        if match:
            wrong.append(gold[: match.start()] + str(int(match.group()) + 1) + gold[match.end() :])
            continue
        others = golds[index + 1 :] + golds[:index]
        wrong.append(next((other for other in others if other != gold), gold + "+1"))
    return wrong


def as_response(answer: str) -> str:
    return f"Working through the problem step by step, so the answer is \\boxed{{{answer}}}."


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc); nan elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _serial_child(conn, golds: list[str], texts: list[str], timeout: float) -> None:
    for gold, text in _WARMUP:  # the warm-up a pool worker does before its first item
        verify_one(gold, text, timeout=timeout)
    started, cpu_started = time.perf_counter(), time.process_time()
    verdicts = [verify_one(gold, text, timeout=timeout) for gold, text in zip(golds, texts)]
    conn.send((verdicts, time.perf_counter() - started, time.process_time() - cpu_started))


def run_serial(golds: list[str], texts: list[str], timeout: float):
    """verify_one in a loop, in a fresh process: sympy caches every expression it has seen, so repeats in
    one process would time a warm cache that the pool's fresh workers do not have."""
    context = multiprocessing.get_context("spawn")
    parent_conn, child_conn = context.Pipe(duplex=False)
    child = context.Process(target=_serial_child, args=(child_conn, golds, texts, timeout))
    child.start()
    child_conn.close()
    verdicts, seconds, cpu = parent_conn.recv()
    child.join()
    return verdicts, seconds, cpu


def run_pool(golds: list[str], texts: list[str], workers: int, timeout: float, chunk_size: int):
    """Verifier.verify_many with fresh, started workers (start-up kept out of the time)."""
    with Verifier(workers=workers, timeout=timeout, chunk_size=chunk_size) as verifier:
        verifier.wait_ready()
        pids = verifier.pids
        workers_cpu = sum(cpu_seconds(pid) for pid in pids)
        started, cpu_started = time.perf_counter(), time.process_time()
        verdicts = verifier.verify_many(golds, texts)
        seconds, caller_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        # A restarted worker takes its CPU time with it; there are none here unless an item timed out.
        same = verifier.pids == pids
        workers_cpu = sum(cpu_seconds(pid) for pid in pids) - workers_cpu if same else float("nan")
    return verdicts, seconds, caller_cpu + workers_cpu


def run_end_to_end(golds: list[str], texts: list[str], workers: int, timeout: float, chunk_size: int) -> float:
    """Seconds from `Verifier(...)` to the last verdict, start-up included: what one stage run pays."""
    started = time.perf_counter()
    with Verifier(workers=workers, timeout=timeout, chunk_size=chunk_size) as verifier:
        verifier.verify_many(golds, texts)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder with gsm8k/ and math500/ (default: ../shared/data)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per condition; the median is reported")
    parser.add_argument("--workers", type=int, default=2, help="worker processes in the pool")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-item timeout, seconds (both sides)")
    parser.add_argument("--chunk-size", type=int, default=8, help="items sent to a worker at once")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N golds of each dataset")
    args = parser.parse_args()

    load_before = os.getloadavg()
    golds_by_set = load_golds(data_dir(args.data_dir))
    if args.limit:
        golds_by_set = {name: golds[: args.limit] for name, golds in golds_by_set.items()}

    started = time.perf_counter()
    with Verifier(workers=args.workers, timeout=args.timeout) as verifier:
        verifier.wait_ready()
    startup_seconds = time.perf_counter() - started

    table, self_failures, perturbed_correct, disagreements = [], [], [], []
    for name, golds in golds_by_set.items():
        for condition, answers in (("self", golds), ("perturbed", perturb(golds))):
            texts = [as_response(answer) for answer in answers]
            serial_rates, pool_rates, serial_cpu, pool_cpu, e2e_rates = [], [], [], [], []
            for _ in range(args.repeats):
                serial, serial_seconds, serial_cpu_seconds = run_serial(golds, texts, args.timeout)
                pooled, pool_seconds, pool_cpu_seconds = run_pool(
                    golds, texts, args.workers, args.timeout, args.chunk_size
                )
                e2e_rates.append(len(golds) / run_end_to_end(golds, texts, args.workers, args.timeout, args.chunk_size))
                serial_rates.append(len(golds) / serial_seconds)
                pool_rates.append(len(golds) / pool_seconds)
                serial_cpu.append(1000 * serial_cpu_seconds / len(golds))
                pool_cpu.append(1000 * pool_cpu_seconds / len(golds))
            serial_rate, pool_rate = statistics.median(serial_rates), statistics.median(pool_rates)
            correct = lambda verdicts: sum(v.verdict == "correct" for v in verdicts) / len(verdicts)  # noqa: E731
            table.append(
                (
                    name,
                    condition,
                    len(golds),
                    serial_rate,
                    pool_rate,
                    correct(serial),
                    correct(pooled),
                    statistics.median(serial_cpu),
                    statistics.median(pool_cpu),
                    statistics.median(e2e_rates),
                )
            )
            for index, (one, other) in enumerate(zip(serial, pooled)):
                if one.verdict != other.verdict:
                    disagreements.append((name, condition, index, golds[index], one.verdict, other.verdict))
                if condition == "self" and other.verdict != "correct":
                    self_failures.append((name, index, golds[index], other.verdict, other.extracted, other.detail))
                if condition == "perturbed" and other.verdict == "correct":
                    perturbed_correct.append((name, index, golds[index], answers[index]))
            print(f"{name}/{condition}: serial {serial_rate:.0f}/s, pool {pool_rate:.0f}/s", file=sys.stderr)

    print(
        f"Pool: {args.workers} workers, timeout {args.timeout:g} s, chunk size {args.chunk_size}; "
        f"start-up + warm-up {startup_seconds:.2f} s (paid once per Verifier, not in the rates). "
        f"Median of {args.repeats} repeats. Load average (1 min) before {load_before[0]:.2f}, "
        f"after {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other jobs on the machine slow both sides).\n"
    )
    print(
        "| dataset | condition | items | serial verify_one (items/s) | pool (items/s) | pool incl. start-up "
        "(items/s) | speedup | CPU ms/item serial | CPU ms/item pool | correct (serial) | correct (pool) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, condition, items, serial_rate, pool_rate, serial_correct, pool_correct, s_cpu, p_cpu, e2e in table:
        print(
            f"| {name} | {condition} | {items} | {serial_rate:.0f} | {pool_rate:.0f} | {e2e:.0f} | "
            f"{pool_rate / serial_rate:.2f}x | {s_cpu:.2f} | {p_cpu:.2f} | {serial_correct:.1%} | {pool_correct:.1%} |"
        )
    print("\nCPU ms/item: the process's CPU time per item; for the pool, workers + caller together.")
    total = sum(row[2] for row in table)
    print(f"\nSerial vs pool verdict disagreements: {len(disagreements)} of {total * 1}")
    for row in disagreements:
        print(f"- {row[0]}/{row[1]} #{row[2]} gold {row[3]!r}: serial {row[4]}, pool {row[5]}")
    print(f"\nSelf-check failures (should be none): {len(self_failures)}")
    for name, index, gold, verdict, extracted, detail in self_failures:
        print(f"- {name} #{index} gold {gold!r}: {verdict} (extracted {extracted!r}) {detail}")
    print(f"\nPerturbed answers judged correct: {len(perturbed_correct)}")
    for name, index, gold, answer in perturbed_correct:
        print(f"- {name} #{index} gold {gold!r} vs {answer!r}")


if __name__ == "__main__":
    main()
