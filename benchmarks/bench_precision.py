"""fp32 vs bf16 on this CPU: a matmul, an SFT step and batched generation, measured side by side in one run.

    python benchmarks/bench_precision.py                      # SmolLM2-135M, the recorded benchmark
    python benchmarks/bench_precision.py --model tiny-random --rounds 1   # a smoke check in seconds

Why: whether bf16 is fast depends on the CPU. With AMX or AVX512-BF16 torch runs bf16 matmuls natively; on an
AVX2-only CPU they are emulated (measured 132x slower than fp32 on such a machine). sftadapt's `dtype: auto`
(sftadapt/runtime/precision.py) picks bf16 only where this benchmark would show it pays.

Arms, each timed in alternating rounds so that load from elsewhere falls on all alike (medians reported):
- matmul: 1024x1024 @ 1024x1024, GFLOPS;
- SFT step (forward + backward + AdamW on `--batch` rows of `--tokens` tokens): fp32 weights; fp32 master
  weights under bf16 autocast (what `dtype: auto` trains with on a bf16-native CPU); pure bf16 weights (only on
  explicit request: most small updates are rounded away);
- generation: `HFEngine.generate`, `--prompts` GSM8K prompts, greedy, `--new-tokens` forced new tokens, in
  fp32 and bf16 weights.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def matmul_gflops(dtype: torch.dtype, seconds: float = 1.5) -> float:
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return n * 2 * 1024**3 / (time.perf_counter() - start) / 1e9


def sft_step_seconds(model, batch: torch.Tensor, autocast: bool, optimizer) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=192)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from sftadapt.data import prompts as P
    from sftadapt.data.sources import load_benchmark
    from sftadapt.engines.hf import HFEngine
    from sftadapt.runtime.models import load_tokenizer, resolve_model
    from sftadapt.runtime.precision import capability, cpu_model_name

    cap = capability()
    print(
        f"# {datetime.date.today()} · {cpu_model_name()} · torch {torch.__version__} · "
        f"{torch.get_num_threads()} threads · {cap}",
        flush=True,
    )
    path = resolve_model(args.model)
    tok = load_tokenizer(args.model)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(100, len(tok) - 100, (args.batch, args.tokens), generator=gen)
    trainers = {}
    for arm, (weights, autocast) in {
        "fp32 weights": (torch.float32, False),
        "fp32 master + bf16 autocast": (torch.float32, True),
        "pure bf16 weights": (torch.bfloat16, False),
    }.items():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=weights)
        model.train()
        trainers[arm] = (model, autocast, torch.optim.AdamW(model.parameters(), lr=1e-5))
    problems = load_benchmark("gsm8k", limit=args.prompts)
    engines = {
        name: HFEngine.from_model(args.model, dtype=name, batch_size=args.prompts) for name in ("float32", "bfloat16")
    }
    prompts = [P.solve_prompt(tok, p.problem) for p in problems]

    from sftadapt.engines import Sampling

    params = Sampling(n=1, temperature=0.0, max_new_tokens=args.new_tokens)
    res: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for name, dt in (("matmul fp32 GFLOPS", torch.float32), ("matmul bf16 GFLOPS", torch.bfloat16)):
            res.setdefault(name, []).append(matmul_gflops(dt))
        for arm, (model, autocast, opt) in trainers.items():
            sft_step_seconds(model, batch, autocast, opt) if r == 0 else None  # first step: allocator warm-up
            res.setdefault(f"SFT step s, {arm}", []).append(sft_step_seconds(model, batch, autocast, opt))
        for name, engine in engines.items():
            start = time.perf_counter()
            outs = engine.generate(prompts, params)
            tokens = sum(len(c.token_ids) + (c.finish_reason == "stop") for o in outs for c in o)
            res.setdefault(f"generate tok/s, {name}", []).append(tokens / (time.perf_counter() - start))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.3g}" for k, v in res.items()), flush=True)

    med = {k: statistics.median(v) for k, v in res.items()}
    print(
        f"\nmodel {args.model}; SFT batch {args.batch} x {args.tokens} tokens; generation {args.prompts} prompts x "
        f"{args.new_tokens} greedy tokens in one batch; medians of {args.rounds} rounds\n"
    )
    print("| measure | value (median) |\n|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3g} |")
    step32 = med["SFT step s, fp32 weights"]
    print(f"| **bf16/fp32 matmul speed** | **{med['matmul bf16 GFLOPS'] / med['matmul fp32 GFLOPS']:.2f}x** |")
    print(
        f"| **SFT step speed-up, autocast vs fp32** | **{step32 / med['SFT step s, fp32 master + bf16 autocast']:.2f}x** |"
    )
    print(f"| **SFT step speed-up, pure bf16 vs fp32** | **{step32 / med['SFT step s, pure bf16 weights']:.2f}x** |")
    print(
        f"| **generation speed-up, bf16 vs fp32** | "
        f"**{med['generate tok/s, bfloat16'] / med['generate tok/s, float32']:.2f}x** |"
    )


if __name__ == "__main__":
    main()
