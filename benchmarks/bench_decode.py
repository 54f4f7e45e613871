"""The hf engine's decoder (engines/decode.py, drops finished rows) against `model.generate` (keeps them).

    python benchmarks/bench_decode.py                                   # SmolLM2-135M, the recorded benchmark
    python benchmarks/bench_decode.py --model runs/quickstart/warmup    # a run's warmed-up target instead
    python benchmarks/bench_decode.py --model tiny-random --rounds 1 --max-new-tokens 8   # a smoke check

Workloads, as the quickstart runs them (configs/quickstart.yaml), in the dtype evaluation uses (float32):
- `eval`: 12 synthetic_id + 12 synthetic_ood test problems in one batch, greedy, 112 new tokens;
- `sample`: the same 24 prompts x 2 samples at temperature 1.0, 96 new tokens (the rewrite's self-samples).
Both decoders get the same left-padded batch and the same per-row seeded sampler, in alternating rounds so that
load from elsewhere falls on both alike. Reported per workload: median seconds of each, the speed-up, the rows
each decoded in total (row-steps; `generate` decodes every row until the batch's longest ends) and how many rows
came out token-identical (float32: a batch of another size may round a near-tie the other way; the float64 test
in tests/test_engine.py requires identity).
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

WORKLOADS = {"eval": {"n": 1, "temperature": 0.0}, "sample": {"n": 2, "temperature": 1.0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=12, help="problems per benchmark")
    ap.add_argument("--max-new-tokens", type=int, default=112, help="eval's; the sample workload uses 6/7 of it")
    ap.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = ap.parse_args()

    import torch

    from sftadapt.data import prompts as P
    from sftadapt.data.synthetic import benchmark
    from sftadapt.engines.decode import SeededSampler, decode, decode_with_generate
    from sftadapt.engines.hf import _left_pad
    from sftadapt.runtime.models import load_model, load_tokenizer
    from sftadapt.runtime.precision import capability, cpu_model_name

    print(f"# {datetime.date.today()} · {cpu_model_name()} · {capability()}", flush=True)
    tok = load_tokenizer(args.model)
    model = load_model(args.model, dtype="float32")
    model.eval()
    problems = [p.problem for name in ("synthetic_id", "synthetic_ood") for p in benchmark(name)[: args.limit]]
    eos = P.end_token_id(tok)
    decoders = {"model.generate": decode_with_generate, "sftadapt decode": decode}
    results: dict[str, dict] = {}
    for workload, spec in WORKLOADS.items():
        ids = [P.prompt_token_ids(tok, P.solve_prompt(tok, q)) for q in problems for _ in range(spec["n"])]
        ids.sort(key=len, reverse=True)  # as the engine batches them
        input_ids, attention = _left_pad(ids, eos, "cpu")
        limit = args.max_new_tokens if workload == "eval" else args.max_new_tokens * 6 // 7
        times: dict[str, list[float]] = {name: [] for name in decoders}
        outputs: dict[str, list[list[int]]] = {}
        for r in range(args.rounds):
            for name, fn in decoders.items():
                gens = [torch.Generator().manual_seed(1000 + k) for k in range(len(ids))]
                sampler = SeededSampler(gens, spec["temperature"], 1.0)
                start = time.perf_counter()
                outputs[name], _ = fn(model, input_ids, attention, sampler, limit, eos)
                times[name].append(time.perf_counter() - start)
                print(f"{workload} round {r} {name}: {times[name][-1]:.2f} s", flush=True)
        lengths = [len(t) for t in outputs["sftadapt decode"]]
        same = sum(a == b for a, b in zip(outputs["sftadapt decode"], outputs["model.generate"]))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        results[workload] = {
            "rows": len(ids),
            "max_new_tokens": limit,
            "seconds": times,
            "median_s": med,
            "speedup": med["model.generate"] / med["sftadapt decode"],
            "row_steps": {"model.generate": len(ids) * max(lengths), "sftadapt decode": sum(lengths)},
            "mean_tokens": statistics.mean(lengths),
            "identical_rows": same,
        }

    print(f"\nmodel {args.model}; float32; {args.rounds} alternating rounds\n")
    print(
        "| workload | rows x limit | model.generate s | sftadapt decode s | speed-up | row-steps generate / decode "
        "| identical rows |\n|---|---|---|---|---|---|---|"
    )
    for workload, r in results.items():
        steps = r["row_steps"]
        print(
            f"| {workload} | {r['rows']} x {r['max_new_tokens']} | {r['median_s']['model.generate']:.2f} | "
            f"{r['median_s']['sftadapt decode']:.2f} | **{r['speedup']:.2f}x** | "
            f"{steps['model.generate']} / {steps['sftadapt decode']} | {r['identical_rows']}/{r['rows']} |"
        )
    if args.json:
        record = {"date": str(datetime.date.today()), "cpu": cpu_model_name(), "capability": capability()}
        args.json.write_text(json.dumps({**record, "model": args.model, "results": results}, indent=1))


if __name__ == "__main__":
    main()
