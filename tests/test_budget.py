"""Token budgets (sftadapt/data/budget.py): over-long prompts and solutions become rejects, the run goes on, and
max_new_tokens is bounded by the model's context. The tiny model's tokenizer is real (SmolLM2's)."""

import json

import pytest

from sftadapt.data import budget
from sftadapt.data.records import Problem


@pytest.fixture(scope="module")
def tok():
    from sftadapt.runtime.models import load_tokenizer

    return load_tokenizer("tiny-random")


def _problems():
    ok = Problem(id="ok", problem="What is 2+3?", answer="5", solution="2+3=5")
    long_problem = Problem(id="long", problem="1 + " * 5000 + "1 = ?", answer="5001", solution="count")
    long_solution = Problem(
        id="sol", problem="What is 10^50?", answer="1" + "0" * 50, solution="It is " + "9" * 60000 + "."
    )
    long_problem.where = ("data.jsonl", 2)
    return [ok, long_problem, long_solution]


def test_context_from_the_model_config_and_tokenizer(tok):
    # tiny-random: max_position_embeddings 2048 in its config.json, tokenizer model_max_length 8192
    assert budget.context_length(tok, model_spec="tiny-random") == 2048
    assert budget.context_length(tok) == 8192


def test_max_new_tokens_beyond_the_context_is_one_clear_error():
    with pytest.raises(budget.BudgetError, match="does not fit the model's context of 2048"):
        budget.check_max_new_tokens(10**10, 2048)
    assert budget.check_max_new_tokens(256, 2048) == 256


def test_over_long_rows_become_rejects_with_file_line_field_and_token_count(tok):
    prompts, scored = budget.rewrite_checks(tok, True, "mind_the_gap")
    kept, over = budget.screen(tok, _problems(), context=2048, max_new_tokens=256, prompts=prompts, scored=scored)
    assert [p.id for p in kept] == ["ok"]
    by_id = {r["raw"]["id"]: r for r in over}
    assert by_id["long"]["file"] == "data.jsonl" and by_id["long"]["line"] == 2
    assert by_id["long"]["field"] == "problem" and by_id["long"]["tokens"] > 1792
    assert "budget of 1792" in by_id["long"]["reason"]
    # the 60k-digit solution reaches the guided prompt: its field is named
    assert by_id["sol"]["field"] == "solution" and by_id["sol"]["tokens"] > 1792
    json.dumps(over)  # reject rows are plain JSON


def test_a_configured_budget_is_tighter_than_the_context(tok, monkeypatch):
    checks = budget.solve_checks(tok, True)
    few = [Problem(id="a", problem="What is 2+3?", answer="5")]
    assert len(budget.screen(tok, few, context=2048, max_new_tokens=16, prompts=checks)[0]) == 1
    kept, over = budget.screen(tok, few, context=2048, max_new_tokens=16, prompts=checks, max_prompt_tokens=5)
    assert kept == [] and "max_prompt_tokens 5" in over[0]["reason"]
    monkeypatch.setenv(budget.ENV_BUDGET, "5")
    assert budget.screen(tok, few, context=2048, max_new_tokens=16, prompts=checks)[0] == []


def test_the_sample_stage_rejects_an_over_long_problem_and_goes_on(tmp_path):
    from typer.testing import CliRunner

    from sftadapt.cli import app

    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"question": "What is 2+2?", "answer": "4\n#### 4"})
        + "\n"
        + json.dumps({"question": "x " * 200_000 + "?", "answer": "4\n#### 4"})
        + "\n"
    )
    out = tmp_path / "o"
    result = CliRunner().invoke(
        app,
        [
            "-q",
            "sample",
            "--model",
            "tiny-random",
            "--data",
            str(data),
            "--out",
            str(out),
            "--max-new-tokens",
            "4",
            "--dtype",
            "float32",
        ],
    )
    assert result.exit_code == 0, result.output
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["file"], r["line"], r["field"]) for r in rejects] == [(str(data), 2, "question")]  # the file's name
    assert json.loads((out / "summary.json").read_text())["problems"] == 1
    result = CliRunner().invoke(
        app,
        [
            "-q",
            "sample",
            "--model",
            "tiny-random",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o2"),
            "--max-new-tokens",
            "10000000000",
        ],
    )
    assert result.exit_code == 2 and "does not fit the model's context" in result.output
    assert "Traceback" not in result.output


class _WrongVerifier:
    """Every answer wrong: the problem falls through to the expert row (all that this test needs)."""

    def verify_many(self, golds, texts):
        from sftadapt.verify import Verdict

        return [Verdict("wrong", None, "none", 0.0) for _ in golds]


def test_rewrite_rejects_a_problem_whose_expert_solution_is_too_long_and_goes_on(tmp_path, tiny_engine):
    from sftadapt.adapt.rewrite import RewriteConfig, rewrite
    from sftadapt.config import load_config
    from sftadapt.data.records import Example, read_records

    big = "1" + "0" * 60_000  # a 60k-digit answer inside the expert solution reaches the guided prompt
    problems = [Problem("ok", "What is 1+1?", "2", "1+1=2"), Problem("big", "What is 10^60000?", big, f"It is {big}.")]
    cfg = load_config(
        RewriteConfig,
        None,
        None,
        base={
            "model": "tiny-random",
            "out": str(tmp_path / "r"),
            "k": 1,
            "guided_tries": 1,
            "max_new_tokens": 4,
            "shard_size": 2,
        },
    )
    summary = rewrite(
        cfg, engine=tiny_engine, verifier=_WrongVerifier(), problems=problems, progress=False, print_summary=False
    )
    assert [r.id for r in read_records(tmp_path / "r" / "train.jsonl", Example)] == ["ok"]
    (reject,) = [json.loads(line) for line in (tmp_path / "r" / "rejects.jsonl").read_text().splitlines()]
    assert reject["field"] == "solution" and reject["tokens"] > 2048 - 4 and reject["raw"]["id"] == "big"
    assert summary["rejected_input_rows"] == 1
