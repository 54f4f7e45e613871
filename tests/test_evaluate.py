"""Eval loop: attempts and results.json with a scripted engine (exact numbers), resume after a kill, protocol
recording and refusal to mix, and one pass through the real HF engine on the tiny random model."""

import json

import pytest
from fakes import BoxedVerifier, FakeEngine, FakeTokenizer

from sftadapt.data.formats import FieldOptions
from sftadapt.data.records import VERDICTS, Attempt, Problem, read_records, to_dict
from sftadapt.data.store import StoreError
from sftadapt.engines.base import Completion, derive_seed
from sftadapt.eval.evaluate import apply_answer_format, evaluate, group_attempts, run_chunk, sample_seeds
from sftadapt.eval.metrics import majority_vote
from sftadapt.eval.protocol import PROTOCOLS, Protocol, load_protocol
from sftadapt.eval.stage import PROTOCOL_FIELDS, EvalConfig


class SeedAnswerEngine(FakeEngine):
    """Answers `\\boxed{seed % 3}`, so which samples are right is a pure function of the seeds."""

    name = "scripted"

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after
        self.tokenizer = None

    def generate(self, prompts, params, seeds=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return [
            [
                Completion(
                    text=f"so \\boxed{{{s % 3}}}",
                    token_ids=[1] * (s % 5 + 1),
                    logprobs=[-0.5] * (s % 5 + 1),
                    finish_reason="stop" if s % 7 else "length",
                    seed=s,
                )
                for s in row
            ]
            for row in seeds
        ]

    def close(self):
        pass


PROBLEMS = [Problem(id=f"p{i}", problem=f"What is {i} mod 3?", answer=str(i % 3)) for i in range(7)]


def eval_config(out, protocol: Protocol, **kw) -> EvalConfig:
    """The eval config that evaluates under `protocol`: its label, with every field of it set over that."""
    fields = {k: getattr(protocol, k) for k in PROTOCOL_FIELDS}
    return EvalConfig(model="scripted-model", out=str(out), protocol=protocol.name, **fields, **kw)


def run(tmp_path, protocol, engine=None, out="run", batch_size=8, verifier=None, **kw):
    """7 problems x n=4 in shards of 2 problems (8 samples): 4 shards, one generate call each at batch 8."""
    engine = engine or SeedAnswerEngine()
    engine.tokenizer = FakeTokenizer()
    return evaluate(
        eval_config(tmp_path / out, protocol, batch_size=batch_size, **kw),
        problems={"toy": PROBLEMS},
        engine=engine,
        verifier=verifier or BoxedVerifier(),
        shard_problems=2,
        progress=False,
        print_summary=False,
        n_boot=200,
    )


def proto(**kw):
    return load_protocol("paper", [f"{k}={v}" for k, v in {"max_new_tokens": 16, "n": 4, **kw}.items()])


def expected_correct(protocol):
    seeds = sample_seeds(protocol, PROBLEMS)
    return [[str(s % 3) == p.answer for s in row] for p, row in zip(PROBLEMS, seeds)]


def test_results_match_the_scripted_answers(tmp_path):
    protocol = proto()
    res = run(tmp_path, protocol)
    right = expected_correct(protocol)
    toy = res["benchmarks"]["toy"]
    assert toy["n_problems"] == 7 and toy["n_samples"] == 28
    assert toy["avg@4"]["value"] == pytest.approx(sum(map(sum, right)) / 28)
    assert toy["pass@4"]["value"] == pytest.approx(sum(any(r) for r in right) / 7)
    assert toy["counts"]["correct"] == sum(map(sum, right))
    assert toy["counts"]["wrong"] == 28 - sum(map(sum, right))
    answers = [[str(s % 3) for s in row] for row in sample_seeds(protocol, PROBLEMS)]
    majority = [majority_vote(a)[0] == p.answer for a, p in zip(answers, PROBLEMS)]
    assert toy["per_problem"] == {p.id: [sum(r), 4, int(m)] for p, r, m in zip(PROBLEMS, right, majority)}
    assert toy["maj@4"]["value"] == pytest.approx(sum(majority) / 7)
    seeds = [s for row in sample_seeds(protocol, PROBLEMS) for s in row]
    assert toy["tokens_generated"] == sum(s % 5 + 1 for s in seeds)
    assert toy["truncated"] == sum(s % 7 == 0 for s in seeds)
    # The protocol is recorded, with its hash, in results.json and in every shard manifest.
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["protocol"] == protocol.record()
    assert saved["protocol"]["hash"] == protocol.hash
    manifest = json.loads((tmp_path / "run" / "toy" / "shards" / "manifest.json").read_text())
    assert manifest["config"]["protocol"] == protocol.hash
    attempts = read_records(tmp_path / "run" / "toy" / "attempts.jsonl", Attempt)
    assert [(a.problem_id, a.index) for a in attempts] == [(p.id, j) for p in PROBLEMS for j in range(4)]
    assert all(a.stage == "eval" and a.meta["benchmark"] == "toy" for a in attempts)


class LastNumberOnes(BoxedVerifier):
    """A found answer of 1 counts as reached by the last_number rule (which boxed_strict turns into no_answer)."""

    def verify_many(self, golds, texts):
        import dataclasses

        return [
            dataclasses.replace(v, rule="last_number") if v.extracted == "1" else v
            for v in super().verify_many(golds, texts)
        ]


def test_an_eval_attempt_keeps_every_field_and_value(tmp_path):
    """Eval samples through the loop every stage shares (sample.sample_attempts); its rows are still eval's own:
    stage eval, the (seed, problem, "eval", j) seeds, no per-token log-probs but their sum, the answer format
    applied to the verdict, and meta with the benchmark, tokens and the sample's share of the call's seconds."""
    protocol = proto(answer_format="boxed_strict", seed=3)
    engine = SeedAnswerEngine()
    engine.tokenizer = FakeTokenizer()
    names = ["a", "b"] * 3 + ["a"]
    rows = run_chunk(engine, LastNumberOnes(), engine.tokenizer, protocol, PROBLEMS, names, "hash0")
    expected = []
    for p, name in zip(PROBLEMS, names):
        for j in range(4):
            s = derive_seed(3, p.id, "eval", j)
            answer, k = str(s % 3), s % 5 + 1
            expected.append(
                {
                    "problem_id": p.id,
                    "stage": "eval",
                    "index": j,
                    "prompt_hash": "hash0",
                    "text": f"so \\boxed{{{answer}}}",
                    "token_logprobs": None,
                    "finish_reason": "stop" if s % 7 else "length",
                    "seed": s,
                    "verdict": "no_answer" if answer == "1" else ("correct" if answer == p.answer else "wrong"),
                    "extracted": answer,
                    "rule": "last_number" if answer == "1" else "boxed",
                    "meta": {"benchmark": name, "n_tokens": k, "logprob_sum": -0.5 * k},
                }
            )
    got = [to_dict(a) for a in rows]
    assert any(row["verdict"] == "no_answer" for row in got) and any(row["verdict"] == "correct" for row in got)
    for row in got:
        assert list(row["meta"]) == ["benchmark", "n_tokens", "logprob_sum", "generate_s", "verify_s"]
        for key in ("generate_s", "verify_s"):  # one call's seconds, shared evenly by its 28 samples
            assert isinstance(row["meta"][key], float) and row["meta"][key] == got[0]["meta"][key] >= 0
    assert [{**row, "meta": {k: row["meta"][k] for k in list(row["meta"])[:3]}} for row in got] == expected
    # and stored so, line by line, by the stage
    run(tmp_path, protocol, verifier=LastNumberOnes())
    lines = (tmp_path / "run" / "toy" / "attempts.jsonl").read_text().splitlines()
    stored = [json.loads(line) for line in lines]
    assert [list(row) for row in stored] == [list(row) for row in expected]
    assert [{**row, "meta": {}} for row in stored] == [
        {**row, "prompt_hash": stored[0]["prompt_hash"], "meta": {}} for row in expected
    ]
    assert all(row["meta"]["benchmark"] == "toy" for row in stored)


def test_killed_eval_resumes_without_loss_or_duplicates(tmp_path):
    protocol = proto()
    whole = run(tmp_path, protocol, out="whole")
    killed = SeedAnswerEngine(fail_after=2)  # dies while generating the third of four shards
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, protocol, engine=killed, out="resumed")
    assert not (tmp_path / "resumed" / "results.json").exists()
    again = SeedAnswerEngine()
    resumed = run(tmp_path, protocol, engine=again, out="resumed")
    assert again.calls == 2  # only the two missing shards were generated
    a = read_records(tmp_path / "whole" / "toy" / "attempts.jsonl", Attempt)
    b = read_records(tmp_path / "resumed" / "toy" / "attempts.jsonl", Attempt)
    key = lambda x: (x.problem_id, x.index, x.text, x.verdict, x.seed)  # noqa: E731
    assert [key(x) for x in a] == [key(x) for x in b]
    assert resumed["benchmarks"]["toy"]["avg@4"] == whole["benchmarks"]["toy"]["avg@4"]
    # Bigger engine batches group shards into fewer calls; what is stored does not change.
    grouped = SeedAnswerEngine()
    run(tmp_path, protocol, engine=grouped, out="grouped", batch_size=16)
    assert grouped.calls == 2
    c = read_records(tmp_path / "grouped" / "toy" / "attempts.jsonl", Attempt)
    assert [key(x) for x in c] == [key(x) for x in a]
    # A finished run re-run is a no-op for the engine.
    idle = SeedAnswerEngine()
    run(tmp_path, protocol, engine=idle, out="resumed")
    assert idle.calls == 0


def test_other_protocol_refuses_to_mix_into_a_run_dir(tmp_path):
    run(tmp_path, proto())
    with pytest.raises(StoreError, match="another config"):
        run(tmp_path, proto(temperature=0.7))
    run(tmp_path, proto(temperature=0.7), force=True)  # sets the old shards aside
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["protocol"]["temperature"] == 0.7


def test_protocols_and_overrides():
    paper, quick = load_protocol("paper"), load_protocol("quick")
    assert (paper.n, paper.temperature, paper.top_p, paper.max_new_tokens, paper.answer_format) == (
        16,
        1.0,
        1.0,
        4096,
        "boxed",
    )
    assert (quick.n, quick.temperature) == (1, 0.0)
    assert paper.hash != quick.hash
    longer = load_protocol("quick", ["max_new_tokens=512"])
    assert longer.name == "quick" and longer.hash != quick.hash  # the name is a label, the hash decides
    renamed = Protocol(**{**PROTOCOLS["quick"], "name": "other"})
    assert renamed.hash == quick.hash
    from sftadapt.config import ConfigError

    with pytest.raises(ConfigError, match="identical"):
        load_protocol("quick", ["n=4"])
    with pytest.raises(ConfigError, match="unknown protocol"):
        load_protocol("fast")
    with pytest.raises(ConfigError, match="answer_format"):
        load_protocol("paper", ["answer_format=latex"])


def test_protocol_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("n: 4\ntemperature: 0.6\nmax_new_tokens: 1024\n")
    p = load_protocol(path)
    assert (p.name, p.n, p.temperature, p.max_new_tokens, p.chat) == ("mine", 4, 0.6, 1024, True)


def test_boxed_strict_and_grouping():
    assert apply_answer_format("correct", "last_number", "boxed_strict") == "no_answer"
    assert apply_answer_format("correct", "boxed", "boxed_strict") == "correct"
    assert apply_answer_format("timeout", "last_number", "boxed_strict") == "timeout"
    assert apply_answer_format("correct", "last_number", "boxed") == "correct"
    rows = [
        Attempt("a", "eval", 1, "h", "", verdict="wrong", extracted="2"),
        Attempt("a", "eval", 0, "h", "", verdict="correct", extracted="1"),
    ]
    (samples,) = group_attempts(rows)
    assert samples.verdicts == ["correct", "wrong"] and samples.answers == ["1", "2"]
    with pytest.raises(ValueError, match="not 0..n-1"):
        group_attempts(rows[:1])


def test_tiny_random_model_through_the_hf_engine(tmp_path):
    pytest.importorskip("sftadapt.verify.extract")
    problems = [
        Problem(id="a", problem="What is 2 + 3?", answer="5"),
        Problem(id="b", problem="What is 10 - 4?", answer="6"),
    ]
    res = evaluate(
        EvalConfig(
            model="tiny-random", protocol="quick", max_new_tokens=8, out=str(tmp_path / "tiny"), dtype="float32"
        ),
        problems={"mini": problems},
        progress=False,
        print_summary=False,
        n_boot=100,
    )
    mini = res["benchmarks"]["mini"]
    assert mini["n_problems"] == 2 and sum(mini["counts"].values()) == 2
    attempts = read_records(tmp_path / "tiny" / "mini" / "attempts.jsonl", Attempt)
    assert len(attempts) == 2 and all(a.verdict in VERDICTS for a in attempts)
    assert all(0 < a.meta["n_tokens"] <= 8 for a in attempts)
    assert mini["tokens_generated"] == sum(a.meta["n_tokens"] for a in attempts)
    assert res["model"]["spec"] == "tiny-random" and "revision" in res["model"]


def test_gold_sanity_on_real_benchmarks_and_a_planted_error():
    from sftadapt.data.sources import SourceError, load_benchmark
    from sftadapt.eval.evaluate import gold_sanity
    from sftadapt.verify import Verifier

    try:
        gsm = load_benchmark("gsm8k", 20)
        math = load_benchmark("math500", 20)
    except SourceError:
        pytest.skip("shared benchmark data not found")
    planted = [Problem(id="bad", problem="?", answer="19", solution=gsm[0].solution)]  # gold says 19, text 18
    with Verifier(workers=1) as verifier:
        for name, problems in (("gsm8k", gsm), ("math500", math)):
            res = gold_sanity(name, verifier=verifier, problems=problems)
            assert res["n"] == 20 and res["correct"] == 20 and res["failures"] == []
        res = gold_sanity("planted", verifier=verifier, problems=planted)
    assert res["rate"] == 0.0
    assert res["failures"] == [{"id": "bad", "gold": "19", "extracted": "18", "rule": "gsm8k", "verdict": "wrong"}]


def test_eval_command_on_shared_data_with_the_tiny_model(tmp_path):
    from typer.testing import CliRunner

    from sftadapt.cli import app
    from sftadapt.data.sources import SourceError, find_data_dir

    try:
        find_data_dir()
    except SourceError:
        pytest.skip("shared benchmark data not found")
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app,
        [
            "--quiet",
            "eval",
            "--model",
            "tiny-random",
            "--benchmarks",
            "gsm8k",
            "--protocol",
            "quick",
            "--set",
            "max_new_tokens=4",
            "--limit",
            "2",
            "--dtype",
            "float32",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["protocol"]["max_new_tokens"] == 4 and saved["protocol"]["name"] == "quick"
    assert saved["benchmarks"]["gsm8k"]["n_problems"] == 2 and "avg@1" in res.output
    res = CliRunner().invoke(app, ["eval", "--benchmarks", "gsm9k", "--out", str(out)])
    assert res.exit_code == 2 and "unknown benchmark 'gsm9k'" in res.output


def test_shard_groups_are_aligned_to_absolute_positions():
    from sftadapt.eval.evaluate import _batches

    assert _batches([0, 1, 2, 3, 4], shard_samples=16, batch_size=32) == [[0, 1], [2, 3], [4]]
    # Resuming after shard 0 sends shard 1 alone, not with shard 2: the calls match the uninterrupted run's.
    assert _batches([1, 2, 3, 4], shard_samples=16, batch_size=32) == [[1], [2, 3], [4]]
    assert _batches([0, 1], shard_samples=16, batch_size=8) == [[0], [1]]


class GoldEngine(FakeEngine):
    """Answers every prompt with the gold answer it was told about (the test maps prompts to answers)."""

    name = "scripted"

    def __init__(self, answers):
        self.answers, self.tokenizer = answers, None

    def generate(self, prompts, params, seeds=None):
        out = []
        for prompt, row in zip(prompts, seeds):
            answer = next(a for q, a in self.answers.items() if q in prompt)
            out.append(
                [
                    Completion(
                        text=f"so \\boxed{{{answer}}}",
                        token_ids=[1, 2],
                        logprobs=[-0.1, -0.1],
                        finish_reason="stop",
                        seed=s,
                    )
                    for s in row
                ]
            )
        return out

    def close(self):
        pass


def test_a_benchmark_file_with_a_field_map_is_evaluated_and_its_bad_rows_rejected(tmp_path):
    """`sftadapt eval --benchmarks my_test.json --problem-field q --answer-field a`: a user's own benchmark (an
    alpaca-like JSON array with other field names) is read by the same reader as every other command; the row
    without an answer goes to OUT/rejects.jsonl naming the file, line and field, and is not evaluated."""
    rows = [{"q": "What is 2 + 2?", "a": "4"}, {"q": "What is 3 + 4?", "a": "7"}, {"q": "What is 1 + 1?"}]
    data = tmp_path / "my_test.json"
    data.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")  # one row per line: line 4
    engine = GoldEngine({"2 + 2": "4", "3 + 4": "7", "1 + 1": "2"})
    engine.tokenizer = FakeTokenizer()
    cfg = EvalConfig(
        model="scripted-model",
        benchmarks=[str(data)],
        protocol="quick",
        max_new_tokens=16,
        out=str(tmp_path / "run"),
        fields=FieldOptions(problem="q", answer="a"),
    )
    res = evaluate(cfg, engine=engine, verifier=BoxedVerifier(), progress=False, print_summary=False, n_boot=50)
    mine = res["benchmarks"]["my_test"]
    assert mine["n_problems"] == 2 and mine["avg@1"]["value"] == 1.0
    rejects = [json.loads(line) for line in (tmp_path / "run" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["field"] == "a" and rejects[0]["line"] == 4
    assert str(data) in rejects[0]["file"]
    # Field-map options on registered benchmarks only are refused, not silently ignored.
    from sftadapt.data.sources import SourceError

    with pytest.raises(SourceError, match="field-map options"):
        evaluate(
            EvalConfig(
                model="scripted-model",
                benchmarks=["synthetic_id"],
                protocol="quick",
                out=str(tmp_path / "run2"),
                fields=FieldOptions(problem="q"),
            ),
            engine=engine,
            verifier=BoxedVerifier(),
            progress=False,
            print_summary=False,
        )


def test_benchmark_labels():
    from sftadapt.eval.evaluate import benchmark_label

    assert benchmark_label("gsm8k") == "gsm8k"
    assert benchmark_label("data/my test.jsonl") == "my_test"
    assert benchmark_label("runs/saved@test") == "saved"
    assert benchmark_label("hf:owner/name:main@test") == "name"


def test_benchmarks_keep_the_order_given(tmp_path):
    from sftadapt.eval.evaluate import _named_benchmarks

    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"problem": "What is 2 + 2?", "answer": "4"}) + "\n")
    named = _named_benchmarks([str(data), "synthetic_id"], None, None, None, tmp_path / "rejects.jsonl")
    assert list(named) == ["mine", "synthetic_id"] and named["synthetic_id"] is None and len(named["mine"]) == 1
