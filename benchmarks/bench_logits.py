"""The work saved on positions that train nothing (sftadapt/train/logits.py): SFT step time, three ways.

    python benchmarks/bench_logits.py                                        # SmolLM2-135M, the recorded benchmark
    python benchmarks/bench_logits.py --model tiny-random --rounds 1 --steps 1   # a smoke check in seconds

Four batches, tokenised (max_length 1024) and right-padded by the training stage's own `tokenize_examples` and
`Collator` (train/data.py: prompt and padding masked out of the loss): the quickstart's warm-up batch (8
native-style rows), one of its SFT arms' batches (4 rows with terse expert solutions), and the first 4 rows of
the real GSM8K and MATH training sets (read from the shared data folder; skipped if it is not found).

A step is forward + backward + AdamW, fp32 master weights, bf16 autocast only where `dtype: auto` would pick it,
the log-probs from `target_logprobs` in three arms: one forward over the padded batch with the full head (as
before 2026-12-05); the head only at trained tokens; that and the rows in length groups (what `sftadapt train`
does on a CPU). All arms share one process and one model. Per batch, every arm trains one untimed step, then in
each of `--rounds` rounds the arms alternate `--steps` timed steps, so load from elsewhere falls on all alike.
Also printed: the largest difference between an arm's log-probs and the full head's on the batch (one no-grad
forward each), so a speed-up can never come from computing something else.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (selective head, rows in length groups)
ARMS = {"full head": (False, False), "head on trained tokens": (True, False), "+ rows in length groups": (True, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = ap.parse_args()

    from sftadapt.runtime.memory import keep_freed_memory

    keep_freed_memory()  # as every sftadapt command does
    import torch

    from sftadapt.data.synthetic import generate, warmup_set
    from sftadapt.runtime.models import load_model, load_tokenizer
    from sftadapt.runtime.precision import capability, cpu_model_name, resolve_dtype
    from sftadapt.train.data import IGNORE_INDEX, Collator, expert_example, load_examples, tokenize_examples
    from sftadapt.train.logits import length_groups, selective_logits, target_logprobs

    print(f"# {datetime.date.today()} · {cpu_model_name()} · {capability()}", flush=True)
    tok = load_tokenizer(args.model)
    model = load_model(args.model, dtype="float32")
    model.train()
    assert selective_logits(model), f"{args.model}: its forward cannot keep a boolean mask of logits"
    autocast = resolve_dtype("auto", "cpu") == "bfloat16"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batches = {
        "quickstart warm-up (8 native rows)": [expert_example(p) for p in warmup_set(8, seed=0)],
        "quickstart SFT arm (4 expert rows)": [expert_example(p) for p in generate(4, seed=0, steps=(1, 3))],
    }
    for name in ("gsm8k_train", "math_train"):  # real expert sets, 4 rows as `sftadapt train`'s default batch
        try:
            batches[f"{name} (first 4 rows)"] = load_examples([name])[0][:4]
        except Exception as err:  # noqa: BLE001 - the shared data folder is optional here
            print(f"{name}: skipped ({err})", flush=True)

    def collate(examples):
        tokenized = tokenize_examples(tok, examples, max_length=1024)
        batch = Collator(pad_token_id=tok.pad_token_id)(tokenized.rows)
        targets = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
        return batch["input_ids"], batch["attention_mask"], targets

    def logprobs(ids, mask, targets, arm):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return target_logprobs(model, ids, mask, targets, *arm)

    def step(ids, mask, targets, arm) -> float:
        start = time.perf_counter()
        logp = logprobs(ids, mask, targets, arm)
        loss = -logp.sum() / (targets != IGNORE_INDEX).sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    results = {}
    for batch_name, problems in batches.items():
        ids, mask, targets = collate(problems)
        with torch.no_grad():
            logps = {name: logprobs(ids, mask, targets, arm) for name, arm in ARMS.items()}
        times: dict[str, list[float]] = {name: [] for name in ARMS}
        for arm in ARMS.values():  # untimed: first touch of this batch size's memory
            step(ids, mask, targets, arm)
        for r in range(args.rounds):
            for _ in range(args.steps):
                for name, arm in ARMS.items():
                    times[name].append(step(ids, mask, targets, arm))
            print(
                f"{batch_name} round {r}: "
                + ", ".join(f"{a} {[round(t, 2) for t in ts[-args.steps :]]}" for a, ts in times.items()),
                flush=True,
            )
        medians = {arm: statistics.median(ts) for arm, ts in times.items()}
        results[batch_name] = {
            "tokens": f"{ids.shape[0]} x {ids.shape[1]}",
            "real tokens": int(mask.sum()),
            "trained tokens": int((targets != IGNORE_INDEX).sum()),
            "length groups": length_groups(mask.sum(1).tolist()),
            "max |logp difference| vs full head": {
                a: float((lp - logps["full head"]).abs().max()) for a, lp in logps.items()
            },
            "step_s": times,
            "median step s": medians,
            "speedup vs full head": {a: medians["full head"] / m for a, m in medians.items()},
        }

    print(f"\nmodel {args.model}; bf16 autocast {autocast}; {args.rounds} rounds x {args.steps} timed steps per arm\n")
    print("| batch | arm | median step s | speed-up vs full head | max abs log-prob difference vs full head |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        for arm in ARMS:
            print(
                f"| {name} | {arm} | {r['median step s'][arm]:.3g} | **{r['speedup vs full head'][arm]:.2f}x** | "
                f"{r['max |logp difference| vs full head'][arm]:.2g} |"
            )
    for name, r in results.items():
        print(
            f"\n{name}: {r['tokens']} tokens (rows x padded length), {r['real tokens']} real, "
            f"{r['trained tokens']} trained; length groups (row indices): {r['length groups']}"
        )
    if args.json:
        args.json.write_text(json.dumps({"capability": capability(), "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
