"""Choose training problems by the target's own pass rate: the `select` stage of `sftadapt run`.

Why. Adapted data can only lift a model on problems it cannot already solve, and Mind the Gap's guided and
fallback rows only carry something the target lacks where it fails some of the time. Problems of a fixed length
are not enough for that: the warmed-up target solves half of its 3-4 step problems never and a tenth of them
always (benchmarks/regime.md). So the study can draw a larger pool of candidates and keep those the target solves
sometimes.

How. The data stage writes `select_pool` candidates (`data/pool.jsonl`, with their expert solutions). The target
samples `select_k` solutions of each with the evaluation harness (eval/evaluate.py: the solve prompt, the
rewrite's temperature and token budget, sample j of problem p seeded by (seed, p, "eval", j), a stream of its own
that the rewrite's self samples never reuse), and the candidates whose pass rate (correct / k) lies in
`select_band` are kept in pool order until `train_problems` are chosen. If the band holds fewer, the rest are the
candidates nearest to it (pool order breaks ties), and the stage says how many and records them. The rewrite
stage then measures the chosen problems again with its own samples: that second, independent histogram is the
one a report shows (`benchmarks/study_details.py`), since the first is in the band by construction.

Outputs in `RUN/select/`: `expert.jsonl` (the chosen problems, what every later stage trains on), `selection.json`
(pool and chosen histograms, band, shortfall, the chosen ids with their rates), `pool_eval/` (the harness's results
and every sampled attempt).

    task: {kind: synthetic, train_problems: 64, steps: [3, 4], select_pool: 288, select_k: 8, select_band: [0.25, 0.5]}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any


def choose(
    ids: Sequence[str], correct: Mapping[str, int], k: int, band: Sequence[float], n: int
) -> tuple[list[str], int]:
    """The `n` ids to train on, in pool order: those whose rate correct/k lies in `band`, then (if too few) the
    nearest to it. Returns (chosen ids in pool order, how many lie outside the band)."""
    order = {pid: i for i, pid in enumerate(ids)}
    ranked = sorted(ids, key=lambda pid: (band_distance(correct[pid] / k, band), order[pid]))[:n]
    outside = sum(band_distance(correct[pid] / k, band) > 0 for pid in ranked)
    return sorted(ranked, key=order.__getitem__), outside


def band_distance(rate: float, band: Sequence[float]) -> float:
    """How far `rate` lies outside [low, high] (0 inside it)."""
    low, high = band
    return max(low - rate, rate - high, 0.0)


def histogram(rates: Sequence[int], k: int) -> dict[str, int]:
    """{"c/k": problems} for c = 0..k."""
    counts = Counter(rates)
    return {f"{c}/{k}": counts.get(c, 0) for c in range(k + 1)}


def sampling_config(task, seed: int, target: str, pool_path: str, folder, eval_cfg, rewrite_cfg):
    """The eval config that samples the pool: the study's engine and batch size (`eval_cfg`), the rewrite's
    sampling precision, temperature, nucleus mass and token budget (`rewrite_cfg`), select_k samples a problem."""
    import dataclasses
    from pathlib import Path

    return dataclasses.replace(
        eval_cfg,
        model=target,
        benchmarks=[pool_path],
        limit=None,
        out=str(Path(folder) / "pool_eval"),
        dtype=rewrite_cfg.dtype,
        protocol="quick",
        template="solve",
        chat=rewrite_cfg.chat,
        n=task.select_k,
        temperature=rewrite_cfg.temperature,
        top_p=rewrite_cfg.top_p,
        max_new_tokens=rewrite_cfg.max_new_tokens,
        seed=seed,
        answer_format="boxed",
    )


def run_select(task, sampling, pool_path: str, folder, progress: bool = True) -> dict[str, Any]:
    """Sample the target on the pool with `sampling` (an eval config, `sampling_config`), choose, and write
    `folder/expert.jsonl` and `folder/selection.json`; returns the counts and the chosen set's path."""
    from pathlib import Path

    from sftadapt.data.records import Problem, read_records, write_json, write_records
    from sftadapt.eval.stage import run as evaluate

    folder = Path(folder)
    results = evaluate(sampling, progress=progress)
    (scores,) = results["benchmarks"].values()
    correct = {pid: int(v[0]) for pid, v in scores["per_problem"].items()}
    pool = read_records(pool_path, Problem)
    ids = [p.id for p in pool if p.id in correct]  # a candidate the harness refused (over-long) is not chosen
    chosen, outside = choose(ids, correct, task.select_k, task.select_band, task.train_problems)
    keep = set(chosen)
    write_records(folder / "expert.jsonl", [p for p in pool if p.id in keep])
    low, high = task.select_band
    in_band = sum(band_distance(correct[pid] / task.select_k, task.select_band) == 0 for pid in ids)
    record = {
        "pool": len(pool),
        "sampled": len(ids),
        "k": task.select_k,
        "band": [low, high],
        "in_band": in_band,
        "chosen": len(chosen),
        "outside_band": outside,
        "pool_histogram": histogram([correct[pid] for pid in ids], task.select_k),
        "chosen_histogram": histogram([correct[pid] for pid in chosen], task.select_k),
        "chosen_ids": {pid: correct[pid] for pid in chosen},
        "sampling": {
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_new_tokens": sampling.max_new_tokens,
            "seed": sampling.seed,
        },
    }
    write_json(folder / "selection.json", record)
    if outside:
        print(
            f"select: only {in_band} of {len(ids)} candidates have a pass rate in [{low}, {high}]; the other "
            f"{outside} chosen problems are the nearest to it (raise task.select_pool for a chosen set inside it)"
        )
    elif progress:
        print(f"select: {len(chosen)} of the {in_band} candidates (of {len(ids)}) with a pass rate in [{low}, {high}]")
    return {key: record[key] for key in ("pool", "in_band", "chosen", "outside_band")} | {
        "expert": str(folder / "expert.jsonl")
    }
