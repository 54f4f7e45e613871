"""The `openai` backend: sampling and scoring on OpenAI-compatible completions servers (vLLM, llama.cpp, ...).

Every request goes to `POST {base_url}/completions`, one request per sample. Samples are unseeded by default
(`seeded: auto`; engines/facts.py): a seeded request leaves vLLM's fast sampler and a server's batching makes it
irreproducible anyway. With `seeded: true`, sample j of prompt i carries its own seed (`seeds[i][j]`, derived
from (base seed, problem id, stage, index) by the stage, as for hf), so a resumed shard asks for what the killed
run asked for. A vLLM server's `max_model_len` (from `GET /models`) clamps each request to the room its prompt
leaves, and a prompt with none is refused before it is sent; requests to it carry the model's end ids
(`stop_token_ids`, from the generation_config.json of the local tokenizer folder). The prompts are the stage's pre-rendered text;
what the server sees depends on `server`:

- `vllm` (default; `vllm serve`; not SGLang, which has no `return_tokens_as_token_ids`): the prompt goes as
  **token ids** (`prompts.prompt_token_ids`, our tokenisation), so the server cannot tokenise it differently.
  Generated token ids come back through `return_tokens_as_token_ids`; `logprobs: 1` returns each sampled token's
  log-prob. vLLM computes these from the raw model output before temperature/top-p (its default
  `--logprobs-mode raw_logprobs`), i.e. untempered, as `Completion.logprobs` documents; a server started with
  another `--logprobs-mode` returns processed values, which this backend cannot detect. Scoring sends prompt
  ids + `prompts.response_token_ids` with `echo: true, max_tokens: 1, logprobs: 0`: the echoed prompt
  log-probs, sliced at the prompt's length, are the response's per-token log-probs, aligned by construction.
- `llama-cpp-python` (its `llama_cpp.server`, started with `--logits_all true` so it can echo prompt
  log-probs): its completions endpoint takes text only, so the rendered text goes as is (the server tokenises
  it with special tokens, as our tokenizer does). Its log-probs are a log-softmax of the raw logits
  (untempered). It returns no token ids: `Completion.token_ids` is the completion text re-tokenised by our
  tokenizer (the tokens training will see), which can differ from the sampled ones where a sample was not
  canonically tokenised, so `logprobs` may then be one or two entries longer or shorter than `token_ids`.
  Scoring echoes prompt + response text (+ the end token's text) and takes the log-probs of the response's
  tokens at the end of the echo; when the server's token count or spelling there does not match ours, the
  row is refused with that reason instead of being mis-aligned. llama.cpp's defaults (top_k 40, min_p 0.05, repeat
  penalty 1.1) are switched off so that temperature/top-p mean what they mean for hf and vLLM.
- `llama-server` (llama.cpp's own C++ server; `xllamacpp` runs it from Python): the prompt goes as token ids,
  as for vLLM; each generated token comes back with its id and log-prob (`logprobs.content[i].id/.logprob`).
  Those log-probs are a softmax of the raw logits (llama.cpp's default, `post_sampling_probs` off), i.e.
  untempered. The sampler chain is set to temperature -> top-k -> top-p (llama.cpp's default applies top-p
  before temperature) with top_k, min_p and the repeat penalty off, so temperature/top-p mean what they mean for
  hf and vLLM. llama.cpp's server returns no prompt log-probs (depending on its version it refuses `echo`, "Only
  no echo is supported", or ignores it), so `score` is refused on it with that reason: use it for sampling and
  evaluation, and score with hf, vllm or a server that echoes. It batches concurrent requests continuously and
  reuses cached prompt prefixes, so a seeded T > 0 request is not reproducible from run to run (the numerics
  depend on what ran beside it: 1 of 4 prompts sampled another text in a second identical run): a resumed shard
  then samples afresh rather than regenerating the killed run's text. Greedy output was stable in our tests.

Transport: `concurrency` requests in flight per server (threads; the servers batch them). Each request goes
to the server in the rotation with the fewest requests in flight (ties round-robin), a retry to another one
where there is one (routing.py). Timeouts, refused/reset connections, 429 and 5xx are retried `max_retries`
times, after a random pause in [0, `backoff` × 2^k] s (full jitter, k-th retry, at most 60 s), so that the
clients of a restarted server do not all come back at once. A server leaves the rotation after `max_failures`
such failures in a row (a 429 does not count), or when a request of its has had no response for
`stall_timeout` s and the server does not answer a health probe either (a busy server still answers one: a long
generation is not a stall); its stalled requests are aborted and sent elsewhere with the same body and seed, so
each request's result is taken once. A server out of the rotation is probed every `health_interval` s (`GET
/health` at the server's root, as vLLM and llama-server serve it; `GET {base_url}/models` where there is none,
as for llama-cpp-python) and comes back when it answers 200. A connection that takes longer than
`stall_timeout` to open is a failure too. While every server is out, a request waits for the probes and its
backoff, each wait one of its tries; after `max_retries` + 1 tries the run stops with one line
(`ServerUnavailable`), and a re-run after the servers are back resumes from the finished shards. At start-up,
a server that does not answer `GET /models` starts out of the rotation while another one answers (none: the
same one line). Any other 4xx refuses that row only (`RequestRejected`, with the server's reason): the stage
writes it to rejects.jsonl and goes on. The API key is read from the environment variable named by
`api_key_env` and is never logged, written to provenance, or put in an error message. The model is checked against
`GET /models` at start-up, so a wrong served-model name fails at once rather than as a reject per row.

Network: without `--online` (or `online: true`) the backend talks only to loopback servers (127.x.x.x, ::1,
`localhost`) and to the hosts listed in `allow_hosts`; any other base URL is refused with one line before any
name lookup or connection (runtime/network.py; stage configs are checked when built, so `run --dry-run` says so
too). A host is matched as written: a name is never resolved to decide.

    engine:
      backend: openai
      options: {base_urls: ["http://node1:8000/v1", "http://node2:8000/v1"], model: Qwen/Qwen2.5-Math-7B,
                api_key_env: VLLM_API_KEY, concurrency: 64, allow_hosts: [node1, node2],
                max_failures: 3, stall_timeout: 120, health_interval: 10}

    sftadapt eval --engine openai --engine-option base_urls=http://node1:8000/v1 --engine-option allow_hosts=node1 ...

`stats` counts like hf (generated tokens include the end token of a stopped sample; `requests`, `retries`,
`failovers`: retries sent to another server than the failed one, `servers_out` / `servers_back`: servers taken
out of / put back into the rotation, `stalls`: requests aborted on a stalled server);
`score(..., entropy=True)` is refused: a completions server returns top-k log-probs, not the distribution.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import queue
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from sftadapt.data import prompts as P
from sftadapt.engines import facts
from sftadapt.engines.base import Completion, RequestRejected, Sampling, TokenScores, derive_seed, refuse_unknown
from sftadapt.engines.routing import ServerPool, Ticket
from sftadapt.runtime import network

SERVERS = ("vllm", "llama-cpp-python", "llama-server")
_TOKEN_ID_PROMPTS = ("vllm", "llama-server")  # servers that take the prompt as our token ids
ECHO_SERVERS = ("vllm", "llama-cpp-python")  # servers that echo prompt log-probs, so `score` works on them
# Fields every request to a server kind carries. llama.cpp's sampler defaults (top_k 40, min_p 0.05, a repeat
# penalty) are off so that temperature/top_p mean what they mean for hf and vLLM; llama-server also applies
# temperature first, as hf and vLLM do. benchmarks/bench_engines.py's direct arm sends the same fields.
_LLAMA_CPP_SAMPLING = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
SERVER_FIELDS: dict[str, dict] = {
    # vLLM otherwise fills unset top_k / min_p / repetition_penalty from the checkpoint's
    # generation_config.json (Qwen2.5's sets top_k 20 and a repetition penalty 1.05)
    "vllm": {"return_tokens_as_token_ids": True, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0},
    "llama-cpp-python": _LLAMA_CPP_SAMPLING,
    "llama-server": {**_LLAMA_CPP_SAMPLING, "samplers": ["temperature", "top_k", "top_p", "min_p"]},
}
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# Recent responses, kept (up to this many characters) for a chunk that is re-run problem by problem after a
# reject: the re-run's requests are the same bodies (same seeds), so they are answered from here, once each.
_REPLAY_CHARS = 64_000_000


class ServerUnavailable(ValueError):
    """The servers did not answer after all retries (a ValueError: the CLI shows it as one line)."""


class _Stalled(Exception):
    """The request was aborted because its server stalled: retried elsewhere, not counted against the server."""


class _Fatal(Exception):
    """Not a row's fault and not worth a retry (bad API key, a body the server cannot parse as JSON)."""


class OpenAIEngine:
    # engine.options.seeded (facts.py): off unless asked, since seeded requests leave vLLM's fast sampler and a
    # server's batching makes them irreproducible all the same
    seeded = False
    OPTIONS = (
        "base_urls",
        "model",
        "api_key_env",
        "concurrency",
        "timeout",
        "max_retries",
        "backoff",
        "server",
        "served_dtype",
        "extra_body",
        "check_model",
        "allow_hosts",
        "max_failures",
        "stall_timeout",
        "health_interval",
    )

    def __init__(
        self,
        spec: str,
        tokenizer,
        base_urls: Sequence[str],
        model: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout: float = 600.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        server: str = "vllm",
        served_dtype: str = "server",
        extra_body: dict | None = None,
        check_model: bool = True,
        allow_hosts: Sequence[str] | str | None = None,
        max_failures: int = 3,
        stall_timeout: float = 120.0,
        health_interval: float = 10.0,
    ):
        if isinstance(base_urls, str):  # `--engine-option base_urls=http://a/v1,http://b/v1`
            base_urls = [u for u in base_urls.split(",") if u.strip()]
        if not base_urls:
            raise ValueError("engine.options.base_urls: give at least one server, e.g. [http://127.0.0.1:8000/v1]")
        if server not in SERVERS:
            raise ValueError(f"engine.options.server '{server}' is not one of {', '.join(SERVERS)}")
        for name, value, low in (
            ("concurrency", concurrency, 1),
            ("max_retries", max_retries, 0),
            ("max_failures", max_failures, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"engine.options.{name} = {value!r}: must be a whole number >= {low}")
        if not timeout or float(timeout) <= 0 or float(backoff) < 0:
            raise ValueError("engine.options.timeout must be > 0 and backoff >= 0")
        for name, value in (("stall_timeout", stall_timeout), ("health_interval", health_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"engine.options.{name} = {value!r}: must be a number of seconds > 0")
        self.name, self.tokenizer = spec, tokenizer
        # the `max_model_len` the servers report in GET /models (vLLM does; _check_model reads it): requests are
        # clamped to it like hf's and vllm's; where no server reports one, a server refuses a request over its
        # limit with a 4xx, which the stage turns into a reject row
        self.context_length: int | None = None
        self.end_ids = facts.end_ids(tokenizer, facts.folder_end_ids(_local_folder(spec)))
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.model = model or spec
        self.server, self.concurrency = server, concurrency
        self.timeout, self.max_retries, self.backoff = float(timeout), max_retries, float(backoff)
        self.extra_body = dict(extra_body or {})
        self._key_env = api_key_env
        self._key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not self._key:
            raise ValueError(f"engine.options.api_key_env: the environment variable {api_key_env} is not set")
        # offline, loopback or allow-listed servers only, judged on the very strings `_connection` parses and
        # before any lookup or connection (the stage configs were checked when built; this covers direct callers)
        network.check_servers(
            self.base_urls,
            allow_hosts,
            network.online_now(),
            "engine.options.base_urls",
            "engine.options.allow_hosts",
        )
        # what the server runs is the server's choice: recorded as told (served_dtype), not guessed
        self.precision = {
            "generate": served_dtype,
            "score": served_dtype,
            "detail": f"openai backend ({server}) on {len(self.base_urls)} server(s)",
        }
        self.stats = {
            "generated_tokens": 0,
            "scored_tokens": 0,
            "generate_seconds": 0.0,
            "score_seconds": 0.0,
            "requests": 0,
            "retries": 0,
            "failovers": 0,
        }
        self.stall_timeout = float(stall_timeout)
        self.pool = ServerPool(
            self.base_urls,
            capacity=concurrency,
            max_failures=max_failures,
            stall_timeout=self.stall_timeout,
            health_interval=float(health_interval),
            probe=self._healthy,
            stats=self.stats,
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._replay: collections.OrderedDict[str, tuple[dict, int]] = collections.OrderedDict()
        self._replay_chars = 0
        self._eos = P.end_token_id(tokenizer)
        if check_model:
            self._check_model()

    @classmethod
    def from_config(
        cls, spec: str, options: dict, dtype: str = "auto", score_dtype: str | None = None, batch_size: int = 32
    ) -> OpenAIEngine:
        # dtype/score_dtype/batch_size are the stage's hf knobs: the server decides precision and batching
        refuse_unknown(options, cls.OPTIONS, "openai")
        if "base_urls" not in options:
            raise ValueError("engine.options.base_urls is required for the openai backend")
        from sftadapt.runtime.models import load_tokenizer

        return cls(spec, load_tokenizer(spec), **options)

    # ------------------------------------------------------------ transport
    def _connection(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        """A keep-alive connection per (thread, server), opened within stall_timeout, then reading up to timeout."""
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        if url not in conns:
            conns[url] = (_open(url, min(self.timeout, self.stall_timeout)), urllib.parse.urlsplit(url).path)
        conn = conns[url][0]
        if conn.sock is None:
            conn.connect()
            conn.sock.settimeout(self.timeout)
        return conns[url]

    def _drop_connection(self, url: str) -> None:
        conn = getattr(self._local, "conns", {}).pop(url, None)
        if conn is not None:
            conn[0].close()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _call(self, url: str, method: str, path: str, body: dict | None, ticket: Ticket) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        for fresh in (False, True):
            reused = url in getattr(self._local, "conns", {})
            try:
                conn, prefix = self._connection(url)
                ticket.conn = conn  # the watcher shuts its socket down if the server stalls
                if ticket.aborted:
                    raise _Stalled
                conn.request(method, prefix + path, body=data, headers=self._headers())
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop_connection(url)
                if ticket.aborted:
                    raise _Stalled from None
                # a kept-alive connection the server closed while idle (uvicorn: after 5 s): resend once on a
                # new one at once, it is not the server failing; a new connection failing is
                if fresh or not reused:
                    raise
            except BaseException:
                self._drop_connection(url)
                if ticket.aborted:
                    raise _Stalled from None
                raise
            finally:
                ticket.conn = None
        self._local.size = len(raw)
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")

    def _step(self, k: int) -> float:
        """The k-th backoff bound: backoff × 2^k s, at most 60 s."""
        return min(60.0, self.backoff * 2**k)

    def _post(self, body: dict) -> dict:
        """POST /completions with retries; a 4xx row error is RequestRejected(index -1) for the caller to place."""
        key = json.dumps(body, sort_keys=True)
        sent = body if self.seeded else {k: v for k, v in body.items() if k != "seed"}
        with self._lock:
            if key in self._replay:
                payload, size = self._replay.pop(key)
                self._replay_chars -= size
                return payload
        last, failed = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.stats["retries"] += 1
                # full jitter: a server's clients retry spread over the whole interval, not all at once
                time.sleep(random.uniform(0.0, self._step(attempt - 1)))
            ticket = self.pool.acquire(avoid=failed, wait=self._step(attempt))
            if ticket is None:  # every server out of the rotation, and the probes found none back
                last = f"every server is out of rotation ({self.pool.describe()})"
                continue
            url, outcome, why = ticket.url, "fail", ""
            if failed is not None and url != failed:
                with self._lock:
                    self.stats["failovers"] += 1
            try:
                try:
                    status, payload = self._call(url, "POST", "/completions", sent, ticket)
                except _Stalled:
                    last, failed = f"{url}: stalled (no response within {self.stall_timeout:g} s)", url
                    continue
                except (ConnectionError, TimeoutError, http.client.HTTPException, OSError) as err:
                    why = _why(err)
                    last, failed = f"{url}: {why}", url
                    continue
                with self._lock:
                    self.stats["requests"] += 1
                if status == 200 and isinstance(payload, dict):
                    outcome = "ok"
                    self._remember(key, payload, len(key) + self._local.size)
                    return payload
                message = _message(payload)
                if status in _RETRY_STATUS or status >= 500:
                    outcome = "neutral" if status == 429 else "fail"  # rate limited: busy, not broken
                    why = f"HTTP {status} {message}"
                    last, failed = f"{url}: {why}", url
                    continue
                outcome = "neutral"
                if status in (401, 403):
                    raise _Fatal(
                        f"{url}: HTTP {status}: the server refused the API key"
                        + (f" from ${self._key_env}" if self._key_env else " (none given: set api_key_env)")
                    )
                outcome = "ok"  # the server works; the row is at fault
                raise RequestRejected({-1: f"HTTP {status} {message}"}, "openai server")
            finally:
                self.pool.release(ticket, outcome, why)
        raise ServerUnavailable(
            f"openai backend: no answer after {self.max_retries + 1} tries (last: {last}); start the server(s) "
            "and re-run the same command: finished shards are kept"
        )

    def _run(self, bodies: list[dict]) -> list[dict]:
        """All requests, `concurrency` per server in flight; RequestRejected names every refused index."""
        results: list[Any] = [None] * len(bodies)
        todo: queue.Queue = queue.Queue()
        for i in range(len(bodies)):
            todo.put(i)
        failures: list[BaseException] = []
        stop = threading.Event()
        self.pool.watch()  # stalls and health probes, from now until close()

        def worker() -> None:
            while not stop.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[i] = self._post(bodies[i])
                except RequestRejected as err:
                    results[i] = err
                except BaseException as err:  # the servers are gone (or the key is wrong): stop everyone
                    failures.append(err)
                    stop.set()

        threads = [
            threading.Thread(target=worker, daemon=True)
            for _ in range(min(len(bodies), self.concurrency * len(self.base_urls)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            err = failures[0]
            if isinstance(err, (ServerUnavailable, _Fatal)):
                raise ServerUnavailable(str(err)) from None
            raise err
        refused = {i: r.reasons[-1] for i, r in enumerate(results) if isinstance(r, RequestRejected)}
        if refused:
            raise RequestRejected(refused, "openai server")
        return results

    def _get(self, url: str, path: str, timeout: float) -> tuple[int, Any]:
        """One GET on a connection of its own (a probe must not wait behind, or reuse, a request's connection)."""
        conn = _open(url, timeout)
        try:
            conn.request("GET", urllib.parse.urlsplit(url).path + path, headers=self._headers())
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")

    def _healthy(self, url: str, timeout: float) -> bool:
        """The health probe: `GET /health` at the server's root (vLLM, llama-server) answers 200; where there is
        no such route (llama-cpp-python: 404), `GET {url}/models` answers 200 instead."""
        root = url[: -len("/v1")] if url.endswith("/v1") else url
        try:
            status, _ = self._get(root, "/health", timeout)
            if status in (404, 405):
                status, _ = self._get(url, "/models", timeout)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def _check_model(self) -> None:
        """Every server that answers GET /models serves `model` (a wrong name fails here, not once per row).

        A server that does not answer after the retries (or not within stall_timeout) starts out of the
        rotation, for the health probes to bring back; when none answers, the run stops with one line."""
        down: dict[str, str] = {}
        for url in self.base_urls:
            last = ""
            for attempt in range(self.max_retries + 1):
                if attempt:
                    time.sleep(random.uniform(0.0, self._step(attempt - 1)))
                try:
                    status, payload = self._get(url, "/models", min(self.timeout, self.stall_timeout))
                except TimeoutError as err:  # hung: retrying would wait as long again
                    last = _why(err)
                    break
                except (OSError, http.client.HTTPException) as err:
                    last = _why(err)
                    continue
                if status in (401, 403):
                    raise ValueError(f"openai backend: {url} refused the API key (HTTP {status})")
                if status != 200 or not isinstance(payload, dict):
                    last = f"HTTP {status} {_message(payload)}"
                    continue
                models = [m for m in payload.get("data", []) if isinstance(m, dict)]
                served = [m.get("id") for m in models]
                lengths = [m.get("max_model_len") for m in models if m.get("id") == self.model]
                if lengths and isinstance(lengths[0], int) and lengths[0] > 0:
                    self.context_length = min(self.context_length or lengths[0], lengths[0])
                if self.model not in served:
                    raise ValueError(
                        f"openai backend: {url} serves {served}, not '{self.model}' "
                        "(set engine.options.model to the served name)"
                    )
                last = ""
                break
            if last:
                down[url] = last
        if len(down) == len(self.base_urls):
            url, last = next(iter(down.items()))
            raise ServerUnavailable(
                f"openai backend: {url}/models did not answer after {self.max_retries + 1} "
                f"tries (last: {last}); is the server up?"
            )
        for url, last in down.items():
            self.pool.take_out(url, f"no answer to GET /models at start-up ({last})")

    # ------------------------------------------------------------ generate
    def _prompt(self, text: str, ids: list[int]) -> Any:
        return ids if self.server in _TOKEN_ID_PROMPTS else text

    def _body(self, prompt: Any, **fields) -> dict:
        return {"model": self.model, "prompt": prompt, **fields, **SERVER_FIELDS[self.server], **self.extra_body}

    def generate(
        self, prompts: Sequence[str], params: Sampling, seeds: Sequence[Sequence[int]] | None = None
    ) -> list[list[Completion]]:
        start = time.perf_counter()
        requests, bodies = [], []
        prompt_ids = [P.prompt_token_ids(self.tokenizer, text) for text in prompts]
        rooms = facts.fit([len(ids) for ids in prompt_ids], params.max_new_tokens, self.context_length, "openai server")
        for i, (text, ids) in enumerate(zip(prompts, prompt_ids)):
            for j in range(params.n):
                seed = seeds[i][j] if seeds is not None else derive_seed(params.seed, text, j)
                # servers take 32- or 64-bit seeds; ours are 63-bit, and llama.cpp's is 32-bit. Unseeded, the
                # seed stays in the body only as the key of the replay cache (_post drops it before sending):
                # n samples of one prompt must stay n requests
                fields = {
                    "max_tokens": rooms[i],
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "n": 1,
                    "seed": seed % (2**31),
                    "logprobs": 1,
                }
                if self.server == "vllm":  # llama.cpp stops on its model's end-of-generation ids itself
                    fields["stop_token_ids"] = list(self.end_ids)
                if params.stop:
                    fields["stop"] = list(params.stop)
                requests.append((i, j, seed if self.seeded else None))
                bodies.append(self._body(self._prompt(text, ids), **fields))
        try:
            responses = self._run(bodies)
        except RequestRejected as err:  # per prompt, as stages count rows
            raise RequestRejected(
                {requests[k][0]: why for k, why in sorted(err.reasons.items())}, "openai server"
            ) from None
        finally:
            self.stats["generate_seconds"] += time.perf_counter() - start
        results: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        for (i, j, seed), resp in zip(requests, responses):
            results[i][j] = self._completion(resp, seed)
        return results  # type: ignore[return-value]

    def _completion(self, resp: dict, seed: int | None) -> Completion:
        choice = resp["choices"][0]
        text = choice.get("text") or ""
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        lp = choice.get("logprobs") or {}
        logprobs = [float(x) for x in (lp.get("token_logprobs") or []) if x is not None]
        if self.server == "vllm":
            ids = [_token_id(t) for t in lp.get("tokens") or []]
        elif self.server == "llama-server":  # chat-style entries: {id, token, logprob, ...} per generated token
            entries = lp.get("content") or []
            ids, logprobs = [int(e["id"]) for e in entries], [float(e["logprob"]) for e in entries]
        else:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.server in _TOKEN_ID_PROMPTS:  # hf's token_ids stop before the end token
            ids, logprobs = facts.strip_end(ids, logprobs, self.end_ids)
        with self._lock:
            self.stats["generated_tokens"] += len(ids) + (reason == "stop")
        return Completion(text=text, token_ids=ids, logprobs=logprobs, finish_reason=reason, seed=seed)

    def _remember(self, key: str, payload: dict, size: int) -> None:
        with self._lock:
            self._replay[key] = (payload, size)
            self._replay_chars += size
            while self._replay_chars > _REPLAY_CHARS and self._replay:
                _, (_, old) = self._replay.popitem(last=False)
                self._replay_chars -= old

    # ------------------------------------------------------------ score
    def score(
        self, prompts: Sequence[str], responses: Sequence[str], entropy: bool = False, hidden: bool = False
    ) -> list[TokenScores]:
        if hidden:
            raise ValueError(
                "the openai backend cannot return hidden states (the Patch reward's diversity needs "
                "them): score with engine.backend hf for this role"
            )
        if self.server not in ECHO_SERVERS:
            raise ValueError(
                "the openai backend cannot score on llama.cpp's own server: it does not echo prompt log-probs "
                "(it refuses or ignores `echo`); score with engine.backend hf or vllm, or a vllm / "
                "llama-cpp-python server, for this role"
            )
        if entropy:
            raise ValueError(
                "the openai backend cannot score entropies (a server returns top-k log-probs, not "
                "the distribution): use engine.backend hf or vllm for this role"
            )
        start = time.perf_counter()
        pairs, bodies = [], []
        for p, r, (pids, rids) in zip(prompts, responses, P.score_pairs(self.tokenizer, prompts, responses)):
            if self.server != "vllm" and pids[:1] != [self.tokenizer.bos_token_id]:
                # llama-cpp-python pairs echoed token t with the logits after token t unless the prompt
                # starts with BOS (which it drops): one token off for any other prompt
                raise ValueError(
                    "openai backend (llama-cpp-python): scoring needs prompts that start with the "
                    "BOS token (chat prompts do); use a vllm server for plain prompts"
                )
            pairs.append((p, r, pids, rids))
            fields = {
                "max_tokens": 1,
                "echo": True,
                "logprobs": 0 if self.server == "vllm" else 1,
                "temperature": 0.0,
                "seed": 0,
            }
            prompt = pids + rids if self.server == "vllm" else p + r + self.tokenizer.decode([self._eos])
            bodies.append(self._body(prompt, **fields))
        try:
            responses_ = self._run(bodies)
            results, refused = [], {}
            for k, ((p, _r, pids, rids), resp) in enumerate(zip(pairs, responses_)):
                try:
                    results.append(
                        TokenScores(token_ids=list(rids), logprobs=self._response_logprobs(resp, p, pids, rids))
                    )
                except _Misaligned as err:
                    refused[k] = str(err)
            if refused:
                raise RequestRejected(refused, "openai server")
        finally:
            self.stats["score_seconds"] += time.perf_counter() - start
        self.stats["scored_tokens"] += sum(len(rids) for *_, rids in pairs)
        return results

    def _response_logprobs(self, resp: dict, prompt: str, pids: list[int], rids: list[int]) -> list[float]:
        lp = resp["choices"][0].get("logprobs") or {}
        values = lp.get("token_logprobs") or []
        if self.server == "vllm":
            # echoed prompt = our ids: entry t is log p(token t | tokens < t); the last entry is the sampled one
            got = values[len(pids) : len(pids) + len(rids)]
            if len(got) != len(rids) or any(v is None for v in got):
                raise _Misaligned(f"the server echoed {len(values)} log-probs for {len(pids) + len(rids)} tokens")
            return [float(v) for v in got]
        # text prompt: llama-cpp-python echoes every prompt token but BOS-id ones (the leading one and any
        # later, e.g. each chat turn's <|im_start|> in SmolLM2), then the generated token unless it was EOS; the
        # response is the run of tokens just before that. Alignment is checked by count and spelling.
        tokens = lp.get("tokens") or []
        bos = self.tokenizer.bos_token_id
        echoed = [t for t in (pids + rids)[1:] if t != bos]
        end = len(echoed)
        if len(values) not in (end, end + 1) or bos in rids:
            raise _Misaligned(
                f"the server tokenised prompt + response into {len(values)} tokens, ours has {end} "
                "(text prompts: use a server that takes token ids, e.g. vllm, for exact alignment)"
            )
        theirs = "".join(tokens[end - len(rids) : end - 1])
        mine = self.tokenizer.decode(rids[:-1])
        if theirs != mine and mine.isascii():  # non-ASCII pieces come back with split bytes dropped
            raise _Misaligned("the server's response tokens spell another text than ours")
        got = values[end - len(rids) : end]
        if any(v is None for v in got):
            raise _Misaligned("the server returned no log-prob for a response token")
        return [float(v) for v in got]

    def close(self) -> None:
        self.pool.close()
        for url in list(getattr(self._local, "conns", {})):
            self._drop_connection(url)
        self._replay.clear()


class _Misaligned(Exception):
    pass


def _local_folder(spec: str) -> str | None:
    """The local folder of `spec` (its tokenizer's, whose generation_config.json names the end ids), or None."""
    from sftadapt.runtime.models import resolve_model

    try:
        folder = resolve_model(spec)
    except Exception:  # an unknown name: the tokenizer loader has said so already
        return None
    return folder if os.path.isdir(folder) else None


def _token_id(token: str) -> int:
    # vLLM with return_tokens_as_token_ids spells each token "token_id:<id>"
    try:
        return int(str(token).rsplit(":", 1)[-1])
    except ValueError:
        raise ValueError(
            f"openai backend: the server returned token {token!r}, not 'token_id:<n>' "
            "(is it vLLM? set engine.options.server)"
        ) from None


def _open(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname, parts.port, timeout=timeout)


def _message(payload: Any) -> str:
    if isinstance(payload, dict):
        err = payload.get("error", payload.get("detail", payload))
        if isinstance(err, dict):
            err = err.get("message", err)
        payload = err
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return " ".join(text.split())[:300]


def _why(err: BaseException) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "timed out"
    return f"{type(err).__name__}: {err}"[:200]
