"""Mind the Gap data rewriting (arXiv 2509.15157): replace expert solutions by responses of the target model.

For each problem, three stages; a problem leaves at the first stage that gives it a verified response:
1. `self`: k samples of the target with the plain solve prompt (k=4, T=1.0, top_p=1.0), each verified against
   the gold answer; keep one by `keep` = most_likely (the correct sample with the highest mean token log-prob
   under the target) | first | all_distinct (every distinct correct text, up to `max_keep`).
2. `guided`: for problems with no correct sample, r tries (r=4, T=0.7 (ours)) with the GUIDED prompt, which
   shows the expert solution (normalised as in 3.) as a teacher's reference. A correct try is still refused if
   it is a near-copy of the reference (character 5-gram Jaccard >= 0.9 (ours)), mentions it ("teacher",
   "reference solution") or talks about the task instead of solving it (ours: `policy.meta_text`, DART's
   `meta_text` gate rule).
   The training row is always (problem -> response): the guidance never enters the training prompt.
3. `expert`: fallback to the expert solution, normalised to end in `\\boxed{answer}` (prompts.ensure_boxed).
A correct response cut by `max_new_tokens` is not kept either (ours, `keep_truncated=False`): training would
teach the end token where the model never stopped.

Every row (`records.Example`) records its `origin`, all attempts with verdicts (and, for refused correct tries,
the reason), `self_pass_rate` = n_correct / k, `behavior_logprobs` (per response token, under the prompt that
produced it: solve prompt for self, guided prompt for guided, the rewrite prompt for rewrite, None for expert) and
`target_logprobs` under the plain solve prompt (every origin, expert included; their mean is the gap metric).
Both come from `engine.score(prompt, response)`, which tokenises the response with
`prompts.response_token_ids` (text tokens + end token), exactly as training does. The behaviour policy is the
untempered target under the generating prompt (docs/methods.md); the T=0.7 guided sampling distribution itself is not
what is recorded.

Baselines (`--method`; docs/methods.md):
- `sdft` (SDFT, Yang et al. 2024; the study's `sdft` step): the target rewrites the expert solution once with
  SDFT's own distillation prompt (prompts.SDFT: a system turn, the problem and the expert solution, and the
  answer opened with "Great! Let's think step by step. ", which the rewrite continues; T=`rewrite_temperature`);
  kept with origin `rewrite` if its answer verifies and SDFT's filter passes it (no "reference answer", "your
  response", ...: SDFT_BANNED), else the expert row.
- `prompted_rewrite`: the same single verified rewrite with DART's MAPPER prompt instead (an untrained mapper
  sampled once; the PR best-of-k arm is the same prompt through DART's synthesis, adapt/mapper.py).
  Ours, for both: a verified rewrite is also refused when it is meta text or an answer-only filler
  (`policy.rewrite_rejection`, DART's `meta_text` / `no_reasoning` gate rules), so the set keeps no row that
  echoes the mapping prompt.
- `select_most_likely` (GRAPE-style): among the expert solution and the target's own correct samples (the same
  stage-1 samples, same seeds), keep the one with the highest mean target log-prob. The row keeps the origin of
  the source it came from (`self` or `expert`, with `meta.method`), because the origin tells training whether
  behaviour log-probs exist (a `self` row's are exact; an expert row has none).

Resumable by construction: each stage runs over fixed chunks of problems and writes one shard per chunk
(`OUT/shards/<stage>/`, store.py); every sample's seed derives from (seed, problem id, stage, index). A killed
run re-run with the same command redoes only the missing shards, and `train.jsonl` is byte-identical to an
uninterrupted run's (same batch size). A different config refuses to mix with old shards unless `--force`.
Every stage is pipelined (store.Phases): a shard is verified in the background while the next one is sampled
(final: scored), and scored and picked after that, on the main thread.

Output in OUT/: `train.jsonl` (Examples), `summary.json` (rows and mean target log-prob per origin, final set vs
the original expert set, time and tokens per stage, why an origin is empty), `rejects.jsonl` (bad input rows).

    sftadapt rewrite --model smollm2-135m --data gsm8k_train --limit 50 --out runs/rewrite/gsm8k
    sftadapt rewrite --model smollm2-135m --data sft.jsonl --out runs/sdft --method sdft
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sftadapt.adapt.policy import (
    KEEP_POLICIES,
    Candidate,
    candidates_to_score,
    choose,
    guided_rejection,
    rejection_kind,
    rewrite_rejection,
)
from sftadapt.config import config_dict, config_hash, decided_options, option
from sftadapt.data import budget
from sftadapt.data import prompts as P
from sftadapt.data.formats import FieldOptions, fields_option
from sftadapt.data.records import Attempt, Example, Problem, to_dict, write_json
from sftadapt.data.sources import max_row_bytes_option
from sftadapt.data.store import Phases, ShardStore, run_sharded, shard_totals
from sftadapt.engines import facts
from sftadapt.engines.base import SAME, Completion, EngineConfig, Sampling, ScoreEngineConfig
from sftadapt.eval.sample import generate_attempts, verify_attempts
from sftadapt.registry import Stage, echo_adapted_set
from sftadapt.runtime import tracking
from sftadapt.runtime.models import model_info
from sftadapt.runtime.precision import normalize
from sftadapt.verify import verifier_version

METHODS = ("mind_the_gap", "sdft", "prompted_rewrite", "select_most_likely")
# the one-rewrite methods, and the prompt each rewrites with
REWRITE_PROMPT = {"sdft": "sdft", "prompted_rewrite": "mapper"}
STAGES = {
    "mind_the_gap": ("self", "guided", "final"),
    "sdft": ("rewrite", "final"),
    "prompted_rewrite": ("rewrite", "final"),
    "select_most_likely": ("self", "final"),
}
ORIGINS = {
    "mind_the_gap": ("self", "guided", "expert"),
    "sdft": ("rewrite", "expert"),
    "prompted_rewrite": ("rewrite", "expert"),
    "select_most_likely": ("self", "expert"),
}


@dataclass
class RewriteConfig:
    model: str = option("smollm2-135m", help="target model: HF id, local folder, smollm2-135m or tiny-random")
    data: str = option("gsm8k_train", help="SFT set: file (JSONL/Parquet), dataset name or hf:owner/name")
    fields: FieldOptions = fields_option()
    max_row_bytes: int | None = max_row_bytes_option()
    out: str = option("runs/rewrite", help="output folder (resumable)")
    method: str = option("mind_the_gap", help=f"one of {METHODS}")
    limit: int | None = option(None, help="first N problems only")
    k: int = option(4, help="stage 1: samples per problem with the plain solve prompt")
    temperature: float = option(1.0, help="stage 1 sampling temperature")
    top_p: float = option(1.0, help="stage 1 nucleus mass")
    guided_tries: int = option(4, help="stage 2: tries per unsolved problem with the guided prompt (r)")
    guided_temperature: float = option(0.7, help="stage 2 sampling temperature (ours)")
    guided_top_p: float = option(1.0, help="stage 2 nucleus mass")
    rewrite_temperature: float = option(0.7, help="sdft, prompted_rewrite: temperature of the one rewrite (ours)")
    keep: str = option(
        "most_likely",
        help=f"which verified response(s) to keep: {KEEP_POLICIES} "
        "(select_most_likely always keeps the single most likely one)",
    )
    keep_truncated: bool = option(
        False,
        help="keep a correct response cut by max_new_tokens (ours: no, training "
        "would teach the end token where the model did not stop)",
    )
    max_keep: int = option(4, help="all_distinct: at most this many rows per problem")
    near_copy_threshold: float = option(0.9, help="stage 2: refuse a try this similar to the expert text (Jaccard)")
    near_copy_ngram: int = option(5, help="character n-gram size of the near-copy check")
    reference_phrases: list[str] = option(
        ["teacher", "reference solution"], help="stage 2: refuse a try that mentions any of these (case-insensitive)"
    )
    max_new_tokens: int = option(512, help="generation budget per sample (the papers use 4096 on GPUs)")
    seed: int = option(0, help="base seed; sample j of problem p in stage s is seeded by (seed, p, s, j)")
    chat: bool = option(True, help="apply the model's chat template to every prompt")
    dtype: str = option(
        "auto", help="sampling: auto (bf16 only where the hardware runs it natively, else float32) | float32 | bfloat16"
    )
    score_dtype: str = option(
        "float32",
        help="scoring (behaviour and target log-probs): float32 keeps them exact, as DR+IS needs; auto | bfloat16 trade that for speed",
    )
    batch_size: int = option(32, help="sequences per generate call (results are identical only at equal sizes)")
    engine: EngineConfig = field(
        default_factory=EngineConfig,
        metadata={
            "help": "the backend that samples (and, by default, scores) the target (engine.backend, engine.options)"
        },
    )
    score_engine: ScoreEngineConfig = field(
        default_factory=ScoreEngineConfig,
        metadata={
            "help": "the backend that scores the target (gap metric, behaviour log-probs): same = `engine`; e.g. "
            "hf beside an openai server that cannot echo prompt log-probs"
        },
    )
    shard_size: int = option(16, help="problems per resumable shard")
    verifier_workers: int = option(2, help="verifier processes")
    verifier_timeout: float = option(5.0, help="seconds per verification before it is a `timeout` verdict")
    data_dir: str | None = option(None, help="shared data folder for dataset names (default: find shared/data)")
    force: bool = option(False, help="set aside shards written with another config instead of refusing")
    max_prompt_tokens: int | None = budget.max_prompt_tokens_option()
    report_to: str = tracking.report_to_option()
    tracking_dir: str | None = tracking.tracking_dir_option()
    online: bool = tracking.online_option()

    def validate(self) -> None:
        tracking.check_report_to(self.report_to)
        if self.method not in METHODS:
            raise ValueError(f"method '{self.method}' is unknown: choose one of {METHODS}")
        if self.keep not in KEEP_POLICIES:
            raise ValueError(f"keep '{self.keep}' is unknown: choose one of {KEEP_POLICIES}")
        for name in (
            "k",
            "guided_tries",
            "max_keep",
            "max_new_tokens",
            "shard_size",
            "near_copy_ngram",
            "batch_size",
            "verifier_workers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("top_p", "guided_top_p"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        normalize(self.dtype)
        normalize(self.score_dtype, field="score_dtype")
        if not 0 < self.near_copy_threshold <= 1:
            raise ValueError(f"near_copy_threshold must be in (0, 1], got {self.near_copy_threshold}")

    def samplings(self) -> dict[str, Sampling]:
        return {
            "self": Sampling(
                n=self.k,
                temperature=self.temperature,
                top_p=self.top_p,
                max_new_tokens=self.max_new_tokens,
                seed=self.seed,
            ),
            "guided": Sampling(
                n=self.guided_tries,
                temperature=self.guided_temperature,
                top_p=self.guided_top_p,
                max_new_tokens=self.max_new_tokens,
                seed=self.seed,
            ),
            "rewrite": Sampling(
                n=1, temperature=self.rewrite_temperature, top_p=1.0, max_new_tokens=self.max_new_tokens, seed=self.seed
            ),
        }


# SDFT's filter on its rewrites (sail-sg/sdft eval/gen_distilled_data.py, `verify`, at commit
# 10a06038c188df0f601d10e5ddab3dc8e19330e5): a rewrite that contains one of these phrases (case-insensitive) or,
# stripped, starts with "Your turn" talks about the task, and SDFT keeps the original response instead.
SDFT_BANNED = ("reference answer", "your response", "my response", "your own response", "now it's your turn")
SDFT_BANNED_START = "Your turn"
# prompt kind -> the text its hash covers, where that is more than its TEMPLATES entry (SDFT: system, user turn
# and the answer's opening words)
_TEXT = {"sdft": P.SDFT_PLAIN}


def sdft_rejection(text: str) -> str | None:
    """SDFT's own reason to refuse a correct rewrite, or None (reported as meta text: it talks about the task)."""
    folded = text.casefold()
    for phrase in SDFT_BANNED:
        if phrase in folded:
            return f"meta_text: '{phrase}' (SDFT's filter)"
    if text.strip().startswith(SDFT_BANNED_START):
        return f"meta_text: starts with '{SDFT_BANNED_START}' (SDFT's filter)"
    return None


# ---------------------------------------------------------------- shared state of one run
class _Run:
    def __init__(self, cfg: RewriteConfig, engine, verifier, problems: Sequence[Problem], scorer=None):
        self.cfg, self.engine, self.verifier = cfg, engine, verifier
        self.scorer = scorer or engine
        self.tok = engine.tokenizer
        self.problems = {p.id: p for p in problems}
        self.sampling = cfg.samplings()
        # SDFT's run id covers the prompts it sends; the other methods' keep the three they always recorded
        names = ("solve", "sdft") if cfg.method == "sdft" else ("solve", "guided", "mapper")
        self.hashes = {name: P.template_hash(self.tok, _TEXT.get(name, P.TEMPLATES[name]), cfg.chat) for name in names}
        self.expert = {p.id: P.ensure_boxed(p.solution or "", p.answer) for p in problems}

    def prompt(self, kind: str, p: Problem) -> str:
        if kind == "solve":
            return P.solve_prompt(self.tok, p.problem, self.cfg.chat)
        if kind == "guided":
            return P.guided_prompt(self.tok, p.problem, self.expert[p.id], self.cfg.chat)
        if kind == "sdft":
            return P.sdft_prompt(self.tok, p.problem, self.expert[p.id], self.cfg.chat)
        return P.mapper_prompt(self.tok, p.problem, self.expert[p.id], self.cfg.chat)

    def score(self, kind: str, pairs: Sequence[tuple[Problem, str]]) -> list[list[float]]:
        if not pairs:
            return []
        scores = self.scorer.score([self.prompt(kind, p) for p, _ in pairs], [text for _, text in pairs])
        return [list(s.logprobs) for s in scores]

    def generate(self, stage: str, kind: str, problems: Sequence[Problem]) -> list[list[Completion]]:
        """The engine half of sampling a stage (eval/sample.py `generate_attempts`)."""
        return generate_attempts(self.engine, problems, self.sampling[stage], stage, lambda p: self.prompt(kind, p))

    def verify(self, stage: str, kind: str, problems: Sequence[Problem], completions) -> list[list[Attempt]]:
        """The engine-free half: verified Attempts (any thread: the Verifier pool uses no signals)."""
        return verify_attempts(self.verifier, problems, completions, stage, self.hashes[kind])


def _attempt_dict(a: Attempt) -> dict[str, Any]:
    # Per-token sampled log-probs of every attempt would dwarf the text (k x 4096 floats); their sum is kept.
    row = to_dict(a)
    row["meta"] = {**row["meta"], "logprob_sum": float(sum(a.token_logprobs or []))}
    row["token_logprobs"] = None
    return row


def _mean(values: Sequence[float]) -> float:
    return sum(values) / max(len(values), 1)


# ---------------------------------------------------------------- stage workers (one chunk of problems each)
def _sampled_phases(run: _Run, stage: str) -> Phases:
    """self | guided | rewrite, one shard of problems, as store.Phases: produce = sample (engine); verify =
    verify and refuse (guided, rewrite; no engine: it runs in the background while the next shard is sampled);
    complete = score what the keep policy needs and pick (engine)."""
    cfg = run.cfg
    kind = {"self": "solve", "guided": "guided", "rewrite": REWRITE_PROMPT.get(cfg.method)}[stage]
    keep = "most_likely" if cfg.method == "select_most_likely" else cfg.keep

    def produce(problems: Sequence[Problem]):
        return problems, run.generate(stage, kind, problems)

    def verify(produced):
        problems, completions = produced
        attempts = run.verify(stage, kind, problems, completions)
        pools: list[list[Candidate]] = []
        for p, atts in zip(problems, attempts):
            pool = []
            for a in atts:
                reason = None
                if stage == "guided":
                    reason, similarity = guided_rejection(
                        a.text,
                        run.expert[p.id],
                        cfg.near_copy_threshold,
                        cfg.reference_phrases,
                        cfg.near_copy_ngram,
                        problem=p.problem,
                    )
                    a.meta["jaccard"] = round(similarity, 4)
                elif stage == "rewrite":  # SDFT's own filter, then meta text or an answer-only filler (DART's gate)
                    sdft = sdft_rejection(a.text) if cfg.method == "sdft" else None
                    reason = sdft or rewrite_rejection(a.text, p.problem, run.expert[p.id], p.answer)
                if a.finish_reason == "length" and not cfg.keep_truncated:
                    reason = "truncated: cut by max_new_tokens before the response ended"
                if a.verdict != "correct":
                    continue
                if reason:
                    a.meta["rejected"] = reason
                else:
                    pool.append(Candidate(a.index, a.text))
            pools.append(candidates_to_score(pool, keep))
        return problems, attempts, pools

    def complete(verified) -> list[dict[str, Any]]:
        problems, attempts, pools = verified
        flat = [(p, c) for p, pool in zip(problems, pools) for c in pool]
        solve_scores = iter(run.score("solve", [(p, c.text) for p, c in flat]))
        rows, kept_all = [], []
        for p, atts, pool in zip(problems, attempts, pools):
            scored = {c.index: next(solve_scores) for c in pool}
            ranked = [Candidate(c.index, c.text, _mean(scored[c.index])) for c in pool]
            kept = choose(ranked, keep, cfg.max_keep) if cfg.method != "select_most_likely" else ranked
            kept_all.extend((p, c) for c in kept)
            rows.append(
                {
                    "problem_id": p.id,
                    "attempts": [_attempt_dict(a) for a in atts],
                    "solve_scores": {str(i): s for i, s in scored.items()},
                    "kept": [c.index for c in kept],
                    "behavior_scores": {},
                }
            )
        if stage != "self":  # the behaviour prompt differs from the solve prompt: score the kept ones under it
            behavior = iter(run.score(kind, [(p, c.text) for p, c in kept_all]))
            for row in rows:
                row["behavior_scores"] = {str(i): next(behavior) for i in row["kept"]}
        return rows

    return Phases(produce, verify, complete)


def _final_phases(run: _Run, earlier: dict[str, dict[str, dict]], provenance: dict[str, Any]) -> Phases:
    """The final stage, one shard of problems, as store.Phases: produce = score the expert solutions under the
    solve prompt (engine); verify = verify them (in the background while the next shard is scored); complete =
    assemble the training rows (no engine)."""

    def produce(problems: Sequence[Problem]):
        return problems, run.score("solve", [(p, run.expert[p.id]) for p in problems])

    def verify(produced):
        problems, expert_scores = produced
        verdicts = run.verifier.verify_many([p.answer for p in problems], [run.expert[p.id] for p in problems])
        return problems, expert_scores, verdicts

    return Phases(produce, verify, lambda verified: _final_rows(run, *verified, earlier, provenance))


def _final_rows(
    run: _Run,
    problems: Sequence[Problem],
    expert_scores: list[list[float]],
    expert_verdicts: list,
    earlier: dict[str, dict[str, dict]],
    provenance: dict[str, Any],
) -> list[dict[str, Any]]:
    """The training rows of `problems`, from their expert scores and verdicts and the earlier stages' rows."""
    cfg = run.cfg
    rows: list[dict[str, Any]] = []
    for p, expert_lp, expert_v in zip(problems, expert_scores, expert_verdicts):
        stage_rows = {stage: earlier[stage].get(p.id) for stage in earlier}
        attempts = [
            a for stage in ("self", "guided", "rewrite") if stage_rows.get(stage) for a in stage_rows[stage]["attempts"]
        ]
        self_row = stage_rows.get("self")
        pass_rate = (sum(a["verdict"] == "correct" for a in self_row["attempts"]) / cfg.k) if self_row else None
        # (stage, attempt index, text, behavior log-probs, target log-probs) of each kept response; the first
        # stage with a kept response wins (self before guided), stage None = the expert fallback
        picks: list[tuple[str | None, int | None, str, list[float] | None, list[float]]] = []
        for stage in ("self", "guided", "rewrite"):
            row = stage_rows.get(stage)
            if row is None or not row["kept"] or picks:
                continue
            texts = {a["index"]: a["text"] for a in row["attempts"]}
            for i in row["kept"]:
                target = row["solve_scores"][str(i)]
                behavior = target if stage == "self" else row["behavior_scores"][str(i)]
                picks.append((stage, i, texts[i], behavior, target))
        if cfg.method == "select_most_likely":
            # the expert wins ties: with no evidence that the target prefers its own text, keep the original
            best = max(picks, key=lambda pick: _mean(pick[4]), default=None)
            picks = [best] if best is not None and _mean(best[4]) > _mean(expert_lp) else []
        if not picks:
            picks = [(None, None, run.expert[p.id], None, expert_lp)]
        for j, (stage, index, text, behavior, target) in enumerate(picks):
            origin = stage or "expert"
            prompt_kind = {"self": "solve", "guided": "guided", "rewrite": REWRITE_PROMPT.get(cfg.method)}.get(origin)
            rows.append(
                to_dict(
                    Example(
                        id=p.id if j == 0 else f"{p.id}#{j}",
                        problem=p.problem,
                        response=text,
                        answer=p.answer,
                        origin=origin,
                        behavior_logprobs=behavior,
                        target_logprobs=target,
                        target_logprob_mean=_mean(target),
                        self_pass_rate=pass_rate,
                        attempts=attempts,
                        provenance={
                            **provenance,
                            "prompt_hash": run.hashes[prompt_kind] if prompt_kind else None,
                            "sampling": to_dict(run.sampling[stage]) if stage else None,
                        },
                        meta={
                            "problem_id": p.id,
                            "method": cfg.method,
                            "kept_stage": stage,
                            "kept_index": index,
                            "expert_target_logprob_mean": _mean(expert_lp),
                            "expert_verdict": expert_v.verdict,
                            "source": p.source,
                        },
                    )
                )
            )
    return rows


# ---------------------------------------------------------------- the sharded stage loop
def _postfix(stage: str) -> Callable[[list[dict]], dict]:
    def counts(rows: list[dict]) -> dict:
        if stage == "final":
            out: dict[str, int] = {}
            for row in rows:
                out[row["origin"]] = out.get(row["origin"], 0) + 1
            return out
        refused = sum(1 for r in rows for a in r["attempts"] if a["meta"].get("rejected"))
        solved = {"solved": sum(bool(r["kept"]) for r in rows)}
        return {**solved, "refused": refused} if stage == "guided" else solved

    return counts


# ---------------------------------------------------------------- the stage


def rewrite(
    cfg: RewriteConfig,
    *,
    engine=None,
    verifier=None,
    problems: Sequence[Problem] | None = None,
    progress: bool = True,
    print_summary: bool = True,
    scorer=None,
) -> dict[str, Any]:
    """Run the stage; writes OUT/train.jsonl, OUT/summary.json (returned) and OUT/rejects.jsonl if any.

    `engine`, `scorer` (the scoring role: default `engine`, or `cfg.score_engine`'s), `verifier` and `problems`
    may be passed in (tests, benchmarks); otherwise they are built from `cfg` and closed at the end."""

    from sftadapt.runtime.outdir import ADAPTED_SET_OUTPUTS
    from sftadapt.runtime.prologue import Owned, load_problems, make_verifier, open_stage

    wall_start = time.perf_counter()
    out = open_stage(cfg, "rewrite", protect=ADAPTED_SET_OUTPUTS)  # + the card: never over a user's README
    problems, rejects = load_problems(cfg, out, require_solution=True, problems=problems, needs="rewriting")
    with Owned() as owned:
        tracker = owned.add(
            tracking.open_tracker(
                cfg.report_to,
                out=out,
                tracking_dir=cfg.tracking_dir,
                config=config_dict(cfg),
                online=cfg.online or None,
            )
        )
        if verifier is None:
            verifier = owned.add(make_verifier(cfg))  # the pool starts while the model loads
        if engine is None:
            from sftadapt.engines import make_engine

            engine = owned.add(
                make_engine(
                    cfg.model, cfg.engine, dtype=cfg.dtype, score_dtype=cfg.score_dtype, batch_size=cfg.batch_size
                )
            )
        if scorer is None and cfg.score_engine.backend != SAME:
            from sftadapt.engines import make_engine

            scorer = owned.add(
                make_engine(
                    cfg.model,
                    EngineConfig(cfg.score_engine.backend, cfg.score_engine.options),
                    dtype=cfg.dtype,
                    score_dtype=cfg.score_dtype,
                    batch_size=cfg.batch_size,
                )
            )
        scorer = scorer or engine
        _same_tokenizer(engine, scorer)
        # over-long prompts/solutions become rejects, the run goes on
        problems, over = budget.screen_stage(
            engine,
            problems,
            cfg.max_new_tokens,
            out / "rejects.jsonl",
            *budget.rewrite_checks(engine.tokenizer, cfg.chat, cfg.method),
            max_prompt_tokens=cfg.max_prompt_tokens,
        )
        rejects += len(over)
        run = _Run(cfg, engine, verifier, problems, scorer)
        model = model_info(cfg.model)
        decided = {
            **decided_options(cfg),
            "model": model,
            "templates": run.hashes,
            "precision": _precision(engine, cfg, scorer),
            "problems": config_hash({"rows": [[p.id, p.problem, p.answer, p.solution] for p in problems]}),
        }
        run_id = config_hash(decided)
        provenance = {
            "method": cfg.method,
            "run_id": run_id,
            "model": model,
            "precision": _precision(engine, cfg, scorer),
            "chat": cfg.chat,
            "keep": cfg.keep,
            "templates": run.hashes,
            "verifier": verifier_version(),
        }
        stages = STAGES[cfg.method]
        stores = {s: ShardStore(out / "shards" / s, run_id, decided, force=cfg.force) for s in stages}
        earlier: dict[str, dict[str, dict]] = {}
        for stage in stages:
            if stage == "final":
                items = problems
                work = _final_phases(run, earlier, provenance)
            else:
                solved = {pid for pid, row in earlier.get("self", {}).items() if row["kept"]}
                items = [p for p in problems if p.id not in solved] if stage == "guided" else problems
                work = _sampled_phases(run, stage)  # one shard verifies while the next is sampled
            store = stores[stage]
            n_shards = run_sharded(
                store,
                items,
                cfg.shard_size,
                work,
                desc=f"rewrite {stage}",
                progress=progress,
                unit="problem",
                engines=(engine, scorer),
                postfix=_postfix(stage),
                rejects_file=out / "rejects.jsonl",
            )
            if stage != "final":
                earlier[stage] = {row["problem_id"]: row for row in stores[stage].rows()}
                solved_now = sum(bool(row["kept"]) for row in earlier[stage].values())
                tracker.log(
                    {
                        f"{stage}/problems": len(earlier[stage]),
                        f"{stage}/solved": solved_now,
                        f"{stage}/solved_share": solved_now / max(len(earlier[stage]), 1),
                    }
                )
        stores["final"].finalize(out / "train.jsonl", expected_shards=n_shards)
        summary = rewrite_summary(cfg, stores, problems, earlier, run_id, model, rejects)
        summary["wall_seconds_this_run"] = round(time.perf_counter() - wall_start, 3)
        summary["precision"] = _precision(engine, cfg, scorer)
        summary["engine"] = facts.record(engine, cfg.chat)
        tracker.summary(tracking.rewrite_metrics(summary))
    write_json(out / "summary.json", summary)
    from sftadapt.data.card import write_set_card

    write_set_card(out, summary, cfg.data)
    if print_summary:
        print(summary_table(summary))
    return summary


def _precision(engine, cfg: RewriteConfig, scorer=None) -> dict[str, str]:
    """The dtypes that really ran (an injected engine may not say: then the config's words)."""
    found = engine.precision or {"generate": cfg.dtype, "score": cfg.score_dtype}
    scored = (scorer or engine).precision or {"score": cfg.score_dtype}
    return {"generate": found["generate"], "score": scored["score"]}


def _same_tokenizer(engine, scorer) -> None:
    """Sampling and scoring engines must tokenise alike: the per-token lists are aligned by token ids."""
    if scorer is engine:
        return

    def signature(tok) -> tuple:
        size = len(tok) if hasattr(tok, "__len__") else None
        return size, getattr(tok, "eos_token_id", None), getattr(tok, "bos_token_id", None)

    if signature(engine.tokenizer) != signature(scorer.tokenizer):
        raise ValueError(
            "score_engine: its tokenizer differs from engine's (vocabulary or special tokens): both roles must "
            "serve the same model"
        )


# ---------------------------------------------------------------- summary
def rewrite_summary(
    cfg: RewriteConfig,
    stores: dict,
    problems: Sequence[Problem],
    earlier: dict[str, dict[str, dict]],
    run_id: str,
    model: dict,
    rejected_rows: int = 0,
) -> dict[str, Any]:
    """Rows and gap metric per origin, final vs expert set, stage counts, time and tokens (from shard stats)."""
    from sftadapt.adapt.policy import explain_empty

    rows = list(stores["final"].rows())
    origins: dict[str, dict[str, Any]] = {}
    for origin in ORIGINS[cfg.method]:
        mine = [r for r in rows if r["origin"] == origin]
        origins[origin] = {
            "rows": len(mine),
            "problems": len({r["meta"]["problem_id"] for r in mine}),
            "target_logprob_mean": _mean([r["target_logprob_mean"] for r in mine]) if mine else None,
        }
    expert_by_problem = {r["meta"]["problem_id"]: r["meta"]["expert_target_logprob_mean"] for r in rows}
    counts = {"problems": len(problems)}
    self_rows, guided_rows = earlier.get("self", {}), earlier.get("guided", {})
    for stage, stage_rows in earlier.items():  # correct responses refused for being cut by max_new_tokens
        counts[f"{stage}_truncated"] = sum(
            rejection_kind(a["meta"].get("rejected")) == "truncated" for r in stage_rows.values() for a in r["attempts"]
        )
    if self_rows:
        counts["self_solved"] = sum(any(a["verdict"] == "correct" for a in r["attempts"]) for r in self_rows.values())
    if cfg.method == "mind_the_gap":
        tries = [a for r in guided_rows.values() for a in r["attempts"]]
        kinds = [rejection_kind(a["meta"].get("rejected")) for a in tries]
        counts.update(
            guided_tried=len(guided_rows),
            guided_correct=sum(a["verdict"] == "correct" for a in tries),
            guided_near_copy=kinds.count("near_copy"),
            guided_mentions_reference=kinds.count("mentions_reference"),
            guided_accepted=sum(bool(r["kept"]) for r in guided_rows.values()),
        )
    if cfg.method in REWRITE_PROMPT:
        counts["rewrite_correct"] = sum(
            r["attempts"][0]["verdict"] == "correct" for r in earlier.get("rewrite", {}).values()
        )
        counts["rewrite_refused"] = sum(  # meta text or answer-only filler (truncated ones: rewrite_truncated)
            rejection_kind(a["meta"].get("rejected")) in ("meta_text", "no_reasoning")
            for r in earlier.get("rewrite", {}).values()
            for a in r["attempts"]
        )
    verdicts: dict[str, int] = {}
    for stage_rows in earlier.values():
        for r in stage_rows.values():
            for a in r["attempts"]:
                key = f"{a['stage']}:{a['verdict']}"
                verdicts[key] = verdicts.get(key, 0) + 1
    stage_stats = {s: shard_totals(store) for s, store in stores.items()}
    final_mean = _mean([r["target_logprob_mean"] for r in rows])
    expert_mean = _mean(list(expert_by_problem.values()))
    return {
        "method": cfg.method,
        "model": model,
        "data": cfg.data,
        "run_id": run_id,
        "keep": cfg.keep,
        "config": {k: v for k, v in config_dict(cfg).items() if k not in ("out", "force")},
        "problems": len(problems),
        "rows": len(rows),
        "rejected_input_rows": rejected_rows,
        "origins": origins,
        "gap": {
            "final_set": final_mean,
            "expert_set": expert_mean,
            "delta": final_mean - expert_mean,
            "note": "mean over rows of the per-row mean token log-prob under the target with the plain "
            "solve prompt; higher = closer to the target",
        },
        "self_pass_rate_mean": _mean(
            [sum(a["verdict"] == "correct" for a in r["attempts"]) / cfg.k for r in self_rows.values()]
        )
        if self_rows
        else None,
        "expert_solutions_verified": len(
            {r["meta"]["problem_id"] for r in rows if r["meta"]["expert_verdict"] == "correct"}
        ),
        "counts": counts,
        "verdicts": verdicts,
        # policy.explain_empty's texts name the one-rewrite methods by their first, prompted_rewrite
        "empty_origins": {
            o: explain_empty(
                o, "prompted_rewrite" if cfg.method in REWRITE_PROMPT else cfg.method, counts, cfg.k, cfg.guided_tries
            )
            for o, v in origins.items()
            if v["rows"] == 0
        },
        "stages": stage_stats,
        "totals": {
            k: round(sum(s[k] for s in stage_stats.values()), 3)
            for k in ("seconds", "engine_seconds", "score_seconds", "generated_tokens", "scored_tokens")
        },
    }


def summary_table(s: dict[str, Any]) -> str:
    """The short table printed at the end of `sftadapt rewrite`."""

    def fmt(x):
        return "–" if x is None else f"{x:.3f}"

    lines = [
        f"rewrite {s['method']} | model {s['model'].get('spec')} | {s['problems']} problems -> {s['rows']} rows"
        f" | run {s['run_id']}",
        "",
        "| rows from | rows | problems | mean target log-prob |",
        "|---|---|---|---|",
    ]
    for origin, o in s["origins"].items():
        lines.append(f"| {origin} | {o['rows']} | {o['problems']} | {fmt(o['target_logprob_mean'])} |")
    lines.append(f"| **final set** | {s['rows']} | {s['problems']} | {fmt(s['gap']['final_set'])} |")
    lines.append(f"| original expert set | {s['problems']} | {s['problems']} | {fmt(s['gap']['expert_set'])} |")
    lines += [
        f"gap change (final - expert): {s['gap']['delta']:+.3f} nats/token",
        "",
        "| stage | problems | seconds | engine s | generated tokens | scored tokens |",
        "|---|---|---|---|---|---|",
    ]
    for stage, t in s["stages"].items():
        lines.append(
            f"| {stage} | {t['problems']} | {t['seconds']:.1f} | {t['engine_seconds']:.1f} "
            f"| {t['generated_tokens']} | {t['scored_tokens']} |"
        )
    lines += [f"- {why}" for why in s["empty_origins"].values()]
    return "\n".join(lines)


STAGE = Stage(
    name="rewrite",
    config=RewriteConfig,
    run=rewrite,
    outputs=("train.jsonl", "summary.json", "compute.json", "rejects.jsonl", "README.md"),
    record="Example",
    echo=echo_adapted_set,
)
