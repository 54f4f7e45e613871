"""DART (arXiv 2605.26924, reconstructed in docs/methods.md): train a mapper with RL to rewrite expert solutions into
text the target model finds likely, then synthesise the SFT set with it.

1. Mapper RL (`train_mapper`, `sftadapt map train`). The mapper — any causal LM, by default a copy of the target —
   reads the MAPPER prompt (problem + expert solution y, "rewrite it as your own reasoning") and writes ŷ. Reward
   (sftadapt/adapt/reward.py): r_align(ŷ) = mean token log-prob of ŷ under the FROZEN target given the plain solve prompt
   (scored through `Engine.score`; the `centered` variant adds the target's entropy), or r_min = −10 when the
   anti-cheating gate rejects ŷ (wrong/missing answer, length ratio outside [0.3, 2], < 8 tokens, looping 4-grams,
   near-copy of y, mentions of the reference, meta text that echoes the mapping prompt or talks of rewriting,
   answer-only filler; with `reward.judge` set, also a rewrite a judge model does not call VALID, the reasoning
   judge of Patch: reward.py). Optimised with GRPO on TRL's `GRPOTrainer` (group 8, T=1.0, lr 1e-6 full / 1e-5
   LoRA, KL 0 by default), on CPU or with TRL's vLLM options on GPUs (sftadapt/rl/grpo.py).
   GRPO normalises rewards within a prompt's group, so per-prompt offsets (e.g. r_align(y) as a baseline) cancel:
   only how rewrites of one problem compare matters. Per step, `rl_log.jsonl` records the gate pass rate, mean
   r_align of passing rollouts, each failure reason's rate, the mean length ratio, and TRL's own metrics.
2. Synthesis (`synthesize`, `sftadapt map synthesize`). K rewrites per example (K=4, T=0.7); the gate-passing one
   with the highest r_align is kept (origin `mapper`), else the expert solution normalised to end in
   `\\boxed{answer}` (origin `expert`). The gate is the same `AlignmentReward.evaluate` as in RL (given the problem
   and the gold answer, which the meta-text and reasoning rules need), so every set made here — DART, the prompted
   rewrite (`--mapper untrained`) and Patch (`reward.kind: patch`) — keeps only rewrites that pass it. Every row
   records all attempts with their verdicts and gate reasons, `target_logprobs` under the plain solve prompt (their
   mean `target_logprob_mean` is the gap metric), the expert's own gap metric (`meta.expert_target_logprob_mean`)
   and provenance (mapper and target revisions, sampling, prompt hashes, reward config, run id).
   `behavior_logprobs` is None for every row: the mapper's policy (under the mapper prompt) is not a policy of the
   target's on the solve prompt, so there is no behaviour probability to correct towards; the `is` loss treats such
   rows like expert rows (log π_β = 0, i.e. DFT weights).
   `--mapper untrained` uses the target itself as the mapper: the prompted-rewrite baseline (SDFT) through exactly
   the same path (meta.method = prompted_rewrite).

Synthesis is resumable like the rewrite stage: fixed chunks of problems, one shard each (store.py), seeds from
(seed, problem id, "mapper", index); a killed run re-run with the same command redoes only missing shards and
writes the same `train.jsonl`; another config (or a retrained mapper: its weights are hashed) refuses to mix
unless `--force`. Compute: `compute.json` in each output folder (RL: optimiser steps, rollouts, tokens generated,
tokens scored by the target, seconds; synthesis: tokens generated and scored, seconds), the numbers the efficiency
comparison with direct RL (sftadapt/rl/direct_rl.py) uses.

    python -m sftadapt.data.synthetic --n 64 --seed 0 --out runs/data/syn64.jsonl
    sftadapt map train --target smollm2-135m --data runs/data/syn64.jsonl --out runs/map/mapper --steps 30 --lora
    sftadapt map synthesize --mapper runs/map/mapper --target smollm2-135m --data runs/data/syn64.jsonl --out runs/map/dart
    sftadapt map synthesize --mapper untrained --target smollm2-135m --data runs/data/syn64.jsonl --out runs/map/sdft
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sftadapt.adapt.judge import JUDGE_REASONS, EngineJudge
from sftadapt.adapt.reward import (
    GATE_REASONS,
    AlignmentReward,
    RewardConfig,
    reason_names,
    reward_record,
)
from sftadapt.config import config_dict, config_hash, decided_options, option
from sftadapt.data import budget
from sftadapt.data import prompts as P
from sftadapt.data.formats import FieldOptions, fields_option
from sftadapt.data.records import Attempt, Example, Problem, to_dict, write_json
from sftadapt.data.store import Phases, ShardStore, run_sharded, shard_totals
from sftadapt.engines import facts
from sftadapt.engines.base import EngineConfig, Sampling, derive_seed
from sftadapt.registry import Stage, echo_adapted_set
from sftadapt.rl.grpo import GRPOOptions, write_compute
from sftadapt.runtime import tracking
from sftadapt.runtime.models import model_info
from sftadapt.runtime.precision import normalize, scoring_dtype
from sftadapt.runtime.trainer_options import LauncherConfig, launcher_option
from sftadapt.verify import verifier_version

UNTRAINED = "untrained"
RL_LOG_KEYS = (
    "gate_pass_rate",
    "r_align_pass_mean",
    "length_ratio_mean",
    "reward_mean",
    "r_dist_pass_mean",
    "r_div_pass_mean",
    *[f"fail_{r}" for r in GATE_REASONS],
)


@dataclass
class MapperTrainConfig:
    target: str = option("smollm2-135m", help="the frozen target model whose likelihood is the reward")
    mapper: str | None = option(None, help="the policy to train (model spec); default: a copy of the target")
    data: str = option("gsm8k_train", help="SFT set with expert solutions: file, dataset name or hf:owner/name")
    fields: FieldOptions = fields_option()
    out: str = option("runs/map-train", help="output folder: the trained mapper, rl_log.jsonl, compute.json")
    limit: int | None = option(None, help="first N problems only")
    chat: bool = option(True, help="apply chat templates (mapper prompt and the target's solve prompt)")
    dtype: str = option(
        "auto", help="target scoring dtype (r_align): auto (= float32, on every machine) | float32 | bfloat16"
    )
    engine: EngineConfig = field(
        default_factory=EngineConfig,
        metadata={"help": "the backend that scores rewrites under the frozen target (the reward)"},
    )
    verifier_workers: int = option(2, help="verifier processes")
    verifier_timeout: float = option(5.0, help="seconds per verification before it is a `timeout` verdict")
    data_dir: str | None = option(None, help="shared data folder for dataset names (default: find shared/data)")
    grpo: GRPOOptions = field(default_factory=GRPOOptions, metadata={"help": "GRPO trainer options"})
    reward: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "reward and gate options"})
    max_prompt_tokens: int | None = budget.max_prompt_tokens_option()
    force: bool = option(
        False,
        help="set aside checkpoints written with other options instead of refusing them, "
        "and write into a folder another command made",
    )
    report_to: str = tracking.report_to_option()
    tracking_dir: str | None = tracking.tracking_dir_option()
    online: bool = tracking.online_option()
    launcher: LauncherConfig = launcher_option()

    def validate(self) -> None:
        tracking.check_report_to(self.report_to)
        self.grpo.validate()
        self.reward.validate()
        self.launcher.validate()
        normalize(self.dtype)


@dataclass
class SynthConfig:
    mapper: str = option(
        UNTRAINED,
        help="trained mapper folder or model spec; 'untrained' = the target itself (the prompted-rewrite baseline)",
    )
    target: str = option("smollm2-135m", help="the target model: scores rewrites, and is the untrained mapper")
    data: str = option("gsm8k_train", help="SFT set with expert solutions: file, dataset name or hf:owner/name")
    fields: FieldOptions = fields_option()
    out: str = option("runs/map", help="output folder (resumable): train.jsonl, summary.json, compute.json")
    limit: int | None = option(None, help="first N problems only")
    k: int = option(4, help="rewrites per example")
    temperature: float = option(0.7, help="rewrite sampling temperature")
    top_p: float = option(1.0, help="rewrite nucleus mass")
    max_new_tokens: int = option(512, help="generation budget per rewrite")
    cap_to_length_ratio: bool = option(
        True,
        help="stop generating past max_length_ratio × |expert| tokens (+8), "
        "which the gate rejects anyway (only when mapper and target share "
        "a tokenizer)",
    )
    seed: int = option(0, help="base seed; rewrite j of problem p is seeded by (seed, p, 'mapper', j)")
    chat: bool = option(True, help="apply chat templates (mapper prompt and the target's solve prompt)")
    dtype: str = option(
        "auto",
        help="target dtype: scoring (r_align) and the untrained mapper's sampling: auto (= float32, on every "
        "machine) | float32 | bfloat16",
    )
    mapper_dtype: str | None = option(
        None,
        help="trained mapper dtype (default: the target's, so that a trained and an untrained mapper sample in "
        "one precision); under auto a LoRA-trained mapper loads in float32 so its update is not rounded away",
    )
    batch_size: int = option(32, help="sequences per generate call")
    engine: EngineConfig = field(
        default_factory=EngineConfig, metadata={"help": "the backend that scores rewrites under the target"}
    )
    mapper_engine: EngineConfig = field(
        default_factory=EngineConfig, metadata={"help": "the backend that generates rewrites with the mapper"}
    )
    shard_size: int = option(16, help="problems per resumable shard")
    verifier_workers: int = option(2, help="verifier processes")
    verifier_timeout: float = option(5.0, help="seconds per verification before it is a `timeout` verdict")
    data_dir: str | None = option(None, help="shared data folder for dataset names (default: find shared/data)")
    force: bool = option(False, help="set aside shards written with another config instead of refusing")
    reward: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "reward and gate options"})
    max_prompt_tokens: int | None = budget.max_prompt_tokens_option()
    report_to: str = tracking.report_to_option()
    tracking_dir: str | None = tracking.tracking_dir_option()
    online: bool = tracking.online_option()

    def validate(self) -> None:
        tracking.check_report_to(self.report_to)
        self.reward.validate()
        for name in ("k", "max_new_tokens", "batch_size", "shard_size", "verifier_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1 or self.temperature < 0:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        normalize(self.dtype)
        if self.mapper_dtype is not None:
            normalize(self.mapper_dtype, field="mapper_dtype")


def synth_dtypes(cfg: SynthConfig) -> tuple[str, str]:
    """(target, trained mapper) dtypes asked of the engines. The target scores in `dtype`, float32 under auto
    (precision.scoring_dtype), and as the untrained mapper samples in it too (one engine, one precision); a
    trained mapper samples in `mapper_dtype`, by default the target's dtype, so the two mappers of a study sample
    alike."""
    target = scoring_dtype(cfg.dtype)
    return target, cfg.mapper_dtype or target


def _precisions(engine, mapper_engine, cfg: SynthConfig) -> dict[str, Any]:
    """The dtypes that really ran for the target and the mapper (an injected engine may not say: then the dtypes
    asked of it)."""
    target_dtype, mapper_dtype = synth_dtypes(cfg)
    target = engine.precision or {"generate": target_dtype, "score": target_dtype}
    mapper = mapper_engine.precision or {"generate": target_dtype if mapper_engine is engine else mapper_dtype}
    return {"target": target["score"], "mapper": mapper["generate"]}


# ---------------------------------------------------------------- shared pieces
def make_judge(cfg: RewardConfig, owned, chat: bool = True, engine=None) -> EngineJudge | None:
    """The reasoning judge of `cfg.judge` (None while its model is unset): on `engine` when given (tests), else on
    an engine built here and added to the stage's `owned`, so it is closed with the stage."""
    if not cfg.judge.on:
        return None
    if engine is None:
        from sftadapt.engines import make_engine

        engine = owned.add(
            make_engine(cfg.judge.model, cfg.judge.engine, dtype=cfg.judge.dtype, batch_size=cfg.judge.batch_size)
        )
    return EngineJudge(engine, cfg.judge.max_new_tokens, chat)


def make_reward(engine, verifier, cfg: RewardConfig, chat: bool = True, judge=None) -> AlignmentReward:
    """The alignment reward wired to a target engine (`Engine.score`), a `Verifier` and, when `cfg.judge` sets
    one, the reasoning judge (`make_judge`)."""
    tok = engine.tokenizer
    qa_prompts: dict[str, str] = {}

    def qa_prompt(problem: str) -> str:
        if problem not in qa_prompts:
            qa_prompts[problem] = P.solve_prompt(tok, problem, chat)
        return qa_prompts[problem]

    return AlignmentReward(
        score=lambda prompts, responses, entropy, **kw: engine.score(prompts, responses, entropy=entropy, **kw),
        verify=verifier.verify_many,
        tokenize=lambda text: tok(text, add_special_tokens=False)["input_ids"],
        qa_prompt=qa_prompt,
        cfg=cfg,
        judge=judge,
    )


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------- 1. mapper RL
def train_mapper(
    cfg: MapperTrainConfig, *, engine=None, verifier=None, judge_engine=None, progress: bool = True
) -> dict[str, Any]:
    """GRPO on the mapper with the alignment reward; saves the mapper (LoRA merged) in `cfg.out`. `judge_engine`
    runs `reward.judge` when given (tests); otherwise it is built from the config when set."""
    from sftadapt.rl.grpo import run_grpo
    from sftadapt.runtime.models import load_tokenizer
    from sftadapt.runtime.outdir import STAGE_OUTPUTS, TRAIN_OUTPUTS
    from sftadapt.runtime.prologue import Owned, load_problems, make_verifier, open_stage

    out = open_stage(cfg, "map train", protect=TRAIN_OUTPUTS + STAGE_OUTPUTS)
    problems, rejects = load_problems(cfg, out, require_solution=True, needs="mapper RL")
    mapper_spec = cfg.mapper or cfg.target
    with Owned() as owned:
        if verifier is None:
            verifier = owned.add(make_verifier(cfg))
        if engine is None:
            from sftadapt.engines import make_engine

            engine = owned.add(make_engine(cfg.target, cfg.engine, dtype=scoring_dtype(cfg.dtype)))
        mapper_tok = load_tokenizer(mapper_spec)
        # over-long prompts/solutions become rejects, the run goes on
        problems, over = budget.screen_stage(
            None,
            problems,
            cfg.grpo.max_completion_length,
            out / "rejects.jsonl",
            *budget.rewrite_checks(mapper_tok, cfg.chat, "prompted_rewrite"),
            tokenizer=mapper_tok,
            model_spec=mapper_spec,
            max_prompt_tokens=cfg.max_prompt_tokens,
        )
        rejects += len(over)
        rows = []
        for p in problems:
            expert = P.ensure_boxed(p.solution or "", p.answer)
            rows.append(
                {
                    "prompt": P.mapper_prompt(mapper_tok, p.problem, expert, cfg.chat),
                    "problem": p.problem,
                    "answer": p.answer,
                    "solution": expert,
                    "problem_id": p.id,
                }
            )
        judge = make_judge(cfg.reward, owned, cfg.chat, judge_engine)
        reward = make_reward(engine, verifier, cfg.reward, cfg.chat, judge)
        summary = run_grpo(
            mapper_spec,
            rows,
            reward,
            cfg.grpo,
            out,
            stage="mapper_rl",
            log_keys=RL_LOG_KEYS + (tuple(f"fail_{r}" for r in JUDGE_REASONS) if judge else ()),
            progress=progress,
            force=cfg.force,
            tracker={"report_to": cfg.report_to, "tracking_dir": cfg.tracking_dir, "online": cfg.online or None},
            extra_compute={"target": cfg.target, "problems": len(problems)},
            config={
                "target": model_info(cfg.target),
                "mapper": model_info(mapper_spec),
                "data": cfg.data,
                "reward": reward_record(cfg.reward),
                "chat": cfg.chat,
                "target_precision": engine.precision or {"score": scoring_dtype(cfg.dtype)},
                "mapper_template_hash": P.template_hash(mapper_tok, P.MAPPER, cfg.chat),
                **(
                    {"judge_template_hash": P.template_hash(judge.engine.tokenizer, P.JUDGE, cfg.chat)} if judge else {}
                ),
            },
        )
    summary["rejected_input_rows"] = rejects
    # what ran: the target's scoring (r_align) and the mapper's training (compute, weights)
    summary["precision"] = {
        "target_score": (engine.precision or {}).get("score") or scoring_dtype(cfg.dtype),
        "mapper_train": dict(zip(("compute", "weights"), cfg.grpo.precision())),
    }
    return summary


# ---------------------------------------------------------------- 2. synthesis
class _Synth:
    """One synthesis run: engines, verifier, reward, templates, and the work on one chunk of problems."""

    def __init__(self, cfg: SynthConfig, target, mapper, verifier, provenance: dict[str, Any], judge=None):
        self.cfg, self.target, self.mapper, self.verifier = cfg, target, mapper, verifier
        self.provenance = provenance
        self.reward = make_reward(target, verifier, cfg.reward, cfg.chat, judge)
        self.sampling = Sampling(
            n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
        )
        self.mapper_hash = P.template_hash(mapper.tokenizer, P.MAPPER, cfg.chat)
        self.same_tokenizer = mapper is target or mapper.tokenizer.get_vocab() == target.tokenizer.get_vocab()
        self.method = "prompted_rewrite" if mapper is target else "dart"

    def budget(self, experts: Sequence[str]) -> int:
        """Tokens worth generating: past max_length_ratio × |y| the gate rejects whatever follows (8 tokens of
        slack, because decoding and re-tokenising a text does not always give back the same count)."""
        if not (self.cfg.cap_to_length_ratio and self.same_tokenizer):
            return self.cfg.max_new_tokens
        longest = max(len(self.reward.tokenize(y)) for y in experts)
        return min(self.cfg.max_new_tokens, int(self.cfg.reward.max_length_ratio * longest) + 8)

    def phases(self) -> Phases:
        """The shard's work for `run_sharded`: the mapper samples (engine), the rewrites and the expert solutions
        are verified (no engine: overlaps the next shard's sampling), then the target scores and rows are made."""
        return Phases(self.produce, self.verify, self.complete)

    def produce(self, problems: Sequence[Problem]) -> dict[str, Any]:
        cfg, k = self.cfg, self.cfg.k
        experts = [P.ensure_boxed(p.solution or "", p.answer) for p in problems]
        prompts = [P.mapper_prompt(self.mapper.tokenizer, p.problem, y, cfg.chat) for p, y in zip(problems, experts)]
        seeds = [[derive_seed(cfg.seed, p.id, "mapper", j) for j in range(k)] for p in problems]
        sampling = Sampling(**{**to_dict(self.sampling), "max_new_tokens": self.budget(experts)})
        completions = self.mapper.generate(prompts, sampling, seeds=seeds)
        return {"problems": problems, "experts": experts, "sampling": sampling, "completions": completions}

    def verify(self, got: dict[str, Any]) -> dict[str, Any]:
        problems, completions = got["problems"], got["completions"]
        flat = [(i, c) for i, outs in enumerate(completions) for c in outs]
        verdicts = self.verifier.verify_many([problems[i].answer for i, _ in flat], [c.text for _, c in flat])
        expert_verdicts = self.verifier.verify_many([p.answer for p in problems], got["experts"])
        return {**got, "flat": flat, "verdicts": verdicts, "expert_verdicts": expert_verdicts}

    def complete(self, got: dict[str, Any]) -> list[dict[str, Any]]:
        k, problems, experts, sampling = self.cfg.k, got["problems"], got["experts"], got["sampling"]
        completions, flat, verdicts = got["completions"], got["flat"], got["verdicts"]
        scores = self.reward.evaluate(
            [problems[i].problem for i, _ in flat],
            [problems[i].answer for i, _ in flat],
            [experts[i] for i, _ in flat],
            [c.text for _, c in flat],
            groups=[i for i, _ in flat],
            verdicts=verdicts,
            truncated=[c.finish_reason == "length" for _, c in flat],
        )
        expert_scores = self.target.score([self.reward.qa_prompt(p.problem) for p in problems], experts)
        expert_verdicts = got["expert_verdicts"]
        rows = []
        for i, p in enumerate(problems):
            mine = [(j, completions[i][j], verdicts[i * k + j], scores[i * k + j]) for j in range(k)]
            attempts = [_attempt(p, j, c, v, s, self.mapper_hash) for j, c, v, s in mine]
            passing = [(j, c, s) for j, c, _, s in mine if s.passed]
            # highest r_align wins; ties go to the earlier rewrite
            best = max(passing, key=lambda t: (t[2].r_align, -t[0]), default=None)
            expert_lp = list(expert_scores[i].logprobs)
            if best is not None:
                j, comp, score = best
                origin, response, target_lp = "mapper", comp.text, score.target_logprobs
            else:
                j, origin, response, target_lp = None, "expert", experts[i], expert_lp
            rows.append(
                to_dict(
                    Example(
                        id=p.id,
                        problem=p.problem,
                        response=response,
                        answer=p.answer,
                        origin=origin,
                        behavior_logprobs=None,
                        target_logprobs=target_lp,
                        target_logprob_mean=_mean(target_lp),
                        attempts=attempts,
                        provenance={
                            **self.provenance,
                            "prompt_hash": self.mapper_hash if best else None,
                            "sampling": to_dict(sampling) if best else None,
                        },
                        meta={
                            "problem_id": p.id,
                            "method": self.method,
                            "kept_index": j,
                            "r_align": best[2].r_align if best else None,
                            "mapper_pass_rate": len(passing) / k,
                            "expert_target_logprob_mean": _mean(expert_lp),
                            "expert_verdict": expert_verdicts[i].verdict,
                            "source": p.source,
                        },
                    )
                )
            )
        return rows


def _attempt(p: Problem, index: int, completion, verdict, score, prompt_hash: str) -> dict[str, Any]:
    # The mapper's own per-token sampling log-probs would dwarf the text; their sum is kept.
    row = to_dict(
        Attempt(
            problem_id=p.id,
            stage="mapper",
            index=index,
            prompt_hash=prompt_hash,
            text=completion.text,
            finish_reason=completion.finish_reason,
            seed=completion.seed,
            verdict=verdict.verdict,
            extracted=verdict.extracted,
            rule=verdict.rule,
            meta={
                **score.record(),
                "logprob_sum": float(sum(completion.logprobs)),
                "n_generated": len(completion.token_ids),
            },
        )
    )
    row["token_logprobs"] = None
    return row


def _mapped_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    mapped = sum(r["origin"] == "mapper" for r in rows)
    return {"mapped": mapped, "fallback": len(rows) - mapped}


def synthesize(
    cfg: SynthConfig,
    *,
    engine=None,
    mapper_engine=None,
    verifier=None,
    judge_engine=None,
    problems: Sequence[Problem] | None = None,
    progress: bool = True,
    print_summary: bool = True,
) -> dict[str, Any]:
    """Run synthesis; writes OUT/train.jsonl, summary.json (returned), compute.json, rejects.jsonl if any.

    `engine` (target), `mapper_engine`, `verifier`, `judge_engine` (`reward.judge`, when set) and `problems` may
    be passed in (tests); otherwise they are built from `cfg` and closed at the end. The untrained mapper is the
    target engine itself."""

    from sftadapt.runtime.outdir import ADAPTED_SET_OUTPUTS
    from sftadapt.runtime.prologue import Owned, load_problems, make_verifier, open_stage

    wall_start = time.perf_counter()
    out = open_stage(cfg, "map synthesize", protect=ADAPTED_SET_OUTPUTS)  # + the card: never over a user's README
    problems, rejects = load_problems(cfg, out, require_solution=True, problems=problems, needs="mapping")
    untrained = cfg.mapper == UNTRAINED
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
            verifier = owned.add(make_verifier(cfg))
        from sftadapt.engines import make_engine

        if engine is None:
            engine = owned.add(
                make_engine(cfg.target, cfg.engine, dtype=synth_dtypes(cfg)[0], batch_size=cfg.batch_size)
            )
        if untrained:
            mapper_engine = engine
        elif mapper_engine is None:
            mapper_engine = owned.add(
                make_engine(cfg.mapper, cfg.mapper_engine, dtype=synth_dtypes(cfg)[1], batch_size=cfg.batch_size)
            )
        # over-long prompts/solutions become rejects, the run goes on
        problems, over = budget.screen_stage(
            mapper_engine,
            problems,
            cfg.max_new_tokens,
            out / "rejects.jsonl",
            *budget.rewrite_checks(mapper_engine.tokenizer, cfg.chat, "prompted_rewrite"),
            max_prompt_tokens=cfg.max_prompt_tokens,
        )
        rejects += len(over)
        target_info = model_info(cfg.target)
        mapper_info = {"spec": UNTRAINED, "is_target": True} if untrained else model_info(cfg.mapper)
        templates = {
            "mapper": P.template_hash(mapper_engine.tokenizer, P.MAPPER, cfg.chat),
            "solve": P.template_hash(engine.tokenizer, P.SOLVE, cfg.chat),
        }
        judge = make_judge(cfg.reward, owned, cfg.chat, judge_engine)
        if judge is not None:  # an edit of the JUDGE prompt is a new run (no key without a judge: ids as before)
            templates["judge"] = P.template_hash(judge.engine.tokenizer, P.JUDGE, cfg.chat)
        decided = {
            **decided_options(cfg),
            "mapper": mapper_info,
            "target": target_info,
            "templates": templates,
            "precision": _precisions(engine, mapper_engine, cfg),
            "problems": config_hash({"rows": [[p.id, p.problem, p.answer, p.solution] for p in problems]}),
        }
        run_id = config_hash(decided)
        provenance = {
            "stage": "map",
            "run_id": run_id,
            "mapper": mapper_info,
            "target": target_info,
            "precision": _precisions(engine, mapper_engine, cfg),
            "chat": cfg.chat,
            "templates": templates,
            "reward": reward_record(cfg.reward),
            "verifier": verifier_version(),
        }
        synth = _Synth(cfg, engine, mapper_engine, verifier, provenance, judge)
        store = ShardStore(out / "shards", run_id, decided, force=cfg.force)
        n_shards = run_sharded(
            store,
            problems,
            cfg.shard_size,
            synth.phases(),  # one shard verifies while the next is sampled
            desc=f"map {synth.method}",
            progress=progress,
            unit="problem",
            engines=(synth.mapper, synth.target),
            postfix=_mapped_counts,
            rejects_file=out / "rejects.jsonl",
        )
        store.finalize(out / "train.jsonl", expected_shards=n_shards)
        summary = synthesis_summary(list(store.rows()), cfg, synth.method, run_id, mapper_info, target_info)
        summary["rejected_input_rows"] = rejects
        summary["precision"] = _precisions(engine, mapper_engine, cfg)
        summary["engine"] = {"target": facts.record(engine, cfg.chat), "mapper": facts.record(mapper_engine, cfg.chat)}
        summary["compute"] = shard_totals(store)
        summary["wall_seconds_this_run"] = round(time.perf_counter() - wall_start, 3)
        tracker.summary(tracking.synthesis_metrics(summary))
    write_compute(
        out,
        {
            "stage": "map_synthesize",
            "method": synth.method,
            "problems": len(problems),
            "rollouts": summary["rollouts"],
            "tokens_generated": summary["compute"]["generated_tokens"],
            "tokens_scored": summary["compute"]["scored_tokens"],
            "seconds": summary["compute"]["seconds"],
            "generate_seconds": summary["compute"]["generate_seconds"],
            "score_seconds": summary["compute"]["score_seconds"],
            "wall_seconds_this_run": summary["wall_seconds_this_run"],
            "notes": "sums over the shards of the final output (resumed runs included); tokens_scored "
            "= target log-prob passes over passing rewrites and the expert solutions",
        },
    )
    write_json(out / "summary.json", summary)
    from sftadapt.data.card import write_set_card

    write_set_card(out, summary, cfg.data)
    if print_summary:
        print(summary_table(summary))
    return summary


# ---------------------------------------------------------------- summary
def synthesis_summary(
    rows: list[dict[str, Any]], cfg: SynthConfig, method: str, run_id: str, mapper_info: dict, target_info: dict
) -> dict[str, Any]:
    """Pass and fallback rates, gate failures (the judge's too when `reward.judge` is set, with its verdicts under
    `judge`), and the gap metric of the synthesised set beside the expert set's."""
    attempts = [a for r in rows for a in r["attempts"]]
    mapped = [r for r in rows if r["origin"] == "mapper"]
    fallback = [r for r in rows if r["origin"] == "expert"]
    verdicts: dict[str, int] = {}
    for a in attempts:
        verdicts[a["verdict"]] = verdicts.get(a["verdict"], 0) + 1
    n_att = max(len(attempts), 1)
    final_gap = _mean([r["target_logprob_mean"] for r in rows])
    expert_gap = _mean([r["meta"]["expert_target_logprob_mean"] for r in rows])
    mapped_gap = _mean([r["target_logprob_mean"] for r in mapped])
    mapped_expert_gap = _mean([r["meta"]["expert_target_logprob_mean"] for r in mapped])
    judged = cfg.reward.judge.on
    out = {
        "method": method,
        "mapper": mapper_info,
        "target": target_info,
        "data": cfg.data,
        "run_id": run_id,
        "problems": len(rows),
        "rows": len(rows),
        "k": cfg.k,
        "rollouts": len(attempts),
        "origins": {"mapper": len(mapped), "expert": len(fallback)},
        "gate_pass_rate": sum(a["meta"]["passed"] for a in attempts) / n_att,
        "mapped_rate": len(mapped) / max(len(rows), 1),
        "fallback_rate": len(fallback) / max(len(rows), 1),
        "gate_failures": {
            reason: sum(reason in a["meta"]["gate_reasons"] for a in attempts) / n_att
            for reason in reason_names(judged)
        },
        "verdicts": verdicts,
        "r_align_variant": cfg.reward.variant,
        "r_align_kept_mean": _mean([r["meta"]["r_align"] for r in mapped]),
        "gap": {
            "final_set": final_gap,
            "expert_set": expert_gap,
            "delta": None if final_gap is None or expert_gap is None else final_gap - expert_gap,
            "mapped_rows": mapped_gap,
            "mapped_rows_expert": mapped_expert_gap,
            "mapped_delta": None if mapped_gap is None else mapped_gap - mapped_expert_gap,
            "fallback_rows": _mean([r["target_logprob_mean"] for r in fallback]),
            "note": "mean over rows of the per-row mean token log-prob under the target with the plain solve "
            "prompt; higher = closer to the target; mapped_* compare the mapped rows with the expert "
            "solutions of the same problems",
        },
    }
    if judged:
        # attempts the rules passed were shown to the judge: its verdict is in their record
        shown = [a["meta"]["judge"] for a in attempts if "judge" in a["meta"]]
        out["judge"] = {
            "model": cfg.reward.judge.model,
            "judged": len(shown),
            **{v: shown.count(v) for v in ("valid", "invalid", "unparsed")},
        }
    return out


def summary_table(s: dict[str, Any]) -> str:
    """The short table printed at the end of `sftadapt map synthesize`."""

    def fmt(x):
        return "–" if x is None else f"{x:.3f}"

    g = s["gap"]
    fails = ", ".join(f"{k} {v:.0%}" for k, v in s["gate_failures"].items() if v) or "none"
    return "\n".join(
        [
            f"map {s['method']} | mapper {s['mapper'].get('spec')} | target {s['target'].get('spec')} | "
            f"{s['problems']} problems x {s['k']} rewrites | run {s['run_id']}",
            "",
            "| rows from | rows | mean target log-prob |",
            "|---|---|---|",
            f"| mapper | {s['origins']['mapper']} | {fmt(g['mapped_rows'])} |",
            f"| expert (fallback) | {s['origins']['expert']} | {fmt(g['fallback_rows'])} |",
            f"| **synthesised set** | {s['rows']} | {fmt(g['final_set'])} |",
            f"| original expert set | {s['rows']} | {fmt(g['expert_set'])} |",
            f"gate pass rate {s['gate_pass_rate']:.1%} of {s['rollouts']} rewrites; mapped {s['mapped_rate']:.1%}, "
            f"fallback {s['fallback_rate']:.1%}; gate failures: {fails}",
            f"compute: {s['compute']['generated_tokens']} tokens generated, {s['compute']['scored_tokens']} scored, "
            f"{s['compute']['seconds']:.1f} s",
        ]
    )


def _train_echo(cfg: MapperTrainConfig, summary: dict[str, Any]) -> list[str]:
    from pathlib import Path

    last = summary.get("last_log") or {}
    return [
        f"{summary['steps']} steps; last step: gate pass rate {last.get('gate_pass_rate')}, mean r_align of "
        f"passing rollouts {last.get('r_align_pass_mean')}",
        f"mapper -> {cfg.out} (log: {summary['log']}, compute: {Path(cfg.out) / 'compute.json'})",
    ]


# the mapper's RL: `sftadapt map train`; in `sftadapt run`, `--lora/--full`, `--steps` ... reach the grpo section
TRAIN_STAGE = Stage(
    name="map train",
    config=MapperTrainConfig,
    run=train_mapper,
    outputs=("model.safetensors", "rl_log.jsonl", "compute.json", "rejects.jsonl"),
    echo=_train_echo,
    aliases={
        "steps": "grpo.max_steps",
        "lora/full": "grpo.lora",
        "num_generations": "grpo.num_generations",
        "max_completion_length": "grpo.max_completion_length",
        "lr": "grpo.lr",
        "variant": "reward.variant",
    },
    target_key="target",
    seed_key="grpo.seed",
)
SYNTH_STAGE = Stage(
    name="map synthesize",
    config=SynthConfig,
    run=synthesize,
    outputs=("train.jsonl", "summary.json", "compute.json", "rejects.jsonl", "README.md"),
    record="Example",
    echo=echo_adapted_set,
    target_key="target",
)
