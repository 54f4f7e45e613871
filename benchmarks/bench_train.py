"""Step time of the `dft` and `is` losses relative to `nll`, side by side in one run (target: <= 1.10x).

    python benchmarks/bench_train.py --model smollm2-135m                 # the recorded benchmark
    python benchmarks/bench_train.py --model tiny-random --steps 4 --rounds 1   # a smoke check in seconds

Each loss trains the same model on the same batches (same seed, same data order) through the real trainer
(`sftadapt.train.stage.build_trainer`), for `--warmup` + `--steps` optimiser steps; the losses take turns in
`--rounds` rounds so that load from other processes on the machine falls on all of them alike. A step's time is
the wall time between the ends of consecutive optimiser steps (data, forward, loss, backward, optimiser, logging).
Reported: the median over the measured steps of all rounds, and the ratio of medians to `nll`.

Data: GSM8K train expert solutions from the shared data folder (sftadapt.data.sources), every other row given
behaviour log-probs of the right length (random values: the time does not depend on them), so `is` pays for
both kinds of rows. Run it alone on the machine (2 cores: a second torch job slows both ~10x).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sftadapt.data.prompts import response_token_ids  # noqa: E402
from sftadapt.data.records import write_records  # noqa: E402
from sftadapt.runtime.models import load_tokenizer  # noqa: E402
from sftadapt.train.data import expert_example  # noqa: E402
from sftadapt.train.stage import TrainConfig, build_trainer  # noqa: E402


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self._last = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


def make_data(model: str, rows: int, path: Path) -> int:
    from sftadapt.data.sources import load_benchmark

    tok = load_tokenizer(model)
    gen = torch.Generator().manual_seed(0)
    examples = []
    for i, problem in enumerate(load_benchmark("gsm8k_train", limit=rows)):
        example = expert_example(problem)
        if i % 2:
            n = len(response_token_ids(tok, example.response))
            example.behavior_logprobs = (-torch.rand(n, generator=gen) * 3).tolist()
            example.origin = "self"
        examples.append(example)
    return write_records(path, examples)


def run(args) -> dict:
    losses = [x.strip() for x in args.losses.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    data = work / "data.jsonl"
    steps_total = args.warmup + args.steps
    make_data(args.model, steps_total * args.batch_size * args.grad_accum, data)
    times: dict[str, list[float]] = {loss: [] for loss in losses}
    tokens_per_step = None
    for round_index in range(args.rounds):
        for loss in losses:
            cfg = TrainConfig(
                model=args.model,
                data=[str(data)],
                out=str(work / f"{loss}-{round_index}"),
                loss=loss,
                max_steps=steps_total,
                batch_size=args.batch_size,
                grad_accum=args.grad_accum,
                max_length=args.max_length,
                save_steps=10**9,
                resume=False,
                dtype=args.dtype,
                bf16=args.bf16,
                lr=1e-5,
            )
            timer = StepTimer()
            trainer, prepared, _ = build_trainer(cfg, callbacks=[timer])
            trainer.train()
            times[loss].extend(timer.times[args.warmup :])
            logged = [r for r in trainer.state.log_history if "response_tokens" in r]
            tokens_per_step = statistics.mean(r["response_tokens"] for r in logged)
            print(
                f"round {round_index + 1}/{args.rounds} {loss}: median {statistics.median(timer.times[args.warmup :]):.3f}"
                f" s/step",
                file=sys.stderr,
            )
            del trainer
    shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["nll"]) if "nll" in times else None
    rows = {
        loss: {
            "median_s": statistics.median(t),
            "min_s": min(t),
            "max_s": max(t),
            "steps": len(t),
            "ratio_vs_nll": statistics.median(t) / base if base else None,
        }
        for loss, t in times.items()
    }
    return {
        "model": args.model,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "max_length": args.max_length,
        "dtype": args.dtype,
        "bf16": args.bf16,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "response_tokens_per_step": tokens_per_step,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "losses": rows,
    }


def markdown(result: dict) -> str:
    head = (
        f"Step time on `{result['model']}` (batch {result['batch_size']} x accum {result['grad_accum']}, "
        f"max_length {result['max_length']}, {result['response_tokens_per_step']:.0f} response tokens/step, "
        f"{result['dtype']}{' + bf16 autocast' if result['bf16'] else ''}, {result['threads']} threads, "
        f"torch {result['torch']}, {result['date']}); median of {result['rounds']} round(s):"
    )
    lines = [head, "", "| loss | steps | median s/step | min | max | x nll |", "|---|---|---|---|---|---|"]
    for loss, r in result["losses"].items():
        ratio = f"{r['ratio_vs_nll']:.3f}" if r["ratio_vs_nll"] else "-"
        lines.append(f"| {loss} | {r['steps']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--losses", default="nll,dft,is")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per loss and round")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of each run, not measured")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--record", type=Path, help="also write the table (.md) and the numbers (.json) here")
    args = parser.parse_args()
    result = run(args)
    table = markdown(result)
    print(table)
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
        args.record.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
