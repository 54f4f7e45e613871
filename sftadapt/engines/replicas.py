"""The `ray` backend: data-parallel generation on a Ray cluster of engine replicas (an actor pool).

N Ray actors each hold one inner engine (`hf` or `vllm`, built by `make_engine` in the actor) for the same model,
dtype, score_dtype and batch size. The driver (the stage's process) keeps what a stage touches: it loads the
tokenizer itself (prompts are rendered and budgets measured with it) and takes context_length, end_ids and
precision from replica 0. A `generate` or `score` call is cut into pieces that are streamed to the replicas:
one piece to each idle replica, the next piece to whichever finishes first, the results put back in the
caller's order. Shards, resume, provenance and rejects stay with the driver (data/store.py): a replica only
answers calls, so a stage's files do not depend on the backend.

- **Pieces.** With hf replicas a piece is exactly one batch one `HFEngine` would run (`hf.generate_batches`:
  prompt x n sorted by prompt length, cut every batch_size; `hf.score_batches` for scoring), so a replica runs
  the very batches a single engine runs and greedy fp32 outputs are bit-identical to `backend: hf` (at the same
  torch thread count: a replica runs `num_cpus` threads). With vllm replicas a piece is ceil(len / (replicas x
  4)) prompts (or `chunk`), in order; vLLM batches inside a replica itself. Seeds travel with their prompts
  (`seeds[i][j]`, or derive_seed(seed, prompt, j) as the inner engines derive it), so every sample gets the seed
  it would get on one engine. To keep every replica busy a call, i.e. a shard (`shard_size` problems x samples),
  must hold at least replicas x batch_size prompts; smaller shards leave replicas idle.
- **Refusals.** The driver checks every prompt's room in the context as the inner engines do (engines/facts.py)
  and raises `RequestRejected` with the caller's prompt indices; a refusal a replica raises itself comes back
  with its indices mapped to the caller's too, so engines/rejects.py and store.run_in_order work unchanged.
- **A lost replica.** Actors are created with `max_restarts` and `max_task_retries`: Ray restarts a dead actor
  (which rebuilds its engine) and runs its piece again; the driver prints one stderr line per loss and counts it
  in `stats["replica_restarts"]`. More than `max_restarts` losses of one replica end the call with an error.
- **Stats.** `stats` is the sum of the counters the replicas return with every piece (token counts, and
  generate/score seconds as engine-seconds summed over the replicas: with 2 busy replicas a wall second counts
  twice), plus `replicas` and `replica_restarts`; `calls` holds the pieces each replica ran.
- **Why an actor pool and not `ray.data.llm`.** Every backend takes our token ids in and returns token ids and
  raw (untempered) log-probs, scores responses with prompt log-probs, and runs hf replicas as well as vLLM; the
  stages call the engine one shard at a time and write the shards themselves. `ray.data.llm` is a batch pipeline
  over vLLM text prompts with its own output schema: none of that.

Options (`engine.options`): `replicas` (default 2), `backend` (the inner one: hf | vllm, default hf), `options`
(the inner backend's own options), `address` (unset: a local Ray cluster started in this process, or the one
already initialised; `auto`: the cluster `ray start --head` made on this node; `host:port` / `ray://host:port`:
a remote cluster, refused offline unless its host is loopback or in `allow_hosts`, as the openai backend's
servers), `allow_hosts`, `num_gpus` per replica (default: the inner vllm's tensor_parallel_size, 1 for hf, when
the cluster has GPUs; else 0), `num_cpus` per replica (default 1), `max_restarts` (default 3), `chunk` (prompts
per vllm piece), `pin_cpus` (default true: a CPU replica binds itself to `num_cpus` cores of its own,
`pin_cores`; false leaves placement to the OS). Ray's usage stats are always off (RAY_USAGE_STATS_ENABLED=0: Ray otherwise reports usage over
the network), a local cluster starts without the dashboard and replica logs stay in Ray's session logs. Every
replica imports sftadapt: a local cluster runs this Python; every node of a real cluster needs sftadapt (and
the model) installed.

    engine: {backend: ray, options: {replicas: 4, backend: vllm, options: {max_model_len: 8192}}}
    ray start --head   # then on each other node: ray start --address HEAD:6379
    sftadapt eval --model Qwen/Qwen2.5-Math-7B --engine ray --engine-option replicas=8 --engine-option address=auto

Test hook: SFTADAPT_TEST_KILL_REPLICA="<replica>:<call>" makes that replica SIGKILL itself at the start of its
call-th generate/score piece (counted from 1), in its first incarnation only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import sys
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

from sftadapt.engines.base import (
    Completion,
    EngineConfig,
    RequestRejected,
    Sampling,
    TokenScores,
    derive_seed,
    refuse_unknown,
)

KILL_REPLICA_ENV = "SFTADAPT_TEST_KILL_REPLICA"
INNER = ("hf", "vllm")
PIECES_PER_REPLICA = 4  # vllm pieces per replica and call: small enough that a fast replica takes more of them


class Replica:
    """One inner engine inside a Ray actor (`ray.remote` is applied where the pool is made). Every answer carries
    the counters moved since the last one and the incarnation (a fresh id per start), so the driver sums the
    stats and sees a restart."""

    def __init__(self, index: int, model: str, backend: str, options: dict, common: dict, threads: int, pin: bool):
        if threads > 0 and pin:
            pin_cores(index, threads)
        if threads > 0 and backend == "hf":  # Ray sets OMP_NUM_THREADS; torch may have read it differently
            import torch

            torch.set_num_threads(threads)
        os.environ["SFTADAPT_QUIET"] = "1"  # the driver prints the engine's line once
        from sftadapt.engines import make_engine

        self.engine = make_engine(model, EngineConfig(backend, dict(options)), **common)
        self.index, self.backend, self.calls = index, backend, 0
        self.incarnation = uuid.uuid4().hex
        self.reported: dict[str, float] = {}

    def _restarted(self) -> bool:
        import ray

        with warnings.catch_warnings():  # Ray's own property warns about an API it calls itself
            warnings.simplefilter("ignore")
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)

    def _reply(self, value: Any) -> tuple[Any, dict[str, float], tuple[str, bool]]:
        now = {k: float(v) for k, v in self.engine.stats.items() if isinstance(v, (int, float))}
        delta = {k: v - self.reported.get(k, 0.0) for k, v in now.items()}
        self.reported = now
        return value, delta, (self.incarnation, self._restarted())

    def _start_call(self, seeded: bool) -> None:
        self.calls += 1
        if os.environ.get(KILL_REPLICA_ENV) == f"{self.index}:{self.calls}" and not self._restarted():
            os.kill(os.getpid(), signal.SIGKILL)
        self.engine.seeded = seeded

    def facts(self):
        e = self.engine
        return self._reply(
            {
                "context_length": e.context_length,
                "end_ids": list(e.end_ids),
                "precision": dict(e.precision),
                "batch_size": getattr(e, "batch_size", None),
                "max_score_tokens": getattr(e, "max_score_tokens", None),
                "cores": sorted(os.sched_getaffinity(0)),
            }
        )

    def generate(self, prompts: list[str], params: Sampling, seeds: list[list[int]], seeded: bool):
        self._start_call(seeded)
        try:
            return self._reply(("ok", self.engine.generate(prompts, params, seeds)))
        except RequestRejected as err:  # as data: Ray would wrap the exception in its own type
            return self._reply(("rejected", err.reasons))

    def score(self, prompts: list[str], responses: list[str], entropy: bool, hidden: bool, seeded: bool):
        self._start_call(seeded)
        try:
            return self._reply(("ok", self.engine.score(prompts, responses, entropy=entropy, hidden=hidden)))
        except RequestRejected as err:
            return self._reply(("rejected", err.reasons))

    def close(self) -> None:
        self.engine.close()


def pin_cores(index: int, threads: int) -> list[int] | None:
    """Bind this process (and what it starts: vLLM's engine core) to replica `index`'s own `threads` cores of the
    node, cores index*threads .. index*threads+threads-1 of those it may use, wrapping around. Ray reserves CPUs
    only as a count; unbound, every CPU replica's threads run on all cores of the node (vLLM's CPU build binds
    its OpenMP threads to every core it is allowed), so two replicas on one node fight over the same cores.
    Returns the cores, or None where the node has no more cores than one replica's threads."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) <= threads:
        return None
    start = index * threads
    mine = [cores[(start + k) % len(cores)] for k in range(threads)]
    os.sched_setaffinity(0, mine)
    return mine


def check_address(address: Any, allow_hosts: Any, online: bool) -> None:
    """Refuse (ValueError) a cluster address off this machine while offline (runtime/network.py's rule for
    cluster addresses: `auto` or loopback or listed in allow_hosts)."""
    from sftadapt.runtime import network

    network.check_cluster_address(address, allow_hosts, online, "engine.options")


def _worker_env() -> dict[str, str]:
    """What replicas must see whatever the cluster's own environment: the offline switches, every SFTADAPT_*
    variable (the test hook included; a cluster started before this process never saw them) and vLLM's CPU
    settings (VLLM_CPU_KVCACHE_SPACE and the like, as the in-process backend would read them)."""
    from sftadapt.runtime import offline

    env = {
        k: v
        for k, v in os.environ.items()
        if k in offline.VARIABLES or k.startswith(("SFTADAPT_", "VLLM_CPU_", "VLLM_NO_USAGE_STATS"))
    }
    env["SFTADAPT_QUIET"] = "1"
    return env


def _connect(address: str | None) -> bool:
    """Initialise Ray for this process; True when this call started it (close() then shuts it down)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # Ray otherwise reports usage over the network
    import ray

    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "configure_logging": True}
    if address is None:  # "local": never RAY_ADDRESS or a running cluster, a new one in this process
        ray.init(address="local", include_dashboard=False, **quiet)
    else:
        ray.init(address=address, **quiet)
    return True


class RayEngine:
    OPTIONS = (
        "replicas",
        "backend",
        "options",
        "address",
        "allow_hosts",
        "num_gpus",
        "num_cpus",
        "max_restarts",
        "chunk",
        "pin_cpus",
    )
    seeded = True  # auto: both inner backends seed their samples; sent to the replicas with every piece

    def __init__(
        self,
        name: str,
        tokenizer,
        actors: list,
        backend: str,
        facts: dict,
        started_ray: bool = False,
        chunk: int | None = None,
        max_restarts: int = 3,
    ):
        self.name, self.tokenizer, self.actors, self.backend = name, tokenizer, actors, backend
        self.context_length = facts["context_length"]
        self.end_ids = tuple(facts["end_ids"])
        self.precision = dict(facts["precision"])  # as replica 0 runs it; every replica is built alike
        self.batch_size = facts.get("batch_size") or 32
        self.max_score_tokens = facts.get("max_score_tokens") or 4096
        self.chunk, self.max_restarts, self.started_ray = chunk, max_restarts, started_ray
        self.stats: dict[str, float] = {
            "generated_tokens": 0,
            "scored_tokens": 0,
            "generate_seconds": 0.0,
            "score_seconds": 0.0,
            "replicas": len(actors),
            "replica_restarts": 0,
        }
        self.calls = [0] * len(actors)  # pieces each replica ran
        self.cores: list[list[int]] = []  # the cores each replica may run on (pin_cores), as it started
        self._incarnations: list[str | None] = [None] * len(actors)

    # ------------------------------------------------------------ building
    @classmethod
    def from_config(
        cls, spec: str, options: dict, dtype: str = "auto", score_dtype: str | None = None, batch_size: int = 32
    ) -> RayEngine:
        refuse_unknown(options, cls.OPTIONS, "ray")
        replicas = _count(options.get("replicas", 2), "replicas", 1)
        backend = options.get("backend", "hf")
        if backend not in INNER:
            raise ValueError(f"engine.options.backend {backend!r}: the replicas run hf or vllm")
        if not isinstance(options.get("options") or {}, dict):
            raise ValueError("engine.options.options: the inner backend's options, a mapping")
        inner = dict(options.get("options") or {})
        chunk = options.get("chunk")
        if chunk is not None:
            chunk = _count(chunk, "chunk", 1)
            if backend == "hf":
                raise ValueError(
                    "engine.options.chunk: hf replicas run one engine batch per piece; set batch_size instead"
                )
        num_cpus = float(options.get("num_cpus", 1))
        max_restarts = _count(options.get("max_restarts", 3), "max_restarts", 0)
        address = options.get("address")
        from sftadapt.runtime import network

        check_address(address, options.get("allow_hosts"), network.online_now())
        if "seeded" in inner:
            raise ValueError("engine.options.options.seeded: set seeded on the ray block itself")

        started = _connect(address)
        try:
            import ray

            num_gpus = options.get("num_gpus")
            if num_gpus is None:
                has_gpus = ray.cluster_resources().get("GPU", 0) > 0
                num_gpus = (inner.get("tensor_parallel_size", 1) if backend == "vllm" else 1) if has_gpus else 0
            _check_room(ray, replicas, num_cpus, float(num_gpus))
            common = {"dtype": dtype, "score_dtype": score_dtype, "batch_size": batch_size}
            if backend == "vllm":  # vllm takes no score_dtype unless it equals dtype; it refuses others itself
                common = {k: v for k, v in common.items() if k != "score_dtype" or v is not None}
            remote = ray.remote(Replica).options(
                num_cpus=num_cpus,
                num_gpus=float(num_gpus),
                max_restarts=max_restarts,
                max_task_retries=max_restarts,
                runtime_env={"env_vars": _worker_env()},
            )
            threads = max(1, int(num_cpus)) if not num_gpus else 0
            pin = bool(options.get("pin_cpus", True))
            actors = [remote.remote(i, spec, backend, inner, common, threads, pin) for i in range(replicas)]
            from sftadapt.runtime.models import load_tokenizer

            tokenizer = load_tokenizer(spec, trust_remote_code=bool(inner.get("trust_remote_code", False)))
            # every replica built before the stage starts (a bad option fails here, not mid-stage)
            answers = ray.get([actor.facts.remote() for actor in actors])
        except BaseException:
            if started:
                import ray

                ray.shutdown()
            raise
        engine = cls(spec, tokenizer, actors, backend, answers[0][0], started, chunk, max_restarts)
        engine.cores = [answer[0]["cores"] for answer in answers]
        for replica, (_, delta, incarnation) in enumerate(answers):
            engine._account(replica, delta, incarnation)
        return engine

    # ------------------------------------------------------------ calls
    def generate(
        self, prompts: Sequence[str], params: Sampling, seeds: Sequence[Sequence[int]] | None = None
    ) -> list[list[Completion]]:
        from sftadapt.data import prompts as P
        from sftadapt.engines import facts, hf

        lengths = [len(P.prompt_token_ids(self.tokenizer, p)) for p in prompts]
        facts.fit(lengths, params.max_new_tokens, self.context_length, "ray engine")
        seeds = [
            [seeds[i][j] if seeds is not None else derive_seed(params.seed, p, j) for j in range(params.n)]
            for i, p in enumerate(prompts)
        ]
        results: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        if self.backend == "hf":  # one piece per hf batch; each request a prompt of its own, n=1
            batches = hf.generate_batches(lengths, params.n, self.batch_size)
            one = dataclasses.replace(params, n=1)
            pieces = [([prompts[i] for i, _ in b], one, [[seeds[i][j]] for i, j in b], self.seeded) for b in batches]
            owners = [[i for i, _ in b] for b in batches]
            for b, out in zip(batches, self._run("generate", pieces, owners)):
                for (i, j), row in zip(b, out):
                    results[i][j] = row[0]
        else:
            spans = self._spans(len(prompts))
            pieces = [(list(prompts[a:z]), params, seeds[a:z], self.seeded) for a, z in spans]
            for (a, z), out in zip(spans, self._run("generate", pieces, [list(range(a, z)) for a, z in spans])):
                results[a:z] = out
        return results  # type: ignore[return-value]

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], entropy: bool = False, hidden: bool = False
    ) -> list[TokenScores]:
        from sftadapt.engines import hf

        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
        if self.backend == "hf":
            from sftadapt.data import prompts as P

            pairs = P.score_pairs(self.tokenizer, prompts, responses)
            owners = hf.score_batches([(len(p), len(r)) for p, r in pairs], self.max_score_tokens)
        else:
            owners = [list(range(a, z)) for a, z in self._spans(len(prompts))]
        pieces = [([prompts[k] for k in o], [responses[k] for k in o], entropy, hidden, self.seeded) for o in owners]
        results: list[TokenScores | None] = [None] * len(prompts)
        for o, out in zip(owners, self._run("score", pieces, owners)):
            for k, scores in zip(o, out):
                results[k] = scores
        return results  # type: ignore[return-value]

    def _spans(self, n: int) -> list[tuple[int, int]]:
        size = self.chunk or max(1, math.ceil(n / (len(self.actors) * PIECES_PER_REPLICA)))
        return [(a, min(a + size, n)) for a in range(0, n, size)]

    def _run(self, method: str, pieces: list[tuple], owners: list[list[int]]) -> list[Any]:
        """Each piece's answer, in order: one piece per idle replica, the next to whichever finishes first.
        `owners[k][r]` is the caller's index of row r of piece k, for a refusal's indices."""
        import ray

        results: list[Any] = [None] * len(pieces)
        refused: dict[int, str] = {}
        failure: BaseException | None = None
        idle, pending, given = list(range(len(self.actors))), {}, 0
        while pending or (given < len(pieces) and failure is None and not refused):
            while idle and given < len(pieces) and failure is None and not refused:
                replica = idle.pop(0)
                ref = getattr(self.actors[replica], method).remote(*pieces[given])
                pending[ref] = (given, replica)
                given += 1
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            k, replica = pending.pop(ref)
            idle.append(replica)
            try:
                (status, value), delta, incarnation = ray.get(ref)
            except ray.exceptions.RayActorError as err:  # restarts exhausted (or the node is gone)
                failure = failure or RuntimeError(
                    f"ray engine: replica {replica} was lost and cannot be restarted (max_restarts "
                    f"{self.max_restarts}): {str(err).splitlines()[0]}"
                )
                continue
            except ray.exceptions.RayTaskError as err:  # the inner engine's own error, raised once all are in
                cause = getattr(err, "cause", None)
                failure = failure or (cause if isinstance(cause, Exception) else err)
                continue
            except ray.exceptions.RayError as err:  # the piece itself was lost (its worker, its node)
                failure = failure or RuntimeError(f"ray engine: a piece on replica {replica} failed: {err}")
                continue
            self._account(replica, delta, incarnation)
            self.calls[replica] += 1
            if status == "rejected":
                refused.update({owners[k][r]: why for r, why in value.items()})
            else:
                results[k] = value
        if failure is not None:
            raise failure
        if refused:
            raise RequestRejected(refused, f"ray engine ({self.backend} replica)")
        return results

    def _account(self, replica: int, delta: dict[str, float], incarnation: tuple[str, bool]) -> None:
        for key, value in delta.items():
            if key in self.stats and key not in ("replicas", "replica_restarts"):
                self.stats[key] += value
        ident, restarted = incarnation
        known = self._incarnations[replica]
        if ident != known and (known is not None or restarted):
            self.stats["replica_restarts"] += 1
            print(
                f"ray engine: replica {replica} was lost and restarted by Ray (its engine rebuilt, its piece run "
                f"again; {self.stats['replica_restarts']} restart(s) so far)",
                file=sys.stderr,
                flush=True,
            )
        self._incarnations[replica] = ident

    def close(self) -> None:
        """Kill the replicas, and shut Ray down if this engine started it."""
        actors, self.actors = self.actors, []
        if not actors:
            return
        import ray

        if ray.is_initialized():
            for actor in actors:
                ray.kill(actor, no_restart=True)
            if self.started_ray:
                ray.shutdown()


def _check_room(ray, replicas: int, num_cpus: float, num_gpus: float) -> None:
    """Refuse replicas the cluster can never hold (Ray would wait for them forever); say so when they must wait
    for resources other work holds now. Judged by the nodes up at the start (an autoscaler adds none here)."""
    need = {"CPU": replicas * num_cpus, "GPU": replicas * num_gpus}
    total, free = ray.cluster_resources(), ray.available_resources()
    short = {k: v for k, v in need.items() if v > total.get(k, 0.0) + 1e-9}
    if short:
        have = ", ".join(f"{total.get(k, 0.0):g} {k}" for k in short)
        want = ", ".join(f"{v:g} {k}" for k, v in short.items())
        raise ValueError(
            f"engine.options: {replicas} replicas need {want} and the Ray cluster has {have}: lower replicas, "
            "num_cpus or num_gpus, or add nodes"
        )
    if any(v > free.get(k, 0.0) + 1e-9 for k, v in need.items()):
        print(
            f"ray engine: the replicas need {need['CPU']:g} CPU / {need['GPU']:g} GPU and the cluster has "
            f"{free.get('CPU', 0.0):g} / {free.get('GPU', 0.0):g} free now: they start as other work releases them",
            file=sys.stderr,
            flush=True,
        )


def _count(value: Any, field: str, least: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"engine.options.{field} = {value!r}: an integer >= {least}")
    return value
