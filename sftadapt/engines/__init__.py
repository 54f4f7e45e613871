"""Generation/scoring engines behind one contract (`Engine` in base.py). Stages never import a backend
directly: they call `make_engine(model, cfg.engine, ...)`, which builds the backend their `EngineConfig`
names. Adding a backend = one module with a `from_config(model, options, **common)` constructor + one row in
`BACKENDS` (base.py, beside the `EngineConfig` that names one; docs/architecture.md)."""

from __future__ import annotations

import importlib
import os
import sys

from sftadapt.engines.base import (
    BACKENDS,
    Completion,
    Engine,
    EngineConfig,
    RequestRejected,
    Sampling,
    TokenScores,
    derive_seed,
)

__all__ = [
    "BACKENDS",
    "Completion",
    "Engine",
    "EngineConfig",
    "RequestRejected",
    "Sampling",
    "TokenScores",
    "derive_seed",
    "make_engine",
]


def make_engine(model: str, engine: EngineConfig | str | None = None, **common) -> Engine:
    """Build an engine for `model` (an HF id, a local path, `smollm2-135m` or `tiny-random`).

    `engine` is the stage's `EngineConfig` (or a backend name); `common` are the options every backend takes
    from the stage (dtype, score_dtype, batch_size)."""
    cfg = engine if isinstance(engine, EngineConfig) else EngineConfig(backend=engine or "hf")
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown engine backend '{cfg.backend}': choose one of {', '.join(BACKENDS)}")
    from sftadapt.engines import facts

    options = dict(cfg.options)
    seeded = facts.seeded_option(options, cfg.backend)
    module, cls = BACKENDS[cfg.backend].split(":")
    engine = getattr(importlib.import_module(module), cls).from_config(model, options, **common)
    engine.seeded = seeded
    if os.environ.get("SFTADAPT_QUIET") != "1":
        print(facts.line(engine, cfg.backend), file=sys.stderr, flush=True)
    return engine
