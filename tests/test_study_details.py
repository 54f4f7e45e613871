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


def test_a_selected_seed_shows_the_selection_then_the_fresh_measurement(tmp_path):
    seed = _seed(tmp_path, correct=[1, 2, 0], steps=[3, 4, 4])
    (seed / "data" / "expert.jsonl").rename(seed / "data" / "pool.jsonl")  # a selected seed's steps live here
    (seed / "select").mkdir()
    record = {
        "pool": 9,
        "k": 4,
        "band": [0.25, 0.5],
        "in_band": 4,
        "chosen": 3,
        "outside_band": 0,
        "pool_histogram": {"0/4": 3, "1/4": 3, "2/4": 1, "3/4": 1, "4/4": 1},
        "chosen_histogram": {"0/4": 0, "1/4": 2, "2/4": 1, "3/4": 0, "4/4": 0},
    }
    (seed / "select" / "selection.json").write_text(json.dumps(record))
    text = "\n".join(details.self_pass(["seed 0"], [seed]))
    assert "(9 candidates, k = 4, band [0.25, 0.5]): pool 0/4: 3, 1/4: 3, 2/4: 1, 3/4: 1, 4/4: 1; 4 in the band" in text
    assert "chosen 3 (0/4: 0, 1/4: 2, 2/4: 1, 3/4: 0, 4/4: 0; 0 outside the band)" in text
    assert text.index("selection") < text.index("pass rate in [0.2, 0.6]: 2 (67%)")  # then the rewrite's own
    assert "| 4 | 2 | 0.25 | 1 (50%) |" in text  # steps read from the pool
