"""Throughput of the `hf` engine against the naive loop a user would write, on the same prompts.

- sampling: 32 GSM8K test prompts x 4 samples (T=1), `HFEngine.generate` (length-sorted batches) vs a
  one-prompt-at-a-time `model.generate(num_return_sequences=4)` loop; tokens/s counts generated tokens
  up to and including EOS. Target: >= 3x the naive loop.
- scoring: 64 responses, `HFEngine.score` (batched, response-position logits only) vs one forward pass per
  response.
Both arms use the same model object and dtype and run alternately in one process (`--repeats`), so the
ratio is measured side by side; medians are reported.

    python benchmarks/bench_engine.py --model smollm2-135m --dtype bfloat16 --max-new-tokens 128 --repeats 2
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import time

import torch


def naive_generate(engine, prompts, n, max_new_tokens, seed):
    from sftadapt.data import prompts as P

    tok, model = engine.tokenizer, engine.model
    total = 0
    texts = []
    torch.manual_seed(seed)
    for prompt in prompts:
        ids = torch.tensor([P.prompt_token_ids(tok, prompt)])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        for row in out[:, ids.shape[1] :].tolist():
            row = row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row
            total += len(row)
            texts.append(tok.decode(row, skip_special_tokens=True))
    return total, texts


def naive_score(engine, prompts, responses):
    from sftadapt.data import prompts as P

    tok, model = engine.tokenizer, engine.model
    out = []
    with torch.no_grad():
        for prompt, response in zip(prompts, responses):
            p_ids, r_ids = P.prompt_token_ids(tok, prompt), P.response_token_ids(tok, response)
            logits = model(torch.tensor([p_ids + r_ids])).logits[0, len(p_ids) - 1 : -1].float()
            out.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(r_ids)[:, None])[:, 0].tolist())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--score-responses", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from sftadapt.data import prompts as P
    from sftadapt.data.sources import load_benchmark
    from sftadapt.engines import Sampling, make_engine

    engine = make_engine(args.model, dtype=args.dtype, batch_size=args.batch_size)
    problems = load_benchmark("gsm8k", limit=args.prompts)
    prompts = [P.solve_prompt(engine.tokenizer, p.problem) for p in problems]
    params = Sampling(n=args.n, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)

    gen = {"engine": [], "naive": []}
    texts: list[str] = []
    for rep in range(args.repeats):
        start = time.perf_counter()
        outs = engine.generate(prompts, Sampling(**{**params.__dict__, "seed": rep}))
        secs = time.perf_counter() - start
        tokens = sum(len(c.token_ids) + (c.finish_reason == "stop") for o in outs for c in o)
        gen["engine"].append(tokens / secs)
        texts = [c.text for o in outs for c in o]
        start = time.perf_counter()
        tokens, _ = naive_generate(engine, prompts, args.n, args.max_new_tokens, rep)
        gen["naive"].append(tokens / (time.perf_counter() - start))
        print(f"repeat {rep}: engine {gen['engine'][-1]:.1f} tok/s, naive {gen['naive'][-1]:.1f} tok/s", flush=True)

    score_texts = texts[: args.score_responses]
    score_prompts = [prompts[i // args.n] for i in range(len(score_texts))]
    sc = {"engine": [], "naive": []}
    max_diff = 0.0
    for _rep in range(3):
        start = time.perf_counter()
        ours = engine.score(score_prompts, score_texts)
        sc["engine"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = naive_score(engine, score_prompts, score_texts)
        sc["naive"].append(time.perf_counter() - start)
        max_diff = max(max_diff, max(abs(a - b) for s, r in zip(ours, ref) for a, b in zip(s.logprobs, r)))
    n_scored = sum(len(P.response_token_ids(engine.tokenizer, t)) for t in score_texts)

    med = statistics.median
    cpu = subprocess.run(
        "lscpu | grep 'Model name' | cut -d: -f2", shell=True, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"\n## Engine throughput ({datetime.date.today()}, {platform.node()}, {torch.get_num_threads()} threads, "
        f"{cpu})\n"
    )
    print(
        f"model {args.model}, dtype {args.dtype}, {args.prompts} GSM8K prompts x {args.n} samples, T=1.0, "
        f"max {args.max_new_tokens} new tokens, engine batch {args.batch_size}, {args.repeats} repeats\n"
    )
    print("| arm | sampling tok/s (median) | score 64 responses s (median) |")
    print("|---|---|---|")
    print(f"| hf engine | {med(gen['engine']):.1f} | {med(sc['engine']):.2f} |")
    print(f"| naive loop | {med(gen['naive']):.1f} | {med(sc['naive']):.2f} |")
    print(
        f"| ratio | **{med(gen['engine']) / med(gen['naive']):.2f}x** | "
        f"**{med(sc['naive']) / med(sc['engine']):.2f}x** |"
    )
    print(f"\nscored tokens: {n_scored}; max |engine - naive| log-prob difference: {max_diff:.2e} ({args.dtype})")


if __name__ == "__main__":
    main()
