"""How much of the rewriting stage's wall time is spent outside the engine (target: overhead <= 15%).

Runs `sftadapt.adapt.rewrite.rewrite` (Mind the Gap, default options) on the first N problems of GSM8K train from the
shared data, in a fresh output folder, with an engine and a verifier built beforehand (model loading is timed
and reported apart: it is not part of the stage). Wall time of the stage is compared with the time inside
`engine.generate` / `engine.score` (the engine's own counters); the rest is split into verification (timed
around `verify_many`) and everything else (prompt rendering, policy, shard I/O, the summary).

    python benchmarks/bench_rewrite.py --model smollm2-135m --problems 64                 # the real benchmark
    python benchmarks/bench_rewrite.py --model tiny-random --problems 4 --max-new-tokens 16 --no-record   # smoke

`--engines hf,openai,vllm` runs the same stage once per backend, side by side, on fresh folders (`openai` against
a `--server` started here from tests/servers/local_server.py: `vllm` serves and scores; `llama-server` samples
and the stage scores with hf; the `vllm` arm needs .venv-vllm, `make vllm`):

    PYTHONPATH=. .venv-vllm/bin/python benchmarks/bench_rewrite.py --engines hf,openai,vllm --server vllm \
        --dtype float32 --max-new-tokens 256 --no-record --json runs/bench_rewrite_engines.json

With `--record` (the default) the result is written to benchmarks/results/bench_rewrite-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


class TimedVerifier:
    """Wraps a Verifier and adds up the seconds spent in verify_many."""

    def __init__(self, inner):
        self.inner, self.seconds, self.items = inner, 0.0, 0

    def verify_many(self, golds, texts):
        start = time.perf_counter()
        try:
            return self.inner.verify_many(golds, texts)
        finally:
            self.seconds += time.perf_counter() - start
            self.items += len(texts)


def run_arm(args, arm: str) -> dict:
    """The rewrite stage once on `arm`'s backend, in a fresh folder; its timings and outcome."""
    import torch

    from sftadapt.adapt.rewrite import RewriteConfig, rewrite
    from sftadapt.engines import EngineConfig, make_engine
    from sftadapt.runtime.precision import cpu_model_name
    from sftadapt.verify import Verifier

    out = Path(
        args.out + (f"-{arm}" if "," in args.engines else "") if args.out else tempfile.mkdtemp(prefix="bench_rewrite-")
    )
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: no shards to resume from
    cfg = RewriteConfig(
        model=args.model,
        data=args.data,
        out=str(out),
        limit=args.problems,
        max_new_tokens=args.max_new_tokens,
        dtype=args.dtype,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
    )
    load_start = time.perf_counter()
    verifier = TimedVerifier(Verifier(workers=cfg.verifier_workers, timeout=cfg.verifier_timeout))
    server, score_engine = None, None
    if arm == "openai":
        sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # the test servers live there
        from servers.local_server import SERVER_KINDS

        from sftadapt.engines.openai import ECHO_SERVERS

        server = SERVER_KINDS[args.server](args.model, n_ctx=4096).start()
        # vLLM batches what is in flight: let it see a whole shard's requests; llama.cpp's server has 4 slots
        concurrency = 64 if args.server == "vllm" else 4
        engine = make_engine(args.model, EngineConfig("openai", server.engine_options(concurrency=concurrency)))
        if args.server not in ECHO_SERVERS:  # a server that cannot score: hf scores, as score_engine would
            score_engine = make_engine(args.model, dtype=args.dtype, batch_size=args.batch_size)
    elif arm == "vllm":
        engine = make_engine(args.model, EngineConfig("vllm", {"enforce_eager": True, "seed": 0}), dtype=args.dtype)
    else:
        engine = make_engine(args.model, dtype=args.dtype, batch_size=args.batch_size)
    load_seconds = time.perf_counter() - load_start
    try:
        start = time.perf_counter()
        summary = rewrite(cfg, engine=engine, scorer=score_engine, verifier=verifier, progress=True, print_summary=True)
        wall = time.perf_counter() - start
    finally:
        engine.close()
        verifier.inner.close()
        if score_engine is not None:
            score_engine.close()
        if server is not None:
            server.stop()
    scorer = score_engine or engine
    engine_s = engine.stats["generate_seconds"] + scorer.stats["score_seconds"]
    result = {
        "engine": arm + (f" ({args.server})" if arm == "openai" else ""),
        "model": args.model,
        "data": args.data,
        "problems": summary["problems"],
        "dtype": args.dtype,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model_name(),
        "load_seconds": round(load_seconds, 2),
        "stage_wall_seconds": round(wall, 2),
        "engine_seconds": round(engine_s, 2),
        "generate_seconds": round(engine.stats["generate_seconds"], 2),
        "score_seconds": round(scorer.stats["score_seconds"], 2),
        "verify_seconds": round(verifier.seconds, 2),
        "verified_items": verifier.items,
        "other_seconds": round(wall - engine_s - verifier.seconds, 2),
        "overhead_fraction": round((wall - engine_s) / wall, 4),
        "generated_tokens": int(engine.stats["generated_tokens"]),
        "scored_tokens": int(scorer.stats["scored_tokens"]),
        "rows_per_origin": {o: v["rows"] for o, v in summary["origins"].items()},
        "gap": summary["gap"],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(result, indent=2))
    verdict = "OK" if result["overhead_fraction"] <= 0.15 else "OVER TARGET"
    print(
        f"stage {wall:.1f} s, engine {engine_s:.1f} s, verify {verifier.seconds:.1f} s, other "
        f"{result['other_seconds']:.1f} s -> overhead {100 * result['overhead_fraction']:.1f}% ({verdict}, "
        "target <= 15%)"
    )
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="gsm8k_train")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--out", default=None, help="output folder of the stage (default: a temporary folder)")
    parser.add_argument("--engines", default="hf", help="backends to run the stage on, in turn: hf,openai,vllm")
    parser.add_argument(
        "--server", default="vllm", help="the openai arm's local server kind (tests/servers/local_server.py)"
    )
    parser.add_argument("--json", default=None, help="also write every arm's result to this file")
    parser.add_argument(
        "--record",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write benchmarks/results/bench_rewrite-<model>.json",
    )
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    results = []
    for arm in args.engines.split(","):
        results.append(run_arm(args, arm))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if len(results) > 1:
        base = results[0]["stage_wall_seconds"]
        print("\n| engine | stage wall s | generate s | score s | generated tokens | rows self/guided/expert | gap |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            rows = "/".join(str(r["rows_per_origin"].get(o, 0)) for o in ("self", "guided", "expert"))
            print(
                f"| {r['engine']} | {r['stage_wall_seconds']:.1f} ({r['stage_wall_seconds'] / base:.2f}x) | "
                f"{r['generate_seconds']:.1f} | {r['score_seconds']:.1f} | {r['generated_tokens']} | {rows} | "
                f"{r['gap']} |"
            )
    result = results[0]
    if args.record:
        path = Path(__file__).resolve().parent / "results" / f"bench_rewrite-{args.model.replace('/', '_')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"recorded -> {path}")


if __name__ == "__main__":
    main()
