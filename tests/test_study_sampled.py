"""benchmarks/study_sampled.py: it re-evaluates the models the study's eval stages evaluated, in the study's order."""

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "study_sampled.py"
_SPEC = importlib.util.spec_from_file_location("study_sampled", _PATH)
sampled = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sampled)


def _eval(seed: Path, arm: str, status: str = "done") -> None:
    options = {
        "model": f"/runs/{arm}",
        "benchmarks": ["synthetic_id", "synthetic_ood"],
        "dtype": "float32",
        "protocol": {"name": "quick", "max_new_tokens": 192},
    }
    (seed / f"eval_{arm}").mkdir(parents=True)
    (seed / f"eval_{arm}" / "stage.json").write_text(json.dumps({"status": status, "spec": {"options": options}}))


def test_arms_in_the_study_order_base_first_unfinished_left_out(tmp_path):
    seed = tmp_path / "seed-1"
    for arm in ("pr_sft", "sft", "base", "dart_sft"):
        _eval(seed, arm)
    _eval(seed, "direct_rl", status="running")
    (tmp_path / "run_config.json").write_text(json.dumps({"arms": ["base", "sft", "dart_sft", "pr_sft", "direct_rl"]}))
    stages = sampled.eval_stages(seed)
    assert list(stages) == ["base", "sft", "dart_sft", "pr_sft"]
    assert stages["dart_sft"]["model"] == "/runs/dart_sft"


def test_a_folder_without_a_finished_base_eval_is_refused(tmp_path):
    _eval(tmp_path, "sft")
    with pytest.raises(SystemExit, match="no finished eval_base"):
        sampled.eval_stages(tmp_path)


def test_each_arm_is_evaluated_with_its_own_model_dtype_and_token_limit(tmp_path, monkeypatch):
    _eval(tmp_path, "base")
    _eval(tmp_path, "sft")
    calls = []
    monkeypatch.setattr(sampled.subprocess, "run", lambda cmd, check: calls.append(cmd))
    sampled.main([str(tmp_path), str(tmp_path / "out"), "--n", "4", "--limit", "10"])
    evals, reports = calls[:2], calls[2:]
    assert [c[c.index("--model") + 1] for c in evals] == ["/runs/base", "/runs/sft"]
    for cmd in evals:
        assert cmd[1] == "eval" and "n=4" in cmd and "temperature=1.0" in cmd and "max_new_tokens=192" in cmd
        assert cmd[cmd.index("--dtype") + 1] == "float32" and cmd[cmd.index("--limit") + 1] == "10"
    assert [c[c.index("--metric") + 1] for c in reports] == ["avg", "pass@4"]
    assert all(c[1] == "report" and c[c.index("--baseline") + 1] == "base" for c in reports)
    calls.clear()  # --dtype: every arm in the asked dtype instead of its stage's own
    sampled.main([str(tmp_path), str(tmp_path / "out"), "--dtype", "bfloat16"])
    assert [c[c.index("--dtype") + 1] for c in calls[:2]] == ["bfloat16", "bfloat16"]
