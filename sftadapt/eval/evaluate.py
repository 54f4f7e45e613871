"""Evaluation stage: sample a model on benchmarks under a fixed protocol, verify, and score.

For each benchmark: load its problems (`sources.load_benchmark`), render the protocol's prompt (prompts.py,
chat template on/off), draw n samples per problem with the engine (sample j of problem p is seeded by
`(protocol.seed, p, "eval", j)`, so a rerun or a resumed run reproduces it), verify every sample against the
gold answer (verify.Verifier: extraction rule + math-verify, with a timeout verdict of its own), and write one
`Attempt` per sample. Metrics (metrics.py): avg@n, unbiased pass@k, maj@n with 95% bootstrap intervals over
problems, and counts of correct / wrong / no_answer / timeout / error verdicts.

Output, in `OUT/`:
- `<benchmark>/shards/`: resumable shards (store.py) of a few problems each; a killed eval re-run with the
  same command skips the finished shards and loses or duplicates nothing. A different model, protocol or
  problem list refuses to mix with them (use a new `--out`).
- `<benchmark>/attempts.jsonl`: every Attempt (`meta` holds the benchmark, generated token count, sum of
  token log-probs and the sample's share of its batch's generation/verification seconds).
- `results.json`: protocol (fields + hash), model (spec, folder, weights hash), per benchmark the metrics
  with intervals, verdict counts, truncations, tokens, timings, and per-problem `[n_correct, n, maj]`
  (what `sftadapt report` needs for paired deltas).

    sftadapt eval --model smollm2-135m --benchmarks gsm8k,math500 --protocol quick --limit 50 --out runs/eval/base
    sftadapt eval --model runs/train/dft --benchmarks math500,minerva_math,olympiadbench,aime24,amc23 \
        --protocol paper --out runs/eval/dft

`gold_sanity` scores a benchmark's gold solutions as if they were model outputs (harness check; see
benchmarks/harness_sanity.py).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sftadapt.data.records import Attempt, Problem, read_records, write_json
from sftadapt.data.sources import SourceError, is_registered, load_benchmark
from sftadapt.engines import facts
from sftadapt.eval.metrics import ProblemSamples, maj_correct, summarize_samples
from sftadapt.eval.protocol import Protocol
from sftadapt.eval.sample import attempt_seeds
from sftadapt.runtime.models import model_info

STAGE = "eval"
SHARD_SAMPLES = 16  # samples per stored shard: fixed, so that a resumed run may use another --batch-size


# ---------------------------------------------------------------- one chunk: prompts -> samples -> verdicts
def sample_seeds(protocol: Protocol, problems: Sequence[Problem]) -> list[list[int]]:
    """The seeds of each problem's samples: (protocol.seed, problem id, "eval", j), as every sampling stage."""
    return attempt_seeds(protocol.sampling(), problems, STAGE)


def apply_answer_format(verdict: str, rule: str | None, answer_format: str) -> str:
    """`boxed_strict` turns a verdict reached through any rule but `boxed` into `no_answer`."""
    if answer_format == "boxed_strict" and verdict in ("correct", "wrong") and rule != "boxed":
        return "no_answer"
    return verdict


def run_chunk(
    engine,
    verifier,
    tokenizer,
    protocol: Protocol,
    problems: Sequence[Problem],
    benchmark: str | Sequence[str],
    prompt_hash: str,
) -> list[Attempt]:
    """Sample and verify `protocol.n` responses for each problem; one Attempt per sample, in order.
    `benchmark` names the benchmark of all problems, or of each problem (one call may mix benchmarks).

    The sampling is the loop every stage shares (`sample.sample_attempts`); eval then applies the protocol's
    answer format to each verdict and keeps, instead of the per-token log-probs, their sum in `meta` with the
    benchmark, the token count and the sample's share of the call's generation and verification seconds.
    It is `chunk_phases` run in a row; the stage's loop pipelines the phases over its shard groups."""
    names = [benchmark] * len(problems) if isinstance(benchmark, str) else list(benchmark)
    return chunk_phases(engine, verifier, tokenizer, protocol, prompt_hash)(list(zip(names, problems)))


def chunk_phases(engine, verifier, tokenizer, protocol: Protocol, prompt_hash: str):
    """`run_chunk` as store.Phases over a chunk of (benchmark, problem) pairs: produce samples with the engine,
    verify (no engine: a background thread may run it while the next chunk is sampled) and build the rows."""
    from sftadapt.data.prompts import TEMPLATES, solve_prompt
    from sftadapt.data.store import Phases
    from sftadapt.eval.sample import generate_attempts, verify_attempts

    template = TEMPLATES[protocol.template]

    def produce(part):
        problems = [p for _, p in part]
        timing: dict[str, float] = {}
        prompt = lambda p: solve_prompt(tokenizer, p.problem, chat=protocol.chat, template=template)  # noqa: E731
        completions = generate_attempts(engine, problems, protocol.sampling(), STAGE, prompt, timing)
        return part, completions, timing

    def verify(produced) -> list[Attempt]:
        part, completions, timing = produced
        rows = verify_attempts(verifier, [p for _, p in part], completions, STAGE, prompt_hash, timing)
        share = 1.0 / max(sum(map(len, rows)), 1)
        attempts = []
        for per_problem, (name, _) in zip(rows, part):
            for a in per_problem:
                a.verdict = apply_answer_format(a.verdict, a.rule, protocol.answer_format)
                a.meta = {
                    "benchmark": name,
                    "n_tokens": a.meta["n_tokens"],
                    "logprob_sum": float(sum(a.token_logprobs)),
                    "generate_s": timing["generate_s"] * share,
                    "verify_s": timing["verify_s"] * share,
                }
                a.token_logprobs = None  # n x 4096 floats per problem would dwarf the text; the sum is kept above
                attempts.append(a)
        return attempts

    return Phases(produce, verify)


# ---------------------------------------------------------------- scoring stored attempts
def group_attempts(attempts: Sequence[Attempt]) -> list[ProblemSamples]:
    """Attempts -> one ProblemSamples per problem (first-seen order), samples ordered by index."""
    by_problem: dict[str, list[Attempt]] = {}
    for a in attempts:
        by_problem.setdefault(a.problem_id, []).append(a)
    out = []
    for pid, rows in by_problem.items():
        rows.sort(key=lambda a: a.index)
        if [a.index for a in rows] != list(range(len(rows))):
            raise ValueError(f"problem {pid}: sample indices {[a.index for a in rows]} are not 0..n-1")
        out.append(ProblemSamples(pid, [a.verdict or "error" for a in rows], [a.extracted for a in rows]))
    return out


def benchmark_result(attempts: Sequence[Attempt], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics, counts, tokens, timings and per-problem counts of one benchmark's attempts."""
    samples = group_attempts(attempts)
    result = summarize_samples(samples, n_boot=n_boot, seed=seed)
    tokens = [int(a.meta.get("n_tokens", 0)) for a in attempts]
    result.update(
        {
            "truncated": sum(a.finish_reason == "length" for a in attempts),
            "tokens_generated": sum(tokens),
            "mean_tokens": sum(tokens) / max(len(tokens), 1),
            "generate_s": sum(float(a.meta.get("generate_s", 0.0)) for a in attempts),
            "verify_s": sum(float(a.meta.get("verify_s", 0.0)) for a in attempts),
            "per_problem": {s.problem_id: [s.n_correct, s.n, maj_correct(s)] for s in samples},
        }
    )
    return result


# ---------------------------------------------------------------- the stage
def benchmark_label(spec: str) -> str:
    """The name a benchmark given as data is reported under (and its folder in OUT): the file or folder's stem,
    or the hub id's last part; a registered name is its own label."""
    if is_registered(spec):
        return spec
    base = spec[3:].partition("@")[0].partition(":")[0] if spec.startswith("hf:") else spec.partition("@")[0]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(base.rstrip("/")).name.removesuffix(".gz"))
    for ext in (".jsonl", ".json", ".parquet"):
        label = label.removesuffix(ext)
    return label or "benchmark"


def _named_benchmarks(
    specs: Sequence[str],
    limit: int | None,
    data_dir,
    fields,
    rejects_file: Path,
    max_row_bytes: int | None = None,
    limit_hint: str | None = None,
) -> dict[str, list[Problem] | None]:
    """{label: problems} in the order given: registered names map to None (`_problem_list` loads them); the
    benchmarks given as data (a JSONL/JSON/Parquet file, a save_to_disk folder or an hf: id) are read here with
    the user's field-map options, and their unusable rows go to OUT/rejects.jsonl with file, line and field (the
    same reader and rules as every other command that reads data; rows over `max_row_bytes` are rejects whose
    reason ends with `limit_hint`)."""
    from sftadapt.data.formats import FieldOptions
    from sftadapt.data.sources import load_dataset_spec, unknown_benchmark, write_rejects
    from sftadapt.runtime.paths import path_problem, shown

    if isinstance(fields, dict):
        from sftadapt.config import build_config

        fields = build_config(FieldOptions, fields, "fields")
    if fields is not None and not fields.is_default() and all(is_registered(s) for s in specs):
        raise SourceError(
            f"field-map options given, but every benchmark ({', '.join(specs)}) is a registered one "
            "with its own format: they apply to benchmark files"
        )
    out: dict[str, list[Problem] | None] = {}
    rejects: list[dict[str, Any]] = []
    for spec in specs:
        if is_registered(spec):
            out[spec] = None
            continue
        why = None if spec.startswith("hf:") else path_problem(spec.partition("@")[0])
        if why:  # before exists(): a symlink loop reads as missing there, a name past the limit raises
            raise SourceError(f"{shown(spec)}: {why}")
        if not spec.startswith("hf:") and not Path(spec.partition("@")[0]).exists():
            raise unknown_benchmark(spec)
        label = benchmark_label(spec)
        if label in out or (is_registered(label) and label in specs):
            raise SourceError(
                f"benchmark {spec}: its name '{label}' is taken by another benchmark of this run; rename the file"
            )
        loaded = load_dataset_spec(
            spec, limit=limit, data_dir=data_dir, fields=fields, max_row_bytes=max_row_bytes, limit_hint=limit_hint
        )
        out[label] = loaded.problems
        rejects += loaded.rejects
    if any(v is not None for v in out.values()):
        write_rejects(rejects, rejects_file)
    return out


def _problem_list(
    benchmark: str, problems: Sequence[Problem] | None, limit: int | None, data_dir: str | os.PathLike | None = None
) -> list[Problem]:
    if problems is None:
        problems = load_benchmark(benchmark, limit, data_dir=data_dir)
    problems = list(problems)[:limit] if limit is not None else list(problems)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SourceError(f"benchmark {benchmark}: problem id '{dup}' appears more than once")
    if not problems:
        raise SourceError(f"benchmark {benchmark}: no problems to evaluate")
    return problems


def _batches(indices: list[int], shard_samples: int, batch_size: int) -> list[list[int]]:
    """Pending shard indices grouped so that each group fills about one engine batch.

    Groups are aligned to absolute positions (shard i belongs to group i // per_group), so a resumed run
    sends the engine the same calls as an uninterrupted one: in bf16, greedy text depends on which
    sequences share a batch (measured: 36 of 50 GSM8K outputs changed between batchings)."""
    per_group = max(1, batch_size // max(shard_samples, 1))
    groups: dict[int, list[int]] = {}
    for i in indices:
        groups.setdefault(i // per_group, []).append(i)
    return list(groups.values())


def evaluate(
    cfg: Any,
    *,
    problems: Mapping[str, Sequence[Problem] | None] | None = None,
    engine=None,
    verifier=None,
    shard_problems: int | None = None,
    n_boot: int = 1000,
    progress: bool = True,
    print_summary: bool = False,
) -> dict[str, Any]:
    """Evaluate `cfg.model` on each benchmark under `cfg.resolved_protocol()`; write attempts and OUT/results.json.

    `cfg` is an `EvalConfig` (eval/stage.py) or anything with its fields (the study's eval section subclasses it).
    Its benchmarks are names for `sources.load_benchmark` or data specs (a file, a save_to_disk folder, an hf: id,
    read with the field-map options `cfg.fields` and reported under `benchmark_label`; rows over
    `cfg.max_row_bytes` are rejects whose reason says how to raise the option). `problems`, a {name: problems}
    mapping (tests, scripts), replaces them: `cfg.benchmarks` is then ignored, and a name mapped to None is loaded
    as a registered benchmark. `cfg.limit` keeps the first N problems of each.

    The start is every stage's (runtime/prologue.py): validate `cfg`, honour its `online`, claim `cfg.out` (a
    folder this command did not make is refused unless `cfg.force`). `engine`/`verifier` may be passed in (tests,
    shared engines) and are left open; otherwise they are built from `cfg.engine`, `cfg.dtype`, `cfg.batch_size`
    and `cfg.verify_timeout` and closed at the end, however it ends. `cfg.max_prompt_tokens` caps every prompt
    (default: the model's context less the protocol's max_new_tokens); `cfg.report_to` logs each benchmark's
    metrics to a tracker (runtime/tracking.py). `shard_problems` sets the problems per stored shard (default:
    SHARD_SAMPLES samples' worth) and `n_boot` the bootstrap resamples of the intervals.
    Returns the results dict that is written to results.json."""
    from sftadapt.data.sources import ROW_LIMIT_HINT
    from sftadapt.runtime.prologue import Owned, open_stage

    out_dir = open_stage(cfg, "eval")
    protocol = cfg.resolved_protocol()
    given = (
        dict(problems)
        if problems is not None
        else _named_benchmarks(
            list(cfg.benchmarks),
            cfg.limit,
            cfg.data_dir,
            cfg.fields,
            out_dir / "rejects.jsonl",
            cfg.max_row_bytes,
            ROW_LIMIT_HINT,
        )
    )
    # Every problem list first: a misspelt benchmark fails before minutes of model loading.
    problem_lists = {name: _problem_list(name, given.get(name), cfg.limit, cfg.data_dir) for name in given}
    model = model_info(cfg.model)
    with Owned() as owned:  # what is built here is closed here; what was passed in is the caller's
        if engine is None:
            from sftadapt.engines import make_engine

            engine = owned.add(make_engine(cfg.model, cfg.engine, dtype=cfg.dtype, batch_size=cfg.batch_size))
        if verifier is None:
            from sftadapt.verify import Verifier

            verifier = owned.add(Verifier(timeout=cfg.verify_timeout))
        results = _evaluate_lists(
            cfg, protocol, model, problem_lists, engine, verifier, owned, out_dir, shard_problems, n_boot, progress
        )
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(out_dir / "results.json", results)
    if print_summary:
        print(summary_table(results))
    return results


def _evaluate_lists(
    cfg: Any,
    protocol: Protocol,
    model: dict[str, Any],
    problem_lists: dict[str, list[Problem]],
    engine,
    verifier,
    owned,
    out_dir: Path,
    shard_problems: int | None,
    n_boot: int,
    progress: bool,
) -> dict[str, Any]:
    """`evaluate` once the engine and verifier exist: screen the prompts, sample the pending shards of every
    benchmark, finalize each benchmark's attempts and score them; the results without `finished`."""
    from tqdm.auto import tqdm

    from sftadapt.config import config_hash
    from sftadapt.data.prompts import TEMPLATES, template_hash
    from sftadapt.data.store import ShardStore, run_in_order
    from sftadapt.runtime import tracking

    tokenizer = engine.tokenizer
    prompt_hash = template_hash(tokenizer, TEMPLATES[protocol.template], protocol.chat)
    engine_precision = engine.precision or {"generate": cfg.dtype}
    from sftadapt.data import budget  # over-long problems become rejects (OUT/rejects.jsonl), not a crash

    problem_lists = {
        name: budget.screen_stage(
            engine,
            ps,
            protocol.max_new_tokens,
            out_dir / "rejects.jsonl",
            budget.solve_checks(tokenizer, protocol.chat, TEMPLATES[protocol.template]),
            tokenizer=tokenizer,
            max_prompt_tokens=cfg.max_prompt_tokens,
        )[0]
        for name, ps in problem_lists.items()
    }
    per_shard = shard_problems or max(1, SHARD_SAMPLES // protocol.n)
    results: dict[str, Any] = {
        "protocol": protocol.record(),
        "model": model,
        "prompt_hash": prompt_hash,
        "limit": cfg.limit,
        "precision": engine_precision,
        "engine": facts.record(engine, protocol.chat),
        "benchmarks": {},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    tracker = owned.add(
        tracking.open_tracker(
            cfg.report_to,
            out=out_dir,
            tracking_dir=cfg.tracking_dir,
            online=cfg.online or None,
            config={
                "model": model,
                "protocol": protocol.record(),
                "limit": cfg.limit,
                "benchmarks": list(problem_lists),
            },
        )
    )
    # One store per benchmark; the shards of all benchmarks are laid end to end and grouped into engine
    # calls by absolute position, so benchmarks share calls (decoding a 135M model is memory-bound: a call
    # of 32 prompts costs about what one of 16 does) and a resumed run sends the same calls as an
    # uninterrupted one.
    stores, parts, units = {}, {}, []
    for name, problems in problem_lists.items():
        # What decides this benchmark's samples; a mismatch with existing shards is refused by the store.
        decided = {
            "protocol": protocol.hash,
            "model": model.get("revision") or model["spec"],
            "precision": engine_precision["generate"],
            "prompt_hash": prompt_hash,
            "benchmark": name,
            "problems": config_hash({"ids": [p.id for p in problems]}),
            "shard_problems": per_shard,
        }
        stores[name] = ShardStore(out_dir / name / "shards", config_hash(decided), decided, force=cfg.force)
        parts[name] = [problems[i : i + per_shard] for i in range(0, len(problems), per_shard)]
        units += [(name, i) for i in range(len(parts[name]))]
    todo = [g for g, (name, i) in enumerate(units) if not stores[name].has(i)]
    from sftadapt.engines import rejects as engine_rejects

    for name in problem_lists:  # engine rejects of shards an earlier (killed) run finished stay listed
        engine_rejects.restore(
            stores[name].root,
            [i for i in range(len(parts[name])) if stores[name].has(i)],
            out_dir / "rejects.jsonl",
        )
    total = sum(len(ps) for ps in problem_lists.values()) * protocol.n
    done = total - sum(len(parts[units[g][0]][units[g][1]]) for g in todo) * protocol.n
    counts = {"correct": 0, "no_answer": 0}
    with tqdm(
        total=total,
        initial=done,
        desc="eval " + ",".join(problem_lists),
        unit="sample",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:

        def finish(group: list[int], attempts: list[Attempt], refused: list, spent: dict) -> None:
            for g in group:
                name, i = units[g]
                ids = {p.id for p in parts[name][i]}
                engine_rejects.record(  # before its shard, as run_sharded does: a kill between keeps both or neither
                    stores[name].root,
                    i,
                    [
                        engine_rejects.reject_row(p, why, benchmark=name)
                        for (bench, p), why in refused
                        if bench == name and p.id in ids
                    ],
                    out_dir / "rejects.jsonl",
                )
                stores[name].write(i, [a for a in attempts if a.meta["benchmark"] == name and a.problem_id in ids])
            for a in attempts:
                if a.verdict in counts:
                    counts[a.verdict] += 1
            bar.update(len(attempts))
            bar.set_postfix(counts, refresh=False)

        # Several small shards share one generate call (full engine batches); each is stored on its own, so
        # what a kill can lose is at most one call's work (two while a call's verification overlaps the next
        # call's sampling: store.run_in_order). A problem the backend refuses (a server's 4xx) becomes a
        # reject; the others are kept.
        # a replicated engine (backend ray) runs one batch per replica at once: calls of that many batches
        groups = _batches(todo, per_shard * protocol.n, cfg.batch_size * int(engine.stats.get("replicas", 1)))
        jobs = [(group, [(units[g][0], p) for g in group for p in parts[units[g][0]][units[g][1]]]) for group in groups]
        run_in_order(jobs, chunk_phases(engine, verifier, tokenizer, protocol, prompt_hash), finish, keep_going=True)
    for name in problem_lists:
        attempts_path = out_dir / name / "attempts.jsonl"
        stores[name].finalize(attempts_path, expected_shards=len(parts[name]))
        attempts = read_records(attempts_path, Attempt)
        results["benchmarks"][name] = benchmark_result(attempts, n_boot=n_boot, seed=protocol.seed)
    tracker.summary(tracking.eval_metrics(results))
    return results


def summary_table(results: dict[str, Any]) -> str:
    """The short markdown table printed at the end of `sftadapt eval`."""
    proto = results["protocol"]
    n = proto["n"]
    lines = [
        f"model {results['model'].get('spec')} | protocol {proto['name']} ({proto['hash']}): n={n}, "
        f"T={proto['temperature']}, top_p={proto['top_p']}, max_new_tokens={proto['max_new_tokens']}",
        f"| benchmark | problems | avg@{n} [95% CI] | pass@{n} | maj@{n} | no_answer | timeout | error "
        "| truncated | tokens/sample | gen s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["benchmarks"].items():
        avg, pas, maj = r[f"avg@{n}"], r.get(f"pass@{n}", {}), r[f"maj@{n}"]
        c = r["counts"]
        lines.append(
            f"| {name} | {r['n_problems']} | {100 * avg['value']:.1f} [{100 * avg['lo']:.1f}, {100 * avg['hi']:.1f}]"
            f" | {100 * pas.get('value', float('nan')):.1f} | {100 * maj['value']:.1f} | {c['no_answer']} "
            f"| {c['timeout']} | {c['error']} | {r['truncated']} | {r['mean_tokens']:.0f} | {r['generate_s']:.0f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- harness sanity check
def gold_sanity(
    benchmark: str,
    limit: int | None = None,
    verifier=None,
    problems: Sequence[Problem] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score the gold solutions (`Problem.solution`) of a benchmark as if a model had written them.

    A correct harness gets (almost) all of them right; each failure is a verifier bug or a data issue."""
    problems = [p for p in _problem_list(benchmark, problems, limit, data_dir) if p.solution]
    own = verifier is None
    if own:
        from sftadapt.verify import Verifier

        verifier = Verifier()
    try:
        verdicts = verifier.verify_many([p.answer for p in problems], [p.solution for p in problems])
    finally:
        if own and hasattr(verifier, "close"):
            verifier.close()
    counts: dict[str, int] = {}
    failures = []
    for p, v in zip(problems, verdicts):
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
        if v.verdict != "correct":
            failures.append(
                {"id": p.id, "gold": p.answer, "extracted": v.extracted, "rule": v.rule, "verdict": v.verdict}
            )
    n = len(problems)
    return {
        "benchmark": benchmark,
        "n": n,
        "correct": counts.get("correct", 0),
        "rate": counts.get("correct", 0) / n if n else float("nan"),
        "counts": counts,
        "failures": failures,
    }
