"""glibc's default malloc vs `keep_freed_memory` (sftadapt/runtime/memory.py): SFT step time on this CPU.

    python benchmarks/bench_memory.py                              # SmolLM2-135M, the recorded benchmark
    python benchmarks/bench_memory.py --model tiny-random --rounds 1 --steps 2   # a smoke check in seconds

Each arm runs in its own process (the malloc settings last for a process's life), in alternating rounds so that load
from elsewhere falls on both alike. A process loads the model, trains one untimed step (first-touch of the heap is
paid by both arms alike), then `--steps` timed steps of forward + backward + AdamW on the same batch: `--batch`
warm-up-set rows, tokenised and right-padded by the training stage's own `tokenize_examples` and `Collator`
(train/data.py: prompt tokens masked out of the loss), fp32 master weights, bf16 autocast only where `dtype: auto`
would pick it. Reported per arm: median step seconds, kernel (system) CPU seconds per step and minor page faults per
step, from `getrusage` around the timed steps; peak resident size of the process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = {"glibc default": "system", "keep_freed_memory": "keep"}


def worker(args: argparse.Namespace) -> dict:
    from sftadapt.runtime.memory import keep_freed_memory

    setting = keep_freed_memory()  # SFTADAPT_MALLOC=system (set by the parent) makes it a no-op
    import torch

    from sftadapt.data.synthetic import warmup_set
    from sftadapt.runtime.models import load_model, load_tokenizer
    from sftadapt.runtime.precision import resolve_dtype
    from sftadapt.train.data import Collator, expert_example, tokenize_examples

    tok = load_tokenizer(args.model)
    model = load_model(args.model, dtype="float32")
    model.train()
    autocast = resolve_dtype("auto", "cpu") == "bfloat16"
    # the warm-up stage's rows, tokenised and padded by the training stage's own pieces (prompt tokens masked)
    tokenized = tokenize_examples(tok, [expert_example(p) for p in warmup_set(args.batch, seed=0)], max_length=384)
    batch = Collator(pad_token_id=tok.pad_token_id)(tokenized.rows)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = [step() for _ in range(args.steps)]
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "setting": setting,
        "autocast_bf16": autocast,
        "tokens": f"{ids.shape[0]} x {ids.shape[1]}",
        "step_s": times,
        "sys_s_per_step": (after.ru_stime - before.ru_stime) / args.steps,
        "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / args.steps,
        "peak_rss_gb": after.ru_maxrss / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", type=Path, help="also write the raw numbers here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from sftadapt.runtime.precision import capability, cpu_model_name

    print(f"# {datetime.date.today()} · {cpu_model_name()} · {capability()}", flush=True)
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    command = [sys.executable, __file__, "--worker", "--model", args.model]
    command += ["--steps", str(args.steps), "--batch", str(args.batch)]
    for r in range(args.rounds):
        for arm, value in ARMS.items():
            env = {**os.environ, "SFTADAPT_MALLOC": value}
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            runs[arm].append(json.loads(out.stdout.strip().splitlines()[-1]))
            last = runs[arm][-1]
            print(f"round {r} {arm}: steps {[round(t, 2) for t in last['step_s']]} ({last['setting']})", flush=True)

    summary = {}
    for arm, rs in runs.items():
        summary[arm] = {
            "median step s": statistics.median(t for run in rs for t in run["step_s"]),
            "system CPU s / step": statistics.median(run["sys_s_per_step"] for run in rs),
            "minor page faults / step": statistics.median(run["minor_faults_per_step"] for run in rs),
            "peak RSS GB": max(run["peak_rss_gb"] for run in rs),
        }
    first = runs["glibc default"][0]
    print(
        f"\nmodel {args.model}; batch {first['tokens']} tokens; bf16 autocast {first['autocast_bf16']}; "
        f"{args.rounds} rounds x {args.steps} timed steps per arm\n"
    )
    print(
        "| arm | median step s | system CPU s / step | minor page faults / step | peak RSS GB |\n|---|---|---|---|---|"
    )
    for arm, s in summary.items():
        print(f"| {arm} | " + " | ".join(f"{v:.3g}" for v in s.values()) + " |")
    ratio = summary["glibc default"]["median step s"] / summary["keep_freed_memory"]["median step s"]
    print(f"| **speed-up of keep_freed_memory** | **{ratio:.2f}x** | | | |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary, "speedup": ratio}, indent=1))


if __name__ == "__main__":
    main()
