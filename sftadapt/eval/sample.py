"""Sample a model on a dataset and verify every sample: `Attempt` records with verdicts, and the accuracy.

This is the loop every stage that samples shares (`sample_attempts`): render the solve prompt, draw `n`
samples per problem with seeds derived from (problem id, stage, index), verify each against the gold answer.

    sftadapt sample --model smollm2-135m --data gsm8k --limit 20 --out runs/sample-gsm8k
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sftadapt.config import config_dict, config_hash, option, without_engine_options
from sftadapt.data import budget
from sftadapt.data import prompts as P
from sftadapt.data.formats import FieldOptions, fields_option
from sftadapt.data.records import Attempt, Problem
from sftadapt.engines import facts
from sftadapt.engines.base import Completion, Engine, EngineConfig, Sampling, derive_seed
from sftadapt.registry import Stage
from sftadapt.runtime import tracking
from sftadapt.runtime.precision import normalize


@dataclass
class SampleConfig:
    model: str = option("smollm2-135m", help="model: HF id, local folder, smollm2-135m or tiny-random")
    data: str = option("gsm8k", help="file (JSONL/Parquet), registered dataset name, or hf:owner/name")
    fields: FieldOptions = fields_option()
    out: str = option("runs/sample", help="output folder")
    limit: int | None = option(None, help="first N problems only")
    n: int = option(1, help="samples per problem")
    temperature: float = option(1.0, help="sampling temperature (0 = greedy)")
    top_p: float = option(1.0, help="nucleus sampling mass")
    max_new_tokens: int = option(256, help="generation budget per sample")
    seed: int = option(0, help="base seed; each sample's seed derives from (seed, problem id, index)")
    chat: bool = option(True, help="apply the model's chat template")
    dtype: str = option(
        "auto", help="auto (bf16 only where the hardware runs it natively, else float32) | float32 | bfloat16"
    )
    batch_size: int = option(32, help="sequences per generate call")
    engine: EngineConfig = field(
        default_factory=EngineConfig, metadata={"help": "the backend that samples (engine.backend, engine.options)"}
    )
    shard_size: int = option(16, help="problems per resumable shard")
    data_dir: str | None = option(None, help="benchmark data folder (default: find shared/data)")
    force: bool = option(False, help="set aside shards of a different config instead of refusing")
    max_prompt_tokens: int | None = budget.max_prompt_tokens_option()
    online: bool = tracking.online_option()

    def validate(self) -> None:
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        normalize(self.dtype)


def attempt_seeds(sampling: Sampling, problems: Sequence[Problem], stage: str) -> list[list[int]]:
    """The seed of sample j of each problem: (base seed, problem id, stage, j), so a rerun reproduces it."""
    return [[derive_seed(sampling.seed, p.id, stage, j) for j in range(sampling.n)] for p in problems]


def sample_attempts(
    engine: Engine,
    verifier,
    problems: Sequence[Problem],
    sampling: Sampling,
    stage: str,
    prompt_for: Callable[[Problem], str],
    prompt_hash: str,
    timing: dict[str, float] | None = None,
) -> list[list[Attempt]]:
    """`sampling.n` verified attempts per problem; seeds from (base seed, problem id, stage, index)
    (`attempt_seeds`). `timing`, when given, receives the wall seconds of the engine call (`generate_s`) and of
    the verification (`verify_s`), which the eval stage spreads over its samples. The two halves,
    `generate_attempts` (engine) and `verify_attempts` (no engine), are what a pipelined shard loop
    (store.Phases) runs apart, so that one shard's verification overlaps the next shard's generation."""
    completions = generate_attempts(engine, problems, sampling, stage, prompt_for, timing)
    return verify_attempts(verifier, problems, completions, stage, prompt_hash, timing)


def generate_attempts(
    engine: Engine,
    problems: Sequence[Problem],
    sampling: Sampling,
    stage: str,
    prompt_for: Callable[[Problem], str],
    timing: dict[str, float] | None = None,
) -> list[list[Completion]]:
    """The engine half of `sample_attempts`: `sampling.n` completions per problem (`timing["generate_s"]`)."""
    prompts = [prompt_for(p) for p in problems]
    seeds = attempt_seeds(sampling, problems, stage)
    start = time.perf_counter()
    completions = engine.generate(prompts, sampling, seeds=seeds)
    if timing is not None:
        timing["generate_s"] = time.perf_counter() - start
    return completions


def verify_attempts(
    verifier,
    problems: Sequence[Problem],
    completions: Sequence[Sequence[Completion]],
    stage: str,
    prompt_hash: str,
    timing: dict[str, float] | None = None,
) -> list[list[Attempt]]:
    """The engine-free half of `sample_attempts`: verify each completion against its problem's gold answer and
    make the Attempts (`timing["verify_s"]`). Safe off the main thread with a `Verifier` (no signals)."""
    flat = [(p, c) for p, outs in zip(problems, completions) for c in outs]
    golds, texts = [p.answer for p, _ in flat], [c.text for _, c in flat]
    start = time.perf_counter()
    verdicts = verifier.verify_many(golds, texts)
    if timing is not None:
        timing["verify_s"] = time.perf_counter() - start
    attempts: list[list[Attempt]] = [[] for _ in problems]
    k = 0
    for i, (problem, outs) in enumerate(zip(problems, completions)):
        for j, comp in enumerate(outs):
            v = verdicts[k]
            k += 1
            attempts[i].append(
                Attempt(
                    problem_id=problem.id,
                    stage=stage,
                    index=j,
                    prompt_hash=prompt_hash,
                    text=comp.text,
                    token_logprobs=comp.logprobs,
                    finish_reason=comp.finish_reason,
                    seed=comp.seed,
                    verdict=v.verdict,
                    extracted=v.extracted,
                    rule=v.rule,
                    meta={"n_tokens": len(comp.token_ids)},
                )
            )
    return attempts


def sample(cfg: SampleConfig, progress: bool = True) -> dict:
    """Run `sftadapt sample`: writes `attempts.jsonl` and `summary.json` in `cfg.out`; returns the summary."""

    from sftadapt.engines import make_engine
    from sftadapt.runtime.prologue import Owned, load_problems, open_stage

    out = open_stage(cfg, "sample")
    problems, rejected = load_problems(cfg, out, require_solution=False)
    start = time.perf_counter()
    with Owned() as owned:  # the engine is released however the run ends
        engine = owned.add(make_engine(cfg.model, cfg.engine, dtype=cfg.dtype, batch_size=cfg.batch_size))
        return _sample(cfg, engine, problems, rejected, out, start, progress)


def _sample(cfg: SampleConfig, engine, problems, rejected: int, out: Path, start: float, progress: bool) -> dict:
    import json

    from sftadapt.data.store import Phases, ShardStore, run_sharded
    from sftadapt.verify import Verifier

    # over-long prompts become rejects before they reach the engine
    problems, _ = budget.screen_stage(
        engine,
        problems,
        cfg.max_new_tokens,
        out / "rejects.jsonl",
        budget.solve_checks(engine.tokenizer, cfg.chat),
        max_prompt_tokens=cfg.max_prompt_tokens,
    )
    tmpl_hash = P.template_hash(engine.tokenizer, P.SOLVE, cfg.chat)
    params = Sampling(
        n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
    )
    ids_hash = config_hash({"ids": [p.id for p in problems]})
    store = ShardStore(
        out / "shards",
        config_hash(
            {
                **without_engine_options(config_dict(cfg)),
                "ids": ids_hash,
                "tmpl": tmpl_hash,
                "resolved_dtype": engine.precision,
            },
            exclude=("out", "batch_size", "force", "online", "max_prompt_tokens"),
        ),
        config_dict(cfg),
        force=cfg.force,
    )
    with Verifier() as verifier:
        # generate on this thread; verify a shard in the background while the next one is generated
        def produce(chunk):
            prompt = lambda p: P.solve_prompt(engine.tokenizer, p.problem, cfg.chat)  # noqa: E731
            return chunk, generate_attempts(engine, chunk, params, "sample", prompt)

        def verify(produced):
            chunk, completions = produced
            rows = verify_attempts(verifier, chunk, completions, "sample", tmpl_hash)
            return [a for per_problem in rows for a in per_problem]

        work = Phases(produce, verify)
        shards = run_sharded(
            store,
            problems,
            cfg.shard_size,
            work,
            desc=f"sample {cfg.data}",
            progress=progress,
            unit="problem",
            rejects_file=out / "rejects.jsonl",
        )
    n_rows = store.finalize(out / "attempts.jsonl", expected_shards=shards)
    rows = list(store.rows())
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    summary = {
        "model": cfg.model,
        "data": cfg.data,
        "problems": len(problems),
        "samples": n_rows,
        "accuracy": counts.get("correct", 0) / max(n_rows, 1),
        "verdicts": counts,
        "rejected_rows": rejected,
        "tokens_generated": sum(r["meta"]["n_tokens"] for r in rows),
        "seconds": round(time.perf_counter() - start, 1),
        "prompt_template_hash": tmpl_hash,
        "precision": engine.precision,
        "engine": facts.record(engine, cfg.chat),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _echo(cfg: SampleConfig, summary: dict) -> list[str]:
    import json

    correct = summary["verdicts"].get("correct", 0)
    return [
        json.dumps(summary, indent=2),
        f"accuracy {summary['accuracy']:.3f} ({correct}/{summary['samples']} samples) -> {Path(cfg.out) / 'attempts.jsonl'}",
    ]


STAGE = Stage(
    name="sample",
    config=SampleConfig,
    run=sample,
    outputs=("attempts.jsonl", "summary.json", "rejects.jsonl"),
    record="Attempt",
    echo=_echo,
)
