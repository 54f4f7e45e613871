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
def tiny_engine():
    from sftadapt.engines import make_engine

    engine = make_engine("tiny-random", dtype="float32", batch_size=8)
    yield engine
    engine.close()
