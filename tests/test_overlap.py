"""Pipelined shards (store.Phases, store.run_in_order): the verification of shard k runs in a background thread
while shard k+1 is generated, and what is stored is what the sequential path stores: the same bytes, the engine
counters of each shard, the rejects; a kill between shards resumes without loss or duplicates; an error in the
background verification surfaces in the caller."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fakes import BoxedVerifier, FakeEngine, FakeTokenizer

from sftadapt.data.records import Problem
from sftadapt.data.store import KILL_ENV, Phases, ShardStore, run_sharded
from sftadapt.engines.base import Completion, RequestRejected

PAUSE = 0.15  # seconds each generate and each verification sleeps


class SleepyEngine(FakeEngine):
    """Generates `\\boxed{n}` for item n after PAUSE seconds, scores instantly; records each call's interval and
    thread, and counts generated tokens (10 per item) and scored tokens (1 per item), like a real engine's stats.
    Items listed in `refuse` make any call that holds them raise RequestRejected, as a server's 4xx."""

    def __init__(self, refuse=(), refuse_in="generate", pause=PAUSE):
        self.tokenizer = FakeTokenizer()
        self.refuse, self.refuse_in, self.pause = set(refuse), refuse_in, pause
        self.calls: list[tuple[str, tuple, float, float, str]] = []  # (what, items, start, end, thread)
        self.stats = {"generated_tokens": 0, "scored_tokens": 0, "generate_seconds": 0.0, "score_seconds": 0.0}

    def _refused(self, what, items):
        bad = [i for i, item in enumerate(items) if item in self.refuse]
        if what == self.refuse_in and bad:
            raise RequestRejected({i: "context too long" for i in bad})

    def generate_items(self, items):
        start = time.monotonic()
        self._refused("generate", items)
        time.sleep(self.pause)
        self.stats["generated_tokens"] += 10 * len(items)
        self.calls.append(("generate", tuple(items), start, time.monotonic(), threading.current_thread().name))
        return [f"so \\boxed{{{item}}}" for item in items]

    def score_items(self, items):
        start = time.monotonic()
        self._refused("score", items)
        self.stats["scored_tokens"] += len(items)
        self.calls.append(("score", tuple(items), start, time.monotonic(), threading.current_thread().name))
        return [-0.5 * item for item in items]


class SleepyVerifier(BoxedVerifier):
    """BoxedVerifier after PAUSE seconds, recording each call's interval; raises at the call numbered `fail_at`."""

    def __init__(self, fail_at=None, pause=PAUSE):
        self.fail_at, self.pause = fail_at, pause
        self.calls: list[tuple[tuple, float, float, str]] = []

    def verify_many(self, golds, texts):
        start = time.monotonic()
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise ValueError("the verifier broke")
        time.sleep(self.pause)
        out = super().verify_many(golds, texts)
        self.calls.append((tuple(golds), start, time.monotonic(), threading.current_thread().name))
        return out


def phases(engine, verifier) -> Phases:
    """Sample (engine), verify (no engine), score (engine): the shape of the rewrite stage's sampled stages."""

    def produce(part):
        return part, engine.generate_items(part)

    def verify(produced):
        part, texts = produced
        return part, texts, verifier.verify_many([str(i) for i in part], texts)

    def complete(verified):
        part, texts, verdicts = verified
        scores = engine.score_items(part)
        return [
            {"item": i, "text": t, "verdict": v.verdict, "score": s}
            for i, t, v, s in zip(part, texts, verdicts, scores)
        ]

    return Phases(produce, verify, complete)


def sequential(work: Phases):
    return lambda part: work(part)  # a plain callable: today's one-after-the-other path


def _shards(root):
    """The bytes of each shard and rejects file (stats hold seconds: `_stats`)."""
    return {p.name: p.read_bytes() for p in sorted(root.glob("*")) if p.name.startswith(("shard-", "rejects-"))}


def _stats(root):
    return {
        p.name: {k: v for k, v in json.loads(p.read_text()).items() if k != "seconds"}
        for p in sorted(root.glob("stats-*.json"))
    }


# ---------------------------------------------------------------- (a) the overlap itself
def test_verification_of_a_shard_runs_while_the_next_is_generated(tmp_path):
    engine, verifier = SleepyEngine(), SleepyVerifier()
    store = ShardStore(tmp_path / "shards", "h")
    assert run_sharded(store, list(range(8)), 2, phases(engine, verifier), progress=False, engines=(engine,)) == 4
    generates = [c for c in engine.calls if c[0] == "generate"]
    assert [c[1] for c in generates] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert [c[0] for c in verifier.calls] == [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]
    for k in range(3):  # verify(k) and generate(k+1) share a stretch of time
        _, v_start, v_end, _ = verifier.calls[k]
        _, _, g_start, g_end, _ = generates[k + 1]
        assert max(v_start, g_start) < min(v_end, g_end) - PAUSE / 3, (k, verifier.calls, generates)
    # every engine call on the caller's thread, every verification on another one
    assert {c[4] for c in engine.calls} == {threading.current_thread().name}
    assert threading.current_thread().name not in {c[3] for c in verifier.calls}


def test_an_eval_run_verifies_one_call_while_it_samples_the_next(tmp_path):
    from test_evaluate import PROBLEMS, SeedAnswerEngine, proto, run

    class SleepySeeds(SeedAnswerEngine):
        def __init__(self):
            super().__init__()
            self.spans = []

        def generate(self, prompts, params, seeds=None):
            start = time.monotonic()
            time.sleep(PAUSE)
            out = super().generate(prompts, params, seeds)
            self.spans.append((start, time.monotonic(), threading.current_thread().name))
            return out

    engine, verifier = SleepySeeds(), SleepyVerifier()
    result = run(tmp_path, proto(), engine=engine, verifier=verifier)  # 4 shards of 8 samples, one call each
    assert result["benchmarks"]["toy"]["n_samples"] == 4 * len(PROBLEMS)
    assert len(engine.spans) == len(verifier.calls) == 4
    for k in range(3):
        _, v_start, v_end, _ = verifier.calls[k]
        g_start, g_end, _ = engine.spans[k + 1]
        assert max(v_start, g_start) < min(v_end, g_end) - PAUSE / 3, k
    assert {s[2] for s in engine.spans} == {threading.current_thread().name}


# ---------------------------------------------------------------- (b) the same bytes as the sequential path
@pytest.mark.parametrize("refuse_in", [None, "generate", "score"])
def test_shards_stats_and_rejects_equal_the_sequential_path(tmp_path, refuse_in):
    """Byte-identical shards and rejects; each shard's stats count its own generate and score (a shard's
    generated tokens are 10 per item, its scored tokens 1 per item: shard k+1's generate, which runs before
    shard k's score, is not shard k's). A refused item in either engine phase becomes a reject."""
    refuse = {5} if refuse_in else set()
    for name, make in (("seq", sequential), ("overlap", lambda w: w)):
        engine = SleepyEngine(refuse=refuse, refuse_in=refuse_in, pause=0.01)
        store = ShardStore(tmp_path / name, "h")
        work = make(phases(engine, SleepyVerifier(pause=0.01)))
        n = run_sharded(
            store,
            list(range(9)),
            2,
            work,
            progress=False,
            engines=(engine,),
            rejects_file=tmp_path / f"{name}-rejects.jsonl",
        )
        assert n == 5
        store.finalize(tmp_path / f"{name}.jsonl", expected_shards=5)
    assert _shards(tmp_path / "overlap") == _shards(tmp_path / "seq")
    assert (tmp_path / "overlap.jsonl").read_bytes() == (tmp_path / "seq.jsonl").read_bytes()
    stats = _stats(tmp_path / "overlap")
    assert stats == _stats(tmp_path / "seq")
    rows = [json.loads(line) for line in (tmp_path / "overlap.jsonl").read_text().splitlines()]
    assert [r["item"] for r in rows] == [i for i in range(9) if i not in refuse]
    assert all(r["verdict"] == "correct" for r in rows)
    if refuse_in:
        rejects = [json.loads(line) for line in (tmp_path / "overlap-rejects.jsonl").read_text().splitlines()]
        assert len(rejects) == 1 and rejects[0]["reason"].endswith("context too long")
        assert (tmp_path / "overlap-rejects.jsonl").read_bytes() == (tmp_path / "seq-rejects.jsonl").read_bytes()
        assert (tmp_path / "overlap" / "rejects-00002.jsonl").is_file()
    else:  # the counters of exactly its own items: 10 generated and 1 scored token each
        sizes = [2, 2, 2, 2, 1]
        assert [(s["generated_tokens"], s["scored_tokens"], s["problems"]) for s in stats.values()] == [
            (10 * n, n, n) for n in sizes
        ]


def test_a_refusal_without_a_rejects_file_ends_the_run_after_the_shards_before_it(tmp_path):
    engine = SleepyEngine(refuse={4}, pause=0.01)
    store = ShardStore(tmp_path / "s", "h")
    with pytest.raises(RequestRejected):
        run_sharded(store, list(range(8)), 2, phases(engine, SleepyVerifier(pause=0.01)), progress=False)
    assert store.shard_indices() == [0, 1]


# ---------------------------------------------------------------- (c) kill between shards, then resume
_KILLED_RUN = """
import sys, time
from sftadapt.data.store import Phases, ShardStore, run_sharded

def produce(part):
    time.sleep(0.02)
    return part

def verify(part):
    time.sleep(0.05)
    return [{"item": i, "sq": i * i} for i in part]

run_sharded(ShardStore(sys.argv[1], "h"), list(range(10)), 2, Phases(produce, verify), progress=False)
"""


@pytest.mark.parametrize("point", ["before_write", "mid_write", "after_write"])
def test_a_kill_between_shards_then_resume_loses_and_duplicates_nothing(tmp_path, point):
    script = tmp_path / "killed_run.py"
    script.write_text(textwrap.dedent(_KILLED_RUN))
    root = tmp_path / "shards"
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, KILL_ENV: f"shards:2:{point}", "PYTHONPATH": repo}
    killed = subprocess.run([sys.executable, str(script), str(root)], env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    written = [0, 1, 2] if point == "after_write" else [0, 1]
    assert ShardStore(root, "h").shard_indices() == written  # in order: nothing of a later shard
    produced = []

    def produce(part):
        produced.append(list(part))
        return part

    def verify(part):
        return [{"item": i, "sq": i * i} for i in part]

    resumed = ShardStore(root, "h")
    assert run_sharded(resumed, list(range(10)), 2, Phases(produce, verify), progress=False) == 5
    assert produced == [[2 * k, 2 * k + 1] for k in range(5) if k not in written]  # only the missing shards
    resumed.finalize(tmp_path / "resumed.jsonl", expected_shards=5)
    whole = ShardStore(tmp_path / "whole", "h")
    run_sharded(whole, list(range(10)), 2, sequential(Phases(produce, verify)), progress=False)
    whole.finalize(tmp_path / "whole.jsonl", expected_shards=5)
    assert (tmp_path / "resumed.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert not list(root.glob("*.tmp"))


# ---------------------------------------------------------------- (d) errors surface, in order
def test_an_error_in_the_background_verification_surfaces_and_nothing_later_is_written(tmp_path):
    engine, verifier = SleepyEngine(pause=0.01), SleepyVerifier(fail_at=1, pause=0.01)
    store = ShardStore(tmp_path / "s", "h")
    with pytest.raises(ValueError, match="the verifier broke"):
        run_sharded(store, list(range(8)), 2, phases(engine, verifier), progress=False)
    assert store.shard_indices() == [0]  # shard 1 failed; shard 2 was generated but is not written
    assert [c[1] for c in engine.calls if c[0] == "generate"] == [(0, 1), (2, 3), (4, 5)]


def test_a_failed_generate_still_stores_the_shard_before_it(tmp_path):
    """Ctrl-C (or an engine error) while shard k+1 is generated: shard k, whose verification was in flight,
    is still finished and written, as the sequential path would have written it."""

    class Interrupted(SleepyEngine):
        def generate_items(self, items):
            if 4 in items:
                raise KeyboardInterrupt
            return super().generate_items(items)

    store = ShardStore(tmp_path / "s", "h")
    with pytest.raises(KeyboardInterrupt):
        run_sharded(store, list(range(8)), 2, phases(Interrupted(pause=0.01), SleepyVerifier()), progress=False)
    assert store.shard_indices() == [0, 1]


def test_sample_attempts_is_its_engine_half_then_its_verify_half():
    """The sample stage's two halves (eval/sample.py) recompose into `sample_attempts` exactly."""
    from sftadapt.engines.base import Sampling
    from sftadapt.eval.sample import generate_attempts, sample_attempts, verify_attempts

    class Echo(FakeEngine):
        def generate(self, prompts, params, seeds=None):
            return [
                [Completion(f"\\boxed{{{p}}}", [1, 2], [-0.1, -0.2], "stop", s) for s in row]
                for p, row in zip(prompts, seeds)
            ]

    problems = [Problem(id=f"q{i}", problem=str(i), answer=str(i % 2)) for i in range(3)]
    params = Sampling(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=7)
    timing: dict = {}
    whole = sample_attempts(Echo(), BoxedVerifier(), problems, params, "sample", lambda p: p.problem, "h", timing)
    assert set(timing) == {"generate_s", "verify_s"}
    halves = verify_attempts(
        BoxedVerifier(),
        problems,
        generate_attempts(Echo(), problems, params, "sample", lambda p: p.problem),
        "sample",
        "h",
    )
    assert halves == whole
    assert [[a.verdict for a in row] for row in whole] == [["correct"] * 2, ["correct"] * 2, ["wrong"] * 2]
