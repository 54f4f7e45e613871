"""Direct RL baseline (docs/methods.md): GRPO on the target itself with the same problems and a correctness reward.

DART claims to be more efficient than this: instead of the mapper RL + synthesis + SFT of sftadapt/adapt/mapper.py, the
target is trained directly on the solve prompt, reward 1 when the verifier says its final answer equals the gold
answer, 0 when it is wrong or missing (with `answer_format=boxed_strict`, the default, an answer outside
`\\boxed{}` counts as missing, as in DART's gate), and None (skipped: TRL gives the rollout no advantage) when the item could
not be verified (verifier timeout, or a gold answer that does not parse). Same trainer plumbing as the mapper
(sftadapt/rl/grpo.py: TRL GRPOTrainer, full or LoRA, CPU or vLLM), same per-step `rl_log.jsonl` (accuracy of the
rollouts per step) and the same `compute.json` (optimiser steps, rollouts, tokens generated, tokens processed by
the policy, seconds; no separate scoring model, so tokens_scored is 0).

In a study (`sftadapt run`), arm `direct_rl` runs this stage with the `direct_rl:` section, and each arm
`direct_rl@N` runs it once more with `grpo.max_steps` = N, in its own folder, for a compute-vs-accuracy curve.

    from sftadapt.rl.direct_rl import DirectRLConfig, direct_rl
    summary = direct_rl(DirectRLConfig(model="smollm2-135m", data="runs/data/syn64.jsonl", out="runs/direct-rl"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sftadapt.adapt.reward import GATE_ANSWER_FORMATS, RewardCounters, answer_verdict
from sftadapt.config import option
from sftadapt.data import budget
from sftadapt.data import prompts as P
from sftadapt.data.formats import FieldOptions, fields_option
from sftadapt.registry import Stage
from sftadapt.rl.grpo import GRPOOptions
from sftadapt.runtime import tracking
from sftadapt.runtime.trainer_options import LauncherConfig, launcher_option

RL_LOG_KEYS = ("accuracy", "unverified_rate")


@dataclass
class CorrectnessReward:
    """TRL reward: 1.0 correct, 0.0 wrong or no answer, None (skip) when unverifiable. `verify(golds, texts)`
    returns Verdict objects (`.verdict`, `.rule`); the dataset column `answer` holds the gold answers."""

    verify: Callable[[list[str], list[str]], list[Any]]
    answer_format: str = "boxed_strict"
    counters: RewardCounters = field(default_factory=RewardCounters)
    __name__ = "correctness"  # not a field: TRL logs the reward under rewards/correctness/mean

    def __call__(
        self,
        completions: list,
        answer: list[str],
        completion_ids: list[list[int]] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **_: Any,
    ) -> list[float | None]:
        texts = [c if isinstance(c, str) else str(c[-1].get("content", "")) for c in completions]
        verdicts = [answer_verdict(v.verdict, v.rule, self.answer_format) for v in self.verify(list(answer), texts)]
        rewards = [1.0 if v == "correct" else 0.0 if v in ("wrong", "no_answer") else None for v in verdicts]
        self.counters.calls += 1
        self.counters.rollouts += len(texts)
        self.counters.verified += len(texts)
        if completion_ids is not None:
            self.counters.rollout_tokens += sum(len(ids) for ids in completion_ids)
        if log_metric is not None and texts:
            log_metric("accuracy", sum(v == "correct" for v in verdicts) / len(texts))
            log_metric("unverified_rate", sum(r is None for r in rewards) / len(texts))
        return rewards


@dataclass
class DirectRLConfig:
    model: str = option("smollm2-135m", help="the target model to train directly")
    data: str = option("gsm8k_train", help="problems with gold answers: file, dataset name or hf:owner/name")
    fields: FieldOptions = fields_option()
    out: str = option("runs/direct-rl", help="output folder: the trained model, rl_log.jsonl, compute.json")
    limit: int | None = option(None, help="first N problems only")
    chat: bool = option(True, help="apply the model's chat template to the solve prompt")
    answer_format: str = option("boxed_strict", help="boxed_strict: only a \\boxed{} answer earns the reward | any")
    verifier_workers: int = option(2, help="verifier processes")
    verifier_timeout: float = option(5.0, help="seconds per verification before it is a `timeout` verdict")
    data_dir: str | None = option(None, help="shared data folder for dataset names (default: find shared/data)")
    grpo: GRPOOptions = field(default_factory=GRPOOptions, metadata={"help": "GRPO trainer options"})
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
        self.launcher.validate()
        if self.grpo.stop_pass_rate is not None:  # direct RL logs no gate pass rate: the rule could never fire
            raise ValueError(
                "grpo.stop_pass_rate: the stop rule reads the DART gate's pass rate; direct RL has no "
                "gate (leave it null and set max_steps)"
            )
        if self.answer_format not in GATE_ANSWER_FORMATS:
            raise ValueError(f"answer_format = '{self.answer_format}': choose one of {', '.join(GATE_ANSWER_FORMATS)}")


def direct_rl(cfg: DirectRLConfig, *, verifier=None, progress: bool = True) -> dict[str, Any]:
    """GRPO on the target with the correctness reward; saves the model (LoRA merged) in `cfg.out`."""
    from sftadapt.rl.grpo import run_grpo
    from sftadapt.runtime.models import load_tokenizer
    from sftadapt.runtime.outdir import STAGE_OUTPUTS, TRAIN_OUTPUTS
    from sftadapt.runtime.prologue import Owned, load_problems, make_verifier, open_stage

    out = open_stage(cfg, "direct_rl", protect=TRAIN_OUTPUTS + STAGE_OUTPUTS)
    problems, rejected = load_problems(cfg, out, require_solution=False)
    tok = load_tokenizer(cfg.model)
    # an over-long prompt is a reject, not a rollout torch cannot hold
    problems, _ = budget.screen_stage(
        None,
        problems,
        cfg.grpo.max_completion_length,
        out / "rejects.jsonl",
        budget.solve_checks(tok, cfg.chat),
        tokenizer=tok,
        model_spec=cfg.model,
        max_prompt_tokens=cfg.max_prompt_tokens,
    )
    rows = [
        {"prompt": P.solve_prompt(tok, p.problem, cfg.chat), "answer": p.answer, "problem_id": p.id} for p in problems
    ]
    with Owned() as owned:
        if verifier is None:
            verifier = owned.add(make_verifier(cfg))
        reward = CorrectnessReward(verify=verifier.verify_many, answer_format=cfg.answer_format)
        summary = run_grpo(
            cfg.model,
            rows,
            reward,
            cfg.grpo,
            out,
            stage="direct_rl",
            log_keys=RL_LOG_KEYS,
            progress=progress,
            extra_compute={"problems": len(rows)},
            force=cfg.force,
            tracker={"report_to": cfg.report_to, "tracking_dir": cfg.tracking_dir, "online": cfg.online or None},
            config={"data": cfg.data, "chat": cfg.chat, "solve_template_hash": P.template_hash(tok, P.SOLVE, cfg.chat)},
        )
    summary["rejected_input_rows"] = rejected
    return summary


def _echo(cfg: DirectRLConfig, summary: dict[str, Any]) -> list[str]:
    return [f"{summary['steps']} steps; model -> {cfg.out} (log: {summary['log']}, compute: {cfg.out}/compute.json)"]


STAGE = Stage(
    name="rl",
    config=DirectRLConfig,
    run=direct_rl,
    outputs=("model.safetensors", "rl_log.jsonl", "compute.json", "rejects.jsonl"),
    echo=_echo,
    seed_key="grpo.seed",
)
