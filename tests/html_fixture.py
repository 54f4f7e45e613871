"""A small `sftadapt run` folder written by hand, for the HTML report tests (the real tiny study takes ~1 min).

It mirrors what the stages write (fields taken from a real tiny-random run): `eval_<arm>/` with results.json built
by the real `evaluate.benchmark_result` from the attempts, `<bench>/attempts.jsonl`; `warmup/` and
`train_<arm>/` with train_log.jsonl and train_config.json; `rewrite/` and `mapper/` with train.jsonl and
summary.json; `mapper_train/` and `direct_rl/` with rl_log.jsonl and compute.json; a stage.json with its result
in every stage folder. Then `study_report.write_study_report` makes study.json/md/html from it, as `run` does.

The test problems are the embedded synthetic benchmark's own (so the report's problem join is exercised for
real), and some responses and training rows carry hostile markup (`HOSTILE`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftadapt.data.records import Attempt, Example, to_dict, write_json, write_records

BENCHMARKS = ("synthetic_id", "synthetic_ood")
LIMIT = 6  # problems per benchmark
N = 2  # samples per problem
ARMS = ("base", "sft", "dr_sft", "dart_sft", "direct_rl")
ACCURACY = {"base": 0.30, "sft": 0.20, "dr_sft": 0.45, "dart_sft": 0.55, "direct_rl": 0.40}
HOSTILE = (
    '</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">\u2028<!-- -->&amp; \\boxed{7}'
)
PROTOCOL = {
    "name": "quick",
    "template": "solve",
    "chat": True,
    "n": N,
    "temperature": 0.7,
    "top_p": 1.0,
    "max_new_tokens": 64,
    "seed": 0,
    "answer_format": "boxed",
    "hash": "fixture0000000001",
}


@dataclass
class FixtureStages:
    """What `write_study_report` reads of `pipeline.Stages`: the root, each stage's result, the stages run."""

    root: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)


@dataclass
class FixtureConfig:
    name: str = "fixture study"
    model: str = "tiny-random"
    report: dict = field(default_factory=dict)


def _stage(stages: FixtureStages, name: str, result: dict[str, Any]) -> Path:
    folder = stages.root / name
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "stage.json", {"hash": "fixture", "status": "done", "spec": {}, "result": result})
    stages.results[name] = result
    stages.ran.append(name)
    return folder


def _train_log(folder: Path, steps: int, start: float, rng: random.Random) -> None:
    with open(folder / "train_log.jsonl", "w", encoding="utf-8") as fh:
        for s in range(1, steps + 1):
            loss = start * (0.55 + 0.45 * 0.8**s) + rng.uniform(-0.03, 0.03)
            fh.write(
                json.dumps(
                    {
                        "step": s,
                        "loss": loss,
                        "grad_norm": 2.0,
                        "learning_rate": 5e-5,
                        "nll": loss,
                        "response_tokens": 60.0,
                        "epoch": s / steps,
                    }
                )
                + "\n"
            )
        fh.write(json.dumps({"step": steps, "train_runtime": 1.0, "train_loss": start, "epoch": 1.0}) + "\n")


def _train(stages: FixtureStages, arm: str, data: Path, rng: random.Random, steps: int = 8) -> Path:
    folder = _stage(
        stages,
        f"train_{arm}" if arm != "base" else "warmup",
        {
            "steps": steps,
            "global_batch": 4,
            "rows": 4,
            "response_tokens": 240,
            "loss": "nll",
            "stage_seconds": 3.0 + steps,
        },
    )
    _train_log(folder, steps, 2.0 + rng.random(), rng)
    (folder / "train_config.json").write_text(json.dumps({"config": {"data": [str(data)], "loss": "nll"}}))
    (folder / "config.json").write_text("{}")  # a model folder
    return folder


def _rl_log(folder: Path, steps: int, mapper: bool, rng: random.Random) -> None:
    with open(folder / "rl_log.jsonl", "w", encoding="utf-8") as fh:
        for s in range(1, steps + 1):
            row: dict[str, Any] = {
                "step": s,
                "loss": 0.01,
                "reward": None,
                "epoch": s / steps,
                "cum_rollouts": 2 * s,
                "cum_seconds": 2.0 * s,
            }
            if mapper:
                passed = min(1.0, 0.1 * s + rng.uniform(0, 0.1))
                row.update(
                    gate_pass_rate=passed,
                    reward_mean=-10 * (1 - passed) - 1.5 * passed,
                    r_align_pass_mean=-1.5 if passed else None,
                    fail_no_answer=0.8 * (1 - passed),
                    fail_wrong_answer=0.1,
                    fail_length_low=0.3 * (1 - passed),
                    fail_near_copy=0.0,
                )
            else:
                acc = min(1.0, 0.2 + 0.05 * s)
                row.update(accuracy=acc, unverified_rate=0.0, reward=acc)
            fh.write(json.dumps(row) + "\n")


def _adapted(folder: Path, stage: str, problems, rng: random.Random, hostile_row: bool) -> Path:
    rows = []
    for k, p in enumerate(problems):
        origin = ("self", "guided", "expert")[k % 3] if stage == "rewrite" else ("mapper", "expert")[k % 2]
        attempts = [
            to_dict(
                Attempt(
                    problem_id=p.id,
                    stage="self" if stage == "rewrite" else "mapper",
                    index=j,
                    prompt_hash="1aecbaa198c0",
                    text=f"attempt {j} for {p.id}: \\boxed{{{j}}}",
                    verdict=("correct", "wrong")[j % 2],
                    extracted=str(j),
                    rule="boxed",
                    meta=(
                        {"passed": j == 0, "gate_reasons": [] if j == 0 else ["wrong_answer"]}
                        if stage == "mapper"
                        else {"n_tokens": 12}
                    ),
                )
            )
            for j in range(2)
        ]
        problem = p.problem if not (hostile_row and k == 0) else p.problem + " " + HOSTILE
        rows.append(
            Example(
                id=p.id,
                problem=problem,
                response=f"Solved in the target's words: \\boxed{{{p.answer}}}",
                answer=p.answer,
                origin=origin,
                target_logprob_mean=-1.2 - rng.random(),
                self_pass_rate=0.5 if stage == "rewrite" else None,
                attempts=attempts,
                meta={"problem_id": p.id, "mapper_pass_rate": 0.5} if stage == "mapper" else {"problem_id": p.id},
            )
        )
    write_records(folder / "train.jsonl", rows)
    return folder / "train.jsonl"


def _eval(stages: FixtureStages, arm: str, model_dir: Path | None, problems: dict, rng: random.Random) -> None:
    from sftadapt.eval.evaluate import benchmark_result

    folder = _stage(stages, f"eval_{arm}", {"stage_seconds": 2.0})
    results = {
        "protocol": PROTOCOL,
        "model": {"spec": str(model_dir or "tiny-random"), "path": str(model_dir or "/nonexistent/tiny-random")},
        "prompt_hash": "1aecbaa198c0",
        "limit": LIMIT,
        "benchmarks": {},
    }
    for bench, plist in problems.items():
        attempts = []
        for p in plist:
            for j in range(N):
                u = rng.random()
                acc = ACCURACY[arm]
                verdict = (
                    "correct" if u < acc else "wrong" if u < acc + 0.35 else "no_answer" if u < 0.97 else "timeout"
                )
                extracted = {"correct": p.answer, "wrong": str(int(rng.random() * 90) + 1)}.get(verdict)
                text = f"Let me think step by step about {p.id}. " + (
                    f"The answer is \\boxed{{{extracted}}}." if extracted else "I am not sure."
                )
                if arm == "sft" and bench == "synthetic_id" and p is plist[0] and j == 0:
                    text = HOSTILE
                attempts.append(
                    Attempt(
                        problem_id=p.id,
                        stage="eval",
                        index=j,
                        prompt_hash="1aecbaa198c0",
                        text=text,
                        finish_reason="stop",
                        seed=j,
                        verdict=verdict,
                        extracted=extracted,
                        rule="boxed" if extracted else "none",
                        meta={
                            "benchmark": bench,
                            "n_tokens": 20 + j,
                            "logprob_sum": -5.0,
                            "generate_s": 0.01,
                            "verify_s": 0.001,
                        },
                    )
                )
        write_records(folder / bench / "attempts.jsonl", attempts)
        results["benchmarks"][bench] = benchmark_result(attempts, n_boot=200, seed=0)
    write_json(folder / "results.json", results)


def build(root: Path, seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Write the run folder in `root` (one `seed-S/` per seed when there are several, as `run` lays them out) and
    its study report in `root/report`; returns the study dict."""
    from sftadapt.report.study import write_study_report

    per_seed = {s: build_seed(root / f"seed-{s}" if len(seeds) > 1 else root, s) for s in seeds}
    return write_study_report(FixtureConfig(), per_seed, root / "report")


def build_seed(root: Path, seed: int) -> dict[str, Any]:
    """One seed's stage folders; returns what `run_seed` returns for the report."""
    from sftadapt.data import synthetic
    from sftadapt.data.sources import load_benchmark

    rng = random.Random(seed)
    stages = FixtureStages(root)
    problems = {b: load_benchmark(b, LIMIT) for b in BENCHMARKS}
    train_problems = synthetic.generate(6, seed=0, steps=(1, 3), style="expert", split="train")
    data = root / "data"
    write_records(data / "expert.jsonl", train_problems)
    _stage(stages, "data", {"expert_rows": 6})
    warmup = _train(stages, "base", data / "warmup.jsonl", rng, steps=12)

    rewrite = _stage(
        stages,
        "rewrite",
        {
            "gap": {"final_set": -1.1, "expert_set": -2.4},
            "stage_seconds": 20.0,
            "totals": {"generated_tokens": 3000, "scored_tokens": 900},
        },
    )
    rewrite_set = _adapted(rewrite, "rewrite", train_problems, rng, hostile_row=True)
    write_json(rewrite / "summary.json", {"method": "mind_the_gap", "gap": stages.results["rewrite"]["gap"]})

    mapper_train = _stage(stages, "mapper_train", {"stage_seconds": 40.0})
    _rl_log(mapper_train, 10, True, rng)
    write_json(mapper_train / "compute.json", {"optimizer_steps": 10, "tokens_generated": 2400, "tokens_scored": 800})
    mapper = _stage(stages, "mapper", {"gap": {"final_set": -1.5, "expert_set": -2.4}, "stage_seconds": 15.0})
    mapper_set = _adapted(mapper, "mapper", train_problems, rng, hostile_row=False)
    write_json(
        mapper / "summary.json",
        {
            "method": "dart",
            "gap": stages.results["mapper"]["gap"],
            "mapper": {"spec": str(mapper_train), "path": str(mapper_train)},
        },
    )
    write_json(mapper / "compute.json", {"tokens_generated": 600, "tokens_scored": 300})

    models = {
        "base": warmup,
        "sft": _train(stages, "sft", data / "expert.jsonl", rng),
        "dr_sft": _train(stages, "dr_sft", rewrite_set, rng),
        "dart_sft": _train(stages, "dart_sft", mapper_set, rng),
    }
    direct = _stage(stages, "direct_rl", {"stage_seconds": 30.0})
    _rl_log(direct, 10, False, rng)
    write_json(
        direct / "compute.json", {"optimizer_steps": 10, "tokens_generated": 1600, "policy_tokens_processed": 5000}
    )
    (direct / "config.json").write_text("{}")
    models["direct_rl"] = direct

    for arm in ARMS:
        _eval(stages, arm, models[arm], problems, rng)
    return {"stages": stages, "models": {a: str(models[a]) for a in ARMS}, "paths": {"warmup": str(warmup)}}


def expected_counts(root: Path) -> dict[str, Any]:
    """What the page should show, read back from the attempts files: totals per arm and per verdict."""
    total, by_verdict, by_arm = 0, {}, {}
    for arm in ARMS:
        for bench in BENCHMARKS:
            for line in (root / f"eval_{arm}" / bench / "attempts.jsonl").read_text(encoding="utf-8").split("\n"):
                if not line.strip():
                    continue
                v = json.loads(line)["verdict"]
                total += 1
                by_verdict[v] = by_verdict.get(v, 0) + 1
                by_arm[arm] = by_arm.get(arm, 0) + 1
    return {"total": total, "by_verdict": by_verdict, "by_arm": by_arm}
