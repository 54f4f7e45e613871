"""benchmarks/study_details.py's self pass-rate section: the histogram of how many of its k self samples the
warmed-up target got right per training problem, the share in [0.2, 0.6], and the same by synthetic steps."""

import importlib.util
import json
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "study_details.py"
_spec = importlib.util.spec_from_file_location("study_details", _PATH)
details = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(details)


def _seed(tmp_path: Path, correct: list[int], steps: list[int]) -> Path:
    seed = tmp_path / "seed-0"
    (seed / "data").mkdir(parents=True)
    (seed / "data" / "expert.jsonl").write_text(
        "".join(json.dumps({"id": f"p{i}", "meta": {"steps": s}}) + "\n" for i, s in enumerate(steps))
    )
    shards = seed / "rewrite" / "shards" / "self"
    shards.mkdir(parents=True)
    rows = [
        {"problem_id": f"p{i}", "attempts": [{"verdict": "correct" if j < c else "wrong"} for j in range(4)]}
        for i, c in enumerate(correct)
    ]
    (shards / "shard-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return seed


def test_the_histogram_the_middle_share_and_the_steps_table(tmp_path):
    seed = _seed(tmp_path, correct=[0, 1, 2, 2, 4], steps=[3, 3, 2, 2, 1])
    text = "\n".join(details.self_pass(["seed 0"], [seed]))
    assert "0/4: 1, 1/4: 1, 2/4: 2, 3/4: 0, 4/4: 1" in text
    assert "pass rate in [0.2, 0.6]: 3 (60%)" in text  # 1/4 and the two 2/4
    assert "solved at least once: 4 (80%)" in text and "mean pass rate 0.45" in text
    assert "| 3 | 2 | 0.12 | 1 (50%) |" in text and "| 1 | 1 | 1.00 | 1 (100%) |" in text


def test_a_seed_without_a_rewrite_adds_nothing(tmp_path):
    (tmp_path / "seed-0").mkdir()
    assert details.self_pass(["seed 0"], [tmp_path / "seed-0"])[-1] == ""
