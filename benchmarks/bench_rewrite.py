"""How much of the rewriting stage's wall time is spent outside the engine (target: overhead <= 15%).

Runs `sftadapt.adapt.rewrite.rewrite` (Mind the Gap, default options) on the first N problems of GSM8K train from the
shared data, in a fresh output folder, with an engine and a verifier built beforehand (model loading is timed
and reported apart: it is not part of the stage). Wall time of the stage is compared with the time inside
`engine.generate` / `engine.score` (the engine's own counters); the rest is split into verification (timed
around `verify_many`) and everything else (prompt rendering, policy, shard I/O, the summary).

    python benchmarks/bench_rewrite.py --model smollm2-135m --problems 64                 # the real benchmark
    python benchmarks/bench_rewrite.py --model tiny-random --problems 4 --max-new-tokens 16 --no-record   # smoke

With `--record` (the default) the result is written to benchmarks/results/bench_rewrite-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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
    parser.add_argument(
        "--record",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write benchmarks/results/bench_rewrite-<model>.json",
    )
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from sftadapt.adapt.rewrite import RewriteConfig, rewrite
    from sftadapt.engines import make_engine
    from sftadapt.verify import Verifier

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_rewrite-"))
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
    engine = make_engine(args.model, dtype=args.dtype, batch_size=args.batch_size)
    load_seconds = time.perf_counter() - load_start
    try:
        start = time.perf_counter()
        summary = rewrite(cfg, engine=engine, verifier=verifier, progress=True, print_summary=True)
        wall = time.perf_counter() - start
    finally:
        engine.close()
        verifier.inner.close()
    engine_s = engine.stats["generate_seconds"] + engine.stats["score_seconds"]
    result = {
        "model": args.model,
        "data": args.data,
        "problems": summary["problems"],
        "dtype": args.dtype,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_seconds": round(load_seconds, 2),
        "stage_wall_seconds": round(wall, 2),
        "engine_seconds": round(engine_s, 2),
        "generate_seconds": round(engine.stats["generate_seconds"], 2),
        "score_seconds": round(engine.stats["score_seconds"], 2),
        "verify_seconds": round(verifier.seconds, 2),
        "verified_items": verifier.items,
        "other_seconds": round(wall - engine_s - verifier.seconds, 2),
        "overhead_fraction": round((wall - engine_s) / wall, 4),
        "generated_tokens": int(engine.stats["generated_tokens"]),
        "scored_tokens": int(engine.stats["scored_tokens"]),
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
    if args.record:
        path = Path(__file__).resolve().parent / "results" / f"bench_rewrite-{args.model.replace('/', '_')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"recorded -> {path}")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
