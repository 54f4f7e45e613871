"""Models (issue 14): a hub id already in the local HF cache works offline (a cache entry built here in
huggingface_hub's own layout — blobs, refs/main, snapshots/<commit> with symlinks — from the tiny model's files);
`--online` anywhere on the command line; offline errors say how to go online; a missing local folder says
`no such folder: PATH`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from sftadapt.cli import app

runner = CliRunner()


def fake_hub_cache(cache: Path, repo_id: str) -> Path:
    """`repo_id` in a hub cache at `cache`, laid out as huggingface_hub writes it; returns the snapshot folder."""
    from sftadapt.runtime.models import resolve_model

    source = Path(resolve_model("tiny-random"))
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in source.iterdir():
        if f.is_file():
            data = f.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            os.symlink(os.path.relpath(blob, snapshot), snapshot / f.name)
    return snapshot


def _cli(args, tmp_path, **env):
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "sftadapt.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=full,
        timeout=600,
    )


def test_a_cached_hub_model_works_offline(tmp_path):
    snapshot = fake_hub_cache(tmp_path / "hub", "someorg/tiny-cached")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"problem": "What is 1+1?", "answer": "2"}) + "\n")
    proc = _cli(
        [
            "-q",
            "sample",
            "--model",
            "someorg/tiny-cached",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o"),
            "--max-new-tokens",
            "2",
            "--dtype",
            "float32",
        ],
        tmp_path,
        HF_HUB_CACHE=str(tmp_path / "hub"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model"] == "someorg/tiny-cached"
    # the same id without the cache entry: refused offline, and the message says how to go online
    proc = _cli(
        ["sample", "--model", "someorg/tiny-cached", "--data", str(data), "--out", str(tmp_path / "o2")],
        tmp_path,
        HF_HUB_CACHE=str(tmp_path / "empty-hub"),
    )
    assert proc.returncode == 2 and "pass --online" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot.is_dir()


def test_a_missing_local_folder_is_no_such_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for spec in ("runs/typo", "./nope", "a/b/c"):
        result = runner.invoke(app, ["sample", "--model", spec, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and f"no such folder: {spec}" in result.output, result.output
        assert "hub is offline" not in result.output


def test_online_is_accepted_anywhere_on_the_command_line():
    for args in (["--online", "env"], ["env", "--online"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "hub: online" in result.output, (args, result.output)
    result = runner.invoke(app, ["env"])
    assert "hub: offline" in result.output  # and it is not sticky
