"""runtime/memory.py: freed large blocks stay in the process, so re-allocating them costs no page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sftadapt.runtime.memory import glibc

# A fresh process per arm: the malloc settings last for the life of a process. It allocates and touches a 64 MiB
# block twice (freeing it in between) and reports the minor page faults of the second round only.
PROBE = """
import ctypes, json, resource
from sftadapt.runtime.memory import glibc, keep_freed_memory
setting = keep_freed_memory()
libc = glibc()
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
block = libc.malloc(size); ctypes.memset(block, 1, size); libc.free(block)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(size); ctypes.memset(block, 1, size); libc.free(block)
print(json.dumps({"setting": setting, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def probe(malloc: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SFTADAPT_MALLOC"}
    if malloc is not None:
        env["SFTADAPT_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(glibc() is None, reason="the settings are glibc's; other C libraries are left alone")
def test_a_freed_block_is_reused_without_page_faults_and_the_opt_out_restores_the_default():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    kept = probe(None)
    assert kept["setting"].startswith("kept"), kept
    assert kept["faults"] < pages // 20, kept  # the block came back from the heap, already mapped
    default = probe("system")
    assert default["setting"].startswith("system"), default
    # glibc's default serves 64 MiB with a fresh mmap: every page faults again (the defect the module fixes)
    assert default["faults"] > pages // 2, default


def test_the_cli_applies_it_at_start_up(monkeypatch):
    from typer.testing import CliRunner

    from sftadapt import cli
    from sftadapt.runtime import memory

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or "kept")
    assert CliRunner().invoke(cli.app, ["config", "show", "train"]).exit_code == 0
    assert calls == [1]


@pytest.mark.skipif(glibc() is None, reason="the settings are glibc's; other C libraries are left alone")
def test_env_reports_the_setting_and_the_opt_out(monkeypatch):
    from typer.testing import CliRunner

    from sftadapt import cli

    result = CliRunner().invoke(cli.app, ["env"])
    assert result.exit_code == 0 and "malloc (SFTADAPT_MALLOC): kept" in result.output, result.output
    monkeypatch.setenv("SFTADAPT_MALLOC", "system")  # glibc's settings are not undone; only new processes obey
    result = CliRunner().invoke(cli.app, ["env"])
    assert "malloc (SFTADAPT_MALLOC): system (SFTADAPT_MALLOC=system)" in result.output, result.output
