"""Mind the Gap rewriting: the keep/refuse/fallback policy with a scripted engine (exact numbers), the two
baselines, resume and config refusal; then the real tiny HF model for log-prob alignment and a SIGKILLed CLI run
resumed to byte-identical output."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from fakes import END, BoxedVerifier, FakeEngine, FakeTokenizer

from sftadapt.adapt.policy import (
    Candidate,
    candidates_to_score,
    choose,
    explain_empty,
    guided_rejection,
    ngram_jaccard,
    reference_mention,
)
from sftadapt.adapt.rewrite import RewriteConfig, rewrite
from sftadapt.config import load_config
from sftadapt.data import prompts as P
from sftadapt.data.records import Example, Problem, read_records
from sftadapt.data.store import KILL_ENV, StoreError
from sftadapt.engines.base import Completion, TokenScores
from sftadapt.verify import Verdict


# ---------------------------------------------------------------- pure policy
def test_ngram_jaccard_closed_forms():
    assert ngram_jaccard("abcdef", "abcdef") == 1.0
    assert ngram_jaccard("abcdef", "abcdeg") == pytest.approx(1 / 3)  # {abcde,bcdef} vs {abcde,bcdeg}
    assert ngram_jaccard("abcde", "vwxyz") == 0.0
    assert ngram_jaccard("A  b\nCDE", "a b cde") == 1.0  # whitespace collapsed, case folded
    assert ngram_jaccard("", "") == 1.0 and ngram_jaccard("ab", "ab") == 1.0  # shorter than n: itself


def test_guided_rejection_reasons():
    ref = "We add 2 and 3 to get 5. The final answer is $\\boxed{5}$."
    reason, sim = guided_rejection(ref + " ", ref, 0.9, ["teacher"])
    assert reason.startswith("near_copy") and sim == 1.0
    reason, _ = guided_rejection("As my Teacher showed, 2+3 = \\boxed{5}", ref, 0.9, ["teacher"])
    assert reason == "mentions_reference: 'teacher'"
    assert guided_rejection("Two plus three is \\boxed{5}", ref, 0.9, ["teacher"])[0] is None
    assert reference_mention("the REFERENCE  solution says", ["reference solution"]) == "reference solution"


def test_keep_policies_rank_dedup_and_tie_break():
    cands = [Candidate(3, "b", -1.0), Candidate(1, "a", -2.0), Candidate(2, " a ", -0.5), Candidate(5, "c", -1.0)]
    assert [c.index for c in candidates_to_score(cands, "first")] == [1]
    assert [c.index for c in candidates_to_score(cands, "most_likely")] == [1, 3, 5]  # " a " duplicates "a"
    assert [c.index for c in choose(cands, "most_likely")] == [3]  # tie -1.0 between 3 and 5: earlier wins
    assert [c.index for c in choose(cands, "all_distinct", max_keep=2)] == [3, 5]
    assert [c.index for c in choose(cands, "first")] == [1]
    assert choose([], "most_likely") == []
    with pytest.raises(ValueError, match="not scored"):
        choose([Candidate(0, "x")], "most_likely")


# ---------------------------------------------------------------- scripted engine
class ScriptedEngine(FakeEngine):
    """Texts from `script[(kind, problem_id)][j]`; a response scores `value(text)` per token under the solve
    prompt and 0.25 less under a guided or mapper prompt; tokens are the words plus the end token."""

    name = "scripted"

    def __init__(self, problems, script, values, fail_on_call=None):
        self.tokenizer = FakeTokenizer()
        self.by_text = {p.problem: p.id for p in problems}
        self.script, self.values, self.fail_on_call = script, values, fail_on_call
        self.calls = 0
        self.stats = {"generated_tokens": 0, "scored_tokens": 0, "generate_seconds": 0.0, "score_seconds": 0.0}

    def _where(self, prompt):
        kind = "guided" if "Teacher's solution" in prompt else "mapper" if "Rewrite the solution" in prompt else "solve"
        pid = next(pid for text, pid in self.by_text.items() if f"{text}\n" in prompt + "\n")
        return kind, pid

    def _tick(self):
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise KeyboardInterrupt("killed")

    def generate(self, prompts, params, seeds=None):
        self._tick()
        out = []
        for prompt, row in zip(prompts, seeds):
            texts = self.script[self._where(prompt)]
            assert len(row) == params.n == len(texts)
            out.append(
                [
                    Completion(t, [1] * len(t.split()), [-0.5] * len(t.split()), "length" if "CUT" in t else "stop", s)
                    for t, s in zip(texts, row)
                ]
            )
            self.stats["generated_tokens"] += sum(len(t.split()) + 1 for t in texts)
        return out

    def score(self, prompts, responses, entropy=False, hidden=False):
        self._tick()
        out = []
        for prompt, response in zip(prompts, responses):
            kind, _ = self._where(prompt)
            value = self.values.get(response, -2.0) - (0.25 if kind != "solve" else 0.0)
            ids = [len(w) for w in response.split()] + [END]
            out.append(TokenScores(ids, [value] * len(ids)))
            self.stats["scored_tokens"] += len(ids)
        return out

    def close(self):
        pass


PROBLEMS = [
    Problem("pa", "Alpha: what is 1?", "1", "One is one.\n#### 1"),
    Problem("pb", "Beta: what is 2?", "2", "Two is two, since 1 + 1 = 2. \\boxed{2}"),
    Problem("pc", "Gamma: what is 3?", "3", "Three. \\boxed{3}"),
    Problem("pd", "Delta: what is 4?", "4", "Four <<2+2=4>>4\n#### 4"),
]
EXPERT = {p.id: P.ensure_boxed(p.solution, p.answer) for p in PROBLEMS}
WRONG = ["nope \\boxed{0}"] * 4
SCRIPT = {
    ("solve", "pa"): ["wrong \\boxed{7}", "A \\boxed{1}", "B long \\boxed{1}", "A  \\boxed{1}"],
    ("solve", "pb"): WRONG,
    ("solve", "pc"): WRONG,
    ("solve", "pd"): WRONG,
    ("guided", "pb"): [EXPERT["pb"], "My teacher says \\boxed{2}", "fresh path \\boxed{2}", "no \\boxed{5}"],
    ("guided", "pc"): ["CUT \\boxed{3}"] + WRONG[1:],  # right, but cut by the length cap
    ("guided", "pd"): [EXPERT["pd"] + " ", "no \\boxed{5}", "no \\boxed{6}", "no"],
    ("mapper", "pa"): ["rewritten \\boxed{1}"],
    ("mapper", "pb"): ["rewritten \\boxed{9}"],
    ("mapper", "pc"): ["rewritten \\boxed{3}"],
    ("mapper", "pd"): ["rewritten"],
}
VALUES = {
    "A \\boxed{1}": -0.5,
    "B long \\boxed{1}": -0.2,
    "fresh path \\boxed{2}": -1.0,
    EXPERT["pa"]: -0.3,
    EXPERT["pc"]: -3.0,
    "rewritten \\boxed{1}": -0.1,
}


def run(tmp_path, out="run", engine=None, problems=PROBLEMS, script=SCRIPT, scorer=None, **opts):
    cfg = load_config(
        RewriteConfig, None, None, base={"model": "scripted", "out": str(tmp_path / out), "shard_size": 3, **opts}
    )
    engine = engine or ScriptedEngine(problems, script, VALUES)
    return rewrite(
        cfg,
        engine=engine,
        scorer=scorer,
        verifier=BoxedVerifier(),
        problems=problems,
        progress=False,
        print_summary=False,
    )


def rows(tmp_path, out="run"):
    return read_records(tmp_path / out / "train.jsonl", Example)


def n_tokens(text):
    return len(text.split()) + 1


def test_mind_the_gap_stages_policy_and_summary(tmp_path):
    summary = run(tmp_path)
    got = {r.id: r for r in rows(tmp_path)}
    assert {i: r.origin for i, r in got.items()} == {"pa": "self", "pb": "guided", "pc": "expert", "pd": "expert"}
    # stage 1: the most likely of the distinct correct samples; behaviour = target (both under the solve prompt)
    a = got["pa"]
    assert a.response == "B long \\boxed{1}" and a.meta["kept_index"] == 2
    assert a.self_pass_rate == 0.75
    assert a.behavior_logprobs == a.target_logprobs == [-0.2] * n_tokens(a.response)
    # stage 2: the near-copy and the reference mention are refused, the fresh path kept; behaviour under the
    # guided prompt (0.25 lower in the script), target under the plain prompt
    b = got["pb"]
    assert b.response == "fresh path \\boxed{2}" and b.self_pass_rate == 0.0
    assert b.target_logprobs == [-1.0] * 4 and b.behavior_logprobs == [-1.25] * 4
    assert b.target_logprob_mean == -1.0
    guided = [x for x in b.attempts if x["stage"] == "guided"]
    assert [x["verdict"] for x in guided] == ["correct", "correct", "correct", "wrong"]
    assert guided[0]["meta"]["rejected"].startswith("near_copy") and guided[0]["meta"]["jaccard"] == 1.0
    assert guided[1]["meta"]["rejected"] == "mentions_reference: 'teacher'"
    assert "rejected" not in guided[2]["meta"] and "rejected" not in guided[3]["meta"]
    assert [x["stage"] for x in b.attempts] == ["self"] * 4 + ["guided"] * 4
    # the training prompt is the plain problem: the guidance never enters it
    assert b.problem == "Beta: what is 2?"
    assert b.provenance["prompt_hash"] == P.template_hash(FakeTokenizer(), P.GUIDED)
    assert b.provenance["sampling"]["temperature"] == 0.7 and a.provenance["sampling"]["temperature"] == 1.0
    # stage 3: the expert solution normalised to the evaluation format, no behaviour log-probs
    d = got["pd"]
    assert d.response == "Four 4\nThe final answer is $\\boxed{4}$." and d.behavior_logprobs is None
    assert d.target_logprobs == [-2.0] * n_tokens(d.response) and d.meta["expert_verdict"] == "correct"
    assert got["pc"].target_logprob_mean == -3.0
    # summary: rows and the gap metric per origin, final vs the original expert set
    o = summary["origins"]
    assert (o["self"]["rows"], o["guided"]["rows"], o["expert"]["rows"]) == (1, 1, 2)
    assert o["expert"]["target_logprob_mean"] == pytest.approx(-2.5)
    assert summary["gap"]["final_set"] == pytest.approx((-0.2 - 1.0 - 3.0 - 2.0) / 4)
    assert summary["gap"]["expert_set"] == pytest.approx((-0.3 - 2.0 - 3.0 - 2.0) / 4)  # pb's expert: default -2
    assert summary["counts"] == {
        "problems": 4,
        "self_solved": 1,
        "guided_tried": 3,
        "guided_correct": 5,
        "guided_near_copy": 2,
        "guided_mentions_reference": 1,
        "guided_accepted": 1,
        "self_truncated": 0,
        "guided_truncated": 1,
    }
    assert got["pc"].attempts[4]["meta"]["rejected"].startswith("truncated")
    assert summary["self_pass_rate_mean"] == pytest.approx(0.75 / 4)
    assert summary["empty_origins"] == {}
    assert summary["stages"]["guided"]["problems"] == 3 and summary["stages"]["self"]["problems"] == 4
    # generated tokens per stage are the engine's counter deltas: the scripted texts' words + 1
    assert summary["stages"]["self"]["generated_tokens"] == sum(
        n_tokens(t) for p in PROBLEMS for t in SCRIPT[("solve", p.id)]
    )
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["gap"] == summary["gap"]
    # the dataset card beside the set: origin shares and the gap before/after, from the same numbers
    from sftadapt.data.card import read_card

    card = read_card(tmp_path / "run")["sftadapt"]
    assert card["origin_shares"] == {"expert": 0.5, "guided": 0.25, "self": 0.25} and card["method"] == "mind_the_gap"
    assert card["gap"]["after_adapted_set"] == pytest.approx(summary["gap"]["final_set"])
    assert card["gap"]["before_expert_set"] == pytest.approx(summary["gap"]["expert_set"])


class SamplingOnly(ScriptedEngine):
    """A sampler that cannot score (as llama.cpp's server): the rewrite must score with its score engine."""

    def score(self, prompts, responses, entropy=False, hidden=False):
        raise AssertionError("the sampling engine was asked to score")


def test_a_separate_score_engine_scores_and_the_set_is_the_same(tmp_path):
    run(tmp_path, out="one")
    sampler, scorer = SamplingOnly(PROBLEMS, SCRIPT, VALUES), ScriptedEngine(PROBLEMS, SCRIPT, VALUES)
    summary = run(tmp_path, out="two", engine=sampler, scorer=scorer)
    # the same texts and scores, so the same rows; every log-prob came from the scorer
    assert (tmp_path / "one" / "train.jsonl").read_bytes() == (tmp_path / "two" / "train.jsonl").read_bytes()
    assert sampler.stats["scored_tokens"] == 0 and scorer.stats["generated_tokens"] == 0
    # the stage's compute counts both engines: tokens generated by the one, scored by the other
    assert sum(st["scored_tokens"] for st in summary["stages"].values()) == scorer.stats["scored_tokens"] > 0
    assert sum(st["generated_tokens"] for st in summary["stages"].values()) == sampler.stats["generated_tokens"] > 0


def test_a_same_score_engine_decides_nothing_and_a_backend_does():
    from sftadapt.config import ConfigError, decided_options

    same = load_config(RewriteConfig, None, None, base={})
    assert "score_engine" not in decided_options(same)  # run ids of existing runs are unchanged
    hf = load_config(RewriteConfig, None, None, base={"score_engine": {"backend": "hf"}})
    assert decided_options(hf)["score_engine"] == {"backend": "hf"}
    with pytest.raises(ConfigError, match="score_engine.*'nope' is not one of"):
        load_config(RewriteConfig, None, None, base={"score_engine": {"backend": "nope"}})


def test_first_and_all_distinct(tmp_path):
    run(tmp_path, out="first", keep="first")
    assert rows(tmp_path, "first")[0].response == "A \\boxed{1}"
    run(tmp_path, out="all", keep="all_distinct")
    pa = [r for r in rows(tmp_path, "all") if r.meta["problem_id"] == "pa"]
    # two distinct correct paths ("A  \\boxed{1}" is "A \\boxed{1}" again), most likely first
    assert [(r.id, r.response) for r in pa] == [("pa", "B long \\boxed{1}"), ("pa#1", "A \\boxed{1}")]


def test_truncated_correct_response_is_kept_only_when_asked(tmp_path):
    run(tmp_path, keep_truncated=True)
    pc = {r.id: r for r in rows(tmp_path)}["pc"]
    assert (pc.origin, pc.response) == ("guided", "CUT \\boxed{3}")


def test_empty_guided_origin_is_explained(tmp_path):
    easy = [PROBLEMS[0]]
    summary = run(tmp_path, problems=easy)
    assert summary["origins"]["guided"]["rows"] == 0 and summary["origins"]["expert"]["rows"] == 0
    assert summary["empty_origins"]["guided"] == "guided: 0 rows — every problem was solved in stage 1"
    assert summary["stages"]["guided"]["problems"] == 0
    assert explain_empty(
        "guided", "mind_the_gap", {"guided_tried": 3, "guided_correct": 2, "guided_near_copy": 2}, 4, 4
    ).startswith("guided: 0 rows — none of the 3 problems that reached stage 2")


def test_prompted_rewrite_baseline(tmp_path):
    summary = run(tmp_path, method="prompted_rewrite")
    got = {r.id: r for r in rows(tmp_path)}
    assert {i: r.origin for i, r in got.items()} == {"pa": "rewrite", "pb": "expert", "pc": "rewrite", "pd": "expert"}
    a = got["pa"]
    assert a.response == "rewritten \\boxed{1}" and a.target_logprobs == [-0.1] * 3
    assert a.behavior_logprobs == [-0.35] * 3  # under the mapper prompt that produced it
    assert a.self_pass_rate is None and [x["stage"] for x in a.attempts] == ["rewrite"]
    assert got["pd"].attempts[0]["verdict"] == "no_answer"
    assert summary["counts"]["rewrite_correct"] == 2 and set(summary["origins"]) == {"rewrite", "expert"}


def test_select_most_likely_baseline(tmp_path):
    values = {**VALUES, EXPERT["pa"]: -0.3}
    summary = run(tmp_path, method="select_most_likely", engine=ScriptedEngine(PROBLEMS, SCRIPT, values))
    got = {r.id: r for r in rows(tmp_path)}
    # pa: its best correct sample (-0.2) beats the expert (-0.3); every other problem has only the expert
    assert {i: r.origin for i, r in got.items()} == {"pa": "self", "pb": "expert", "pc": "expert", "pd": "expert"}
    assert got["pa"].response == "B long \\boxed{1}" and got["pa"].meta["method"] == "select_most_likely"
    assert summary["empty_origins"] == {}
    values[EXPERT["pa"]] = -0.1  # now the expert is more likely than every sample: it is kept
    run(tmp_path, out="b", method="select_most_likely", engine=ScriptedEngine(PROBLEMS, SCRIPT, values))
    assert rows(tmp_path, "b")[0].origin == "expert"


def test_resume_after_an_interrupt_is_identical_and_skips_done_work(tmp_path):
    run(tmp_path, out="whole")
    with pytest.raises(KeyboardInterrupt):  # dies in the first shard of stage 2 (calls: gen+score x2 shards)
        run(tmp_path, out="resumed", engine=ScriptedEngine(PROBLEMS, SCRIPT, VALUES, fail_on_call=5))
    assert not (tmp_path / "resumed" / "train.jsonl").exists()
    again = ScriptedEngine(PROBLEMS, SCRIPT, VALUES)
    run(tmp_path, out="resumed", engine=again)
    assert again.calls == 3 + 2  # guided: generate + 2 scores (one shard); final: 2 shards x 1 score
    assert (tmp_path / "resumed" / "train.jsonl").read_bytes() == (tmp_path / "whole" / "train.jsonl").read_bytes()


def test_changed_config_refuses_unless_forced(tmp_path):
    run(tmp_path)
    with pytest.raises(StoreError, match="another config"):
        run(tmp_path, k=4, near_copy_threshold=0.8)
    summary = run(tmp_path, near_copy_threshold=0.8, force=True)
    assert summary["rows"] == 4
    assert list((tmp_path / "run" / "shards").glob("self.old-*/shard-00000.jsonl"))


def test_config_validation():
    from sftadapt.config import ConfigError

    with pytest.raises(ConfigError, match="keep 'best' is unknown"):
        load_config(RewriteConfig, None, ["keep=best"])
    with pytest.raises(ConfigError, match="method"):
        load_config(RewriteConfig, None, ["method=dart"])
    cfg = load_config(RewriteConfig, None, ["reference_phrases=[teacher, the given solution]"])
    assert cfg.reference_phrases == ["teacher", "the given solution"]


# ---------------------------------------------------------------- the real tiny model
class StagedVerifier:
    """Everything is wrong in the first verify call (stage 1), correct in the second (stage 2)."""

    def __init__(self):
        self.calls = 0

    def verify_many(self, golds, texts):
        self.calls += 1
        return [Verdict("correct" if self.calls == 2 else "wrong", "x", "boxed", 0.0) for _ in texts]


def _manual(engine, prompt, response):
    ids = P.prompt_token_ids(engine.tokenizer, prompt)
    resp = P.response_token_ids(engine.tokenizer, response)
    with torch.no_grad():
        logp = torch.log_softmax(engine.model(torch.tensor([ids + resp])).logits[0].float(), -1)
    return resp, [logp[len(ids) - 1 + t, tok].item() for t, tok in enumerate(resp)]


def test_logprobs_align_with_training_tokenisation_on_the_tiny_model(tiny_engine, tmp_path):
    problems = PROBLEMS[:2]
    cfg = load_config(
        RewriteConfig,
        None,
        None,
        base={
            "model": "tiny-random",
            "out": str(tmp_path / "t"),
            "k": 2,
            "guided_tries": 2,
            "max_new_tokens": 12,
            "keep_truncated": True,
        },
    )  # random text rarely stops
    rewrite(cfg, engine=tiny_engine, verifier=StagedVerifier(), problems=problems, progress=False, print_summary=False)
    got = rows(tmp_path, "t")
    assert [r.origin for r in got] == ["guided", "guided"]
    tok = tiny_engine.tokenizer
    for r, p in zip(got, problems):
        guided = P.guided_prompt(tok, p.problem, EXPERT[p.id])
        ids, behavior = _manual(tiny_engine, guided, r.response)
        assert len(r.behavior_logprobs) == len(ids) == len(P.response_token_ids(tok, r.response))
        assert r.behavior_logprobs == pytest.approx(behavior, abs=1e-4)
        _, target = _manual(tiny_engine, P.solve_prompt(tok, p.problem), r.response)
        assert r.target_logprobs == pytest.approx(target, abs=1e-4)
        assert r.target_logprob_mean == pytest.approx(sum(target) / len(target), abs=1e-5)
        assert behavior != pytest.approx(target, abs=1e-3)  # the two prompts really differ
    # nothing is correct on stage 1 and everything wrong: all experts, scored under the solve prompt
    rewrite(
        load_config(RewriteConfig, None, None, base={**cfg.__dict__, "out": str(tmp_path / "e")}),
        engine=tiny_engine,
        verifier=BoxedVerifier(),
        problems=problems,
        progress=False,
        print_summary=False,
    )
    for r, p in zip(rows(tmp_path, "e"), problems):
        assert r.origin == "expert" and r.behavior_logprobs is None
        ids, target = _manual(tiny_engine, P.solve_prompt(tok, p.problem), EXPERT[p.id])
        assert r.response == EXPERT[p.id] and r.target_logprobs == pytest.approx(target, abs=1e-4)


def _cli(out, data, env_kill=None):
    # the same thread count as this process: the uninterrupted run is computed here, and float reductions
    # may round differently with another number of threads
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    env.pop(KILL_ENV, None)
    if env_kill:
        env[KILL_ENV] = env_kill
    cmd = [
        sys.executable,
        "-m",
        "sftadapt.cli",
        "-q",
        "rewrite",
        "--model",
        "tiny-random",
        "--data",
        str(data),
        "--out",
        str(out),
        "--k",
        "2",
        "--guided-tries",
        "2",
        "--max-new-tokens",
        "6",
        "--dtype",
        "float32",
        "--set",
        "shard_size=2",
        "--set",
        "verifier_workers=1",
        "--set",
        "batch_size=8",
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_sigkilled_cli_run_resumes_to_identical_output(tiny_engine, tmp_path):
    from sftadapt.verify import Verifier

    data = tmp_path / "sft.jsonl"
    lines = [
        json.dumps(
            {
                "question": f"Sam has {i} apples and buys {i + 1} more. How many now?",
                "answer": f"He has {i} + {i + 1} = <<{i}+{i + 1}={2 * i + 1}>>{2 * i + 1}.\n#### {2 * i + 1}",
            }
        )
        for i in range(5)
    ]
    data.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
    # the uninterrupted run, in this process (same model, dtype, batch size and thread count as the CLI's)
    base = {
        "model": "tiny-random",
        "data": str(data),
        "k": 2,
        "guided_tries": 2,
        "max_new_tokens": 6,
        "dtype": "float32",
        "shard_size": 2,
        "verifier_workers": 1,
        "batch_size": 8,
    }
    whole = tmp_path / "whole"
    with Verifier(workers=1) as verifier:
        rewrite(
            load_config(RewriteConfig, None, None, base={**base, "out": str(whole)}),
            engine=tiny_engine,
            verifier=verifier,
            progress=False,
            print_summary=False,
        )
    assert (whole / "rejects.jsonl").read_text().count("\n") == 1

    out = tmp_path / "killed"
    first = _cli(out, data, "self:1:mid_write")  # dies while writing the second shard of stage 1
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert (out / "shards" / "self" / "shard-00000.jsonl").exists()
    assert (out / "shards" / "self" / "shard-00001.jsonl.tmp").exists()
    assert not (out / "shards" / "self" / "shard-00001.jsonl").exists()
    second = _cli(out, data, "final:1:before_write")  # resumes stage 1, runs stage 2, dies in stage 3
    assert second.returncode == -signal.SIGKILL, second.stderr[-2000:]
    assert (out / "shards" / "guided" / "shard-00002.jsonl").exists() and not (out / "train.jsonl").exists()
    third = _cli(out, data)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "5 rows ->" in third.stdout and "| original expert set |" in third.stdout
    assert (out / "train.jsonl").read_bytes() == (whole / "train.jsonl").read_bytes()
    timeless = lambda s: {
        k: v
        for k, v in json.loads(s.read_text()).items()  # noqa: E731
        if k not in ("stages", "totals", "wall_seconds_this_run")
    }
    assert timeless(out / "summary.json") == timeless(whole / "summary.json")
    # another config refuses to mix with these shards (the CLI turns it into one red line, exit code 2)
    with pytest.raises(StoreError, match="another config"):
        rewrite(
            load_config(RewriteConfig, None, None, base={**base, "out": str(out), "k": 3}),
            engine=tiny_engine,
            verifier=BoxedVerifier(),
            progress=False,
            print_summary=False,
        )
