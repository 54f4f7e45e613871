"""Offline on every entry point: `sftadapt ...` and `python -m sftadapt.train`, run as subprocesses under a
guard (tests/hostile/netguard) that logs and refuses any outbound lookup or connection, with HF_HUB_OFFLINE=0
already in the environment. Nothing may try the network unless --online is given."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GUARD = Path(__file__).resolve().parent / "hostile" / "netguard"


def _run(args, tmp_path, online_env="0", timeout=300):
    log = tmp_path / "net.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(GUARD), os.environ.get("PYTHONPATH", "")]),
        "SFTADAPT_NETGUARD_LOG": str(log),
        "HF_HUB_OFFLINE": online_env,
        "HF_DATASETS_OFFLINE": online_env,
        "TRANSFORMERS_OFFLINE": online_env,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path
    )
    attempts = log.read_text().splitlines() if log.exists() else []
    return proc, attempts


def _data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}) + "\n")
    return path


def test_the_guard_itself_catches_an_outbound_attempt(tmp_path):
    proc, attempts = _run(
        [
            "-c",
            "import socket\ntry:\n socket.create_connection(('example.org', 80), 1)\nexcept OSError as e:\n print(e)",
        ],
        tmp_path,
    )
    assert "netguard" in proc.stdout and attempts and "example.org" in attempts[0]


def test_cli_with_hub_offline_0_inherited_stays_offline(tmp_path):
    data = _data(tmp_path)
    proc, attempts = _run(
        [
            "-m",
            "sftadapt.cli",
            "sample",
            "--model",
            "someorg/not-a-local-model",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o"),
        ],
        tmp_path,
    )
    assert attempts == [], attempts
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "offline" in proc.stderr
    proc, attempts = _run(
        [
            "-m",
            "sftadapt.cli",
            "sample",
            "--model",
            "tiny-random",
            "--data",
            "hf:someorg/some-dataset",
            "--out",
            str(tmp_path / "o2"),
        ],
        tmp_path,
    )
    assert attempts == [], attempts
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "hf" in proc.stderr.lower()


def test_python_m_sftadapt_train_stays_offline(tmp_path):
    data = _data(tmp_path)
    proc, attempts = _run(
        [
            "-m",
            "sftadapt.train",
            "--model",
            "someorg/not-a-local-model",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "t"),
        ],
        tmp_path,
    )
    assert attempts == [], attempts
    assert proc.returncode != 0 and "offline" in (proc.stderr + proc.stdout)


@pytest.mark.parametrize("entry", ["cli", "train"])
def test_entry_points_run_the_tiny_model_with_no_outbound_attempt(tmp_path, entry):
    data = _data(tmp_path)
    if entry == "cli":
        args = [
            "-m",
            "sftadapt.cli",
            "-q",
            "sample",
            "--model",
            "tiny-random",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o"),
            "--max-new-tokens",
            "4",
            "--dtype",
            "float32",
        ]
    else:
        args = [
            "-m",
            "sftadapt.train",
            "--model",
            "tiny-random",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "t"),
            "--set",
            "max_steps=1",
            "--set",
            "batch_size=1",
            "--set",
            "grad_accum=1",
        ]
    proc, attempts = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert attempts == [], attempts
