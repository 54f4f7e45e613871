"""Generation/scoring engines behind one two-method protocol (see base.py). Stages never import a backend
directly: they call `make_engine(...)`, which picks the backend by name."""

from sftadapt.engines.base import Completion, Engine, Sampling, TokenScores, derive_seed

__all__ = ["Completion", "Engine", "Sampling", "TokenScores", "derive_seed", "make_engine"]


def make_engine(model: str, backend: str = "hf", **kwargs) -> Engine:
    """Build an engine for `model` (an HF id, a local path, `smollm2-135m` or `tiny-random`)."""
    if backend == "hf":
        from sftadapt.engines.hf import HFEngine

        return HFEngine.from_model(model, **kwargs)
    raise ValueError(f"unknown engine backend '{backend}': choose 'hf' (vllm and openai are not built yet)")
