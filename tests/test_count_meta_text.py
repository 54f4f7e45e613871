"""benchmarks/count_meta_text.py: the test answers of each evaluated arm that carry meta text, counted from a seed
folder and from the same seed packed by benchmarks/study_archive.py, with the problem text as context."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sftadapt import arms
from sftadapt.data.sources import load_benchmark

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


count_mod = _load("count_meta_text")
archive_mod = _load("study_archive")

ECHO = "Rewriting the problem in your own words can be a bit challenging, so I'll break it down step by step."
HEADING = "Rewrite the solution: "


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _answer(problem, text: str, verdict: str) -> dict:
    # the fields evaluate.py writes (Attempt: problem_id, text, verdict; meta.benchmark)
    return {"problem_id": problem.id, "stage": "eval", "index": 0, "text": text, "verdict": verdict,
            "meta": {"benchmark": "synthetic_id"}}  # fmt: skip


def _seed(root: Path, extra: dict[str, str] | None = None) -> tuple[Path, list]:
    """A finished seed folder: its expert set, one DART training row that echoes the prompt and one faithful, and
    the answers of eval_base (faithful) and eval_dart_sft (two with meta text, one faithful) on synthetic_id."""
    problems = load_benchmark("synthetic_id", 3)
    p0, p1, p2 = problems
    expert = {"id": "e1", "problem": "Ann has 3 pens and buys 4 more. How many pens?", "answer": "7"}
    expert["solution"] = "Ann has 3 + 4 = 7 pens. So the answer is \\boxed{7}."
    train = [
        {"id": "e1", "problem": expert["problem"], "answer": "7", "origin": "mapped", "meta": {"problem_id": "e1"},
         "response": f"{HEADING}Ann has 3 + 4 = 7 pens. So the answer is \\boxed{{7}}."},
        {"id": "e1", "problem": expert["problem"], "answer": "7", "origin": "mapped", "meta": {"problem_id": "e1"},
         "response": "She has 3 + 4 = 7 pens. So the answer is \\boxed{7}."},
    ]  # fmt: skip
    stage = {"status": "done", "hash": "h", "spec": {"options": {"benchmarks": ["synthetic_id"], "limit": 3}}}
    files = {
        "data/stage.json": json.dumps({"status": "done", "hash": "d"}),
        "data/expert.jsonl": _jsonl([expert]),
        arms.train_data("mapper"): _jsonl(train),
        "eval_base/stage.json": json.dumps(stage),
        "eval_base/synthetic_id/attempts.jsonl": _jsonl(
            [_answer(p0, p0.solution, "correct"), _answer(p1, "So the answer is \\boxed{1}.", "wrong")]
        ),
        "eval_dart_sft/stage.json": json.dumps(stage),
        "eval_dart_sft/synthetic_id/attempts.jsonl": _jsonl(
            [
                _answer(p0, f"{ECHO}\n{p0.solution}", "correct"),  # echo, right answer anyway
                _answer(p1, p1.solution, "correct"),  # the expert's own solution: faithful
                _answer(p2, f"{HEADING}{p2.problem} So the answer is \\boxed{{0}}.", "wrong"),
            ]
        ),
        **(extra or {}),
    }
    seed = root / "seed-0"
    for rel, text in files.items():
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_text(text, encoding="utf-8")
    return seed, problems


EXPECTED = [
    {"arm": "base", "benchmark": "synthetic_id", "file": "eval_base/synthetic_id/attempts.jsonl", "answers": 2,
     "correct": 1, "meta_text": 0, "meta_text_correct": 0, "context": "problem"},
    {"arm": "dart_sft", "benchmark": "synthetic_id", "file": "eval_dart_sft/synthetic_id/attempts.jsonl",
     "answers": 3, "correct": 2, "meta_text": 2, "meta_text_correct": 1, "context": "problem"},
]  # fmt: skip


def test_answers_with_meta_text_counted_per_arm_from_a_folder_and_its_archive(tmp_path, capsys):
    seed_dir, problems = _seed(tmp_path)
    # the faithful answer is the expert solution itself: the detector must pass it with the problem as context
    assert count_mod.meta_text(problems[1].solution, (problems[1].problem,)) is None

    (folder,) = count_mod.seeds(seed_dir)
    table, shown = count_mod.count_answers(folder, examples=5)
    assert table == EXPECTED
    assert [s.split(" [")[0] for s in shown] == ["eval_dart_sft:", "eval_dart_sft:"]
    assert "correct, 'rewriting the problem in'" in shown[0] and "wrong, 'rewrite the solution'" in shown[1]

    archive = tmp_path / "seed-0.tar.xz"
    archive_mod.pack(seed_dir, archive)
    (packed,) = count_mod.seeds(archive)
    assert packed.members is not None  # read from the archive in memory, not from the folder
    assert count_mod.count_answers(packed, examples=5) == (table, shown)
    # the training rows are still counted from both, and alike
    train = count_mod.count(folder, count_mod.RewardConfig())[0]
    assert [(r["set"], r["adapted"], r["meta_text"]) for r in train] == [("mapper", 2, 1)]
    assert count_mod.count(packed, count_mod.RewardConfig())[0] == train

    capsys.readouterr()
    count_mod.main([str(archive)])
    out = capsys.readouterr().out
    first, second = out.index("| set | train file |"), out.index("test answers with meta text, per arm")
    assert first < second
    assert "| base | eval_base/synthetic_id | 2 | 1 | 0 (0%) | 0 |" in out[second:]
    assert f"| {arms.ARM_LABELS['dart_sft']} | eval_dart_sft/synthetic_id | 3 | 2 | 2 (67%) | 1 |" in out[second:]


def test_problem_text_is_the_context_and_a_file_benchmark_has_none(tmp_path, monkeypatch):
    # gsm8k read from a data folder of our own: its problem asks for "your own words", so an answer saying them is
    # not flagged; the same answer on a benchmark given as a file (no problem text known by name) is
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    question = "Explain in your own words why 2 + 2 = 4, then give the sum."
    (data / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": question, "answer": "2 + 2 = 4\n#### 4"}) + "\n")
    monkeypatch.setenv("SFTADAPT_DATA_DIR", str(data))
    (gsm,) = load_benchmark("gsm8k")
    answer = {
        "problem_id": gsm.id,
        "text": "In my own words: 2 + 2 = 4. So the answer is \\boxed{4}.",
        "verdict": "correct",
    }
    seed_dir, _ = _seed(
        tmp_path,
        {
            "eval_sft/gsm8k/attempts.jsonl": _jsonl([answer]),
            "eval_sft/my_problems/attempts.jsonl": _jsonl([answer]),
        },
    )
    (folder,) = count_mod.seeds(seed_dir)
    rows = {(r["arm"], r["benchmark"]): r for r in count_mod.count_answers(folder)[0]}
    assert [ab for ab in rows] == [("base", "synthetic_id"), ("sft", "gsm8k"), ("sft", "my_problems"),
                                   ("dart_sft", "synthetic_id")]  # fmt: skip
    assert (rows["sft", "gsm8k"]["meta_text"], rows["sft", "gsm8k"]["context"]) == (0, "problem")
    assert rows["sft", "my_problems"]["meta_text"] == 1
    assert rows["sft", "my_problems"]["context"].startswith("none: a benchmark given as a file")
    assert "my_problems: checked without the problem as context" in count_mod.markdown_answers("s", list(rows.values()))

    # an answer to a problem the benchmark (first 3 problems, as the stage recorded) does not hold is refused
    bad = dict(answer, problem_id="syn-test-k13-s1234-00007")
    (seed_dir / "eval_base/synthetic_id/attempts.jsonl").write_text(_jsonl([bad]))
    with pytest.raises(SystemExit, match="syn-test-k13-s1234-00007' is not among the 3 problems of synthetic_id"):
        count_mod.count_answers(folder)


def test_the_script_reads_files_only_without_torch(tmp_path):
    # the counts need no model: run as a command on a seed folder, the script must not import torch (or numpy)
    seed_dir, _ = _seed(tmp_path)
    check = (
        "import runpy, sys; sys.argv = ['count_meta_text.py', sys.argv[1]]; "
        f"runpy.run_path({str(_BENCH / 'count_meta_text.py')!r}, run_name='__main__'); "
        "print('heavy:', sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", check, str(seed_dir)], capture_output=True, text=True, check=True)
    assert "test answers with meta text, per arm" in out.stdout
    assert out.stdout.rstrip().endswith("heavy: []")


def test_a_seed_that_chose_its_problems_is_read_from_the_select_stage_set(tmp_path):
    seed_dir, _ = _seed(tmp_path)
    (seed_dir / "select").mkdir()
    (seed_dir / "data" / "expert.jsonl").rename(seed_dir / "select" / "expert.jsonl")  # data/ holds the pool then
    (folder,) = count_mod.seeds(tmp_path)  # a run folder with seed-<s>/: found by its select stage's set
    train = count_mod.count(folder, count_mod.RewardConfig())[0]
    assert [(r["set"], r["adapted"], r["meta_text"]) for r in train] == [("mapper", 2, 1)]
    archive = tmp_path / "seed-0.tar.xz"
    archive_mod.pack(seed_dir, archive)
    (packed,) = count_mod.seeds(archive)
    assert "select/expert.jsonl" in packed.members and count_mod.count(packed, count_mod.RewardConfig())[0] == train
