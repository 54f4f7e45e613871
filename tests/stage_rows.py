"""The rewrite and eval stages run on a given engine, their rows read back without timing fields: what the ray
backend's tests compare between replicas and one engine (tests/test_engine_ray.py, tests/test_engine_vllm.py)."""

from __future__ import annotations

import json

from fakes import BoxedVerifier

from sftadapt.adapt.rewrite import RewriteConfig, rewrite
from sftadapt.config import load_config
from sftadapt.eval.evaluate import evaluate
from sftadapt.eval.protocol import load_protocol
from sftadapt.eval.stage import EvalConfig

TIMING = ("generate_s", "verify_s", "seconds", "wall_seconds")


def rows(path) -> list[dict]:
    """The file's rows without their timing fields (anything else must match)."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMING}
        return value

    return [strip(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def rewrite_rows(engine, out, model: str, problems, batch: int, max_new_tokens: int) -> list[dict]:
    """Greedy rewrite (2 own samples, 2 guided tries) of `problems`: its train.jsonl rows."""
    base = {
        "model": model,
        "out": str(out),
        "k": 2,
        "guided_tries": 2,
        "temperature": 0.0,
        "guided_temperature": 0.0,
        "max_new_tokens": max_new_tokens,
        "dtype": "float32",
        "shard_size": 4,
        "batch_size": batch,
    }
    cfg = load_config(RewriteConfig, None, None, base=base)
    rewrite(cfg, engine=engine, verifier=BoxedVerifier(), problems=problems, progress=False, print_summary=False)
    return rows(out / "train.jsonl")


def eval_rows(engine, out, model: str, problems, batch: int, overrides=()) -> list[dict]:
    """The quick protocol (plus `overrides`) on `problems` as one benchmark `toy`: its attempts.jsonl rows."""
    protocol = load_protocol("quick", list(overrides))
    fields = {k: getattr(protocol, k) for k in ("n", "temperature", "top_p", "max_new_tokens", "seed")}
    cfg = EvalConfig(model=model, out=str(out), protocol="quick", dtype="float32", batch_size=batch, **fields)
    evaluate(
        cfg,
        problems={"toy": problems},
        engine=engine,
        verifier=BoxedVerifier(),
        shard_problems=8,
        progress=False,
        print_summary=False,
        n_boot=20,
    )
    return rows(out / "toy" / "attempts.jsonl")
