"""Every paper config dry-runs clean against the papers' real model files (tests/paper_models/, in a local HF hub
cache under their hub ids): every stage's options resolve, and each generation stage reports the context, end
ids and prompt format its model's files give, with nothing generated or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sftadapt.cli import app

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs" / "paper").glob("*.yaml"))
EXPECT = {
    "mind_the_gap_qwen2.5-math-7b.yaml": (
        "Qwen/Qwen2.5-Math-7B: context 4096, ends <|endoftext|> (151643), prompt: chat template (the model's own); "
        "max_new_tokens 4096: a prompt of more than 0 tokens is clamped"
    ),
    "mind_the_gap_llama-3.1-8b-instruct.yaml": (
        "meta-llama/Llama-3.1-8B-Instruct: context 131072, ends <|end_of_text|> (128001), <|eom_id|> (128008), "
        "<|eot_id|> (128009), prompt: chat template (the model's own)"
    ),
    "dart_qwen3-0.6b.yaml": (
        "Qwen/Qwen3-0.6B: context 40960, ends <|im_end|> (151645), <|endoftext|> (151643), "
        "prompt: chat template (the model's own)"
    ),
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_paper_config_dry_runs_against_its_models_real_files(paper_models, path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(paper_models.hub_cache()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SFTADAPT_QUIET", raising=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run", "--set", f"out={out}"])
    assert result.exit_code == 0, result.output
    assert EXPECT[path.name] in result.output
    assert not out.exists()  # a dry run writes nothing
