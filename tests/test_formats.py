"""Readers of the formats users already have (data/formats.py), each on a small fixture of that format written
here: chat messages, TRL prompt/completion (string and conversational), alpaca and sharegpt (JSON array and
JSONL), verl parquet, a save_to_disk folder; nested field paths; explicit answer rules; a user field map that
no longer switches the rule silently; format mixes reported; per-row failures as file:line:field rejects; and
the field-map option group reaching a stage command (sample) and the run config's task section."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sftadapt.cli import app
from sftadapt.data.formats import FieldOptions, get_path
from sftadapt.data.sources import SourceError, load_dataset_spec, load_problems

runner = CliRunner()


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _one(result):
    return [(p.problem, p.answer, p.solution) for p in result.problems]


def test_chat_messages(tmp_path):
    path = _jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What is 2+3?"},
                    {"role": "assistant", "content": "2+3=5, so \\boxed{5}"},
                ]
            },
            {
                "messages": [{"role": "user", "content": "What is 2+4?"}, {"role": "assistant", "content": "six"}],
                "answer": "6",
            },
            {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "7"}]},
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                    {"role": "assistant", "content": "d"},
                ]
            },
        ],
    )
    result = load_problems(path)
    assert result.fmt == "messages"
    assert _one(result) == [("What is 2+3?", "5", "2+3=5, so \\boxed{5}"), ("What is 2+4?", "6", "six")]
    assert result.problems[0].meta["system"] == "Be brief."
    assert [(r["line"], r["field"]) for r in result.rejects] == [(3, "messages.1.role"), (4, "messages")]
    assert "only single-turn" in result.rejects[1]["reason"]


def test_prompt_completion_string_and_conversational(tmp_path):
    path = _jsonl(
        tmp_path / "pc.jsonl",
        [
            {"prompt": "What is 1+1?", "completion": "1+1=2. \\boxed{2}"},
            # an export of ours read back: our instruction is not added twice
            {
                "prompt": "What is 1+2?\nPlease reason step by step, and put your final answer within \\boxed{}.",
                "completion": "\\boxed{3}",
            },
        ],
    )
    assert _one(load_problems(path)) == [
        ("What is 1+1?", "2", "1+1=2. \\boxed{2}"),
        ("What is 1+2?", "3", "\\boxed{3}"),
    ]
    conv = _jsonl(
        tmp_path / "conv.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": "What is 2+2?"}],
                "completion": [{"role": "assistant", "content": "It is \\boxed{4}"}],
            },
            {"prompt": [{"role": "user", "content": "x"}], "completion": [{"role": "user", "content": "y"}]},
        ],
    )
    result = load_problems(conv)
    assert result.fmt == "prompt_completion" and _one(result) == [("What is 2+2?", "4", "It is \\boxed{4}")]
    assert result.rejects[0]["line"] == 2 and result.rejects[0]["field"] == "completion"


def test_alpaca_json_array_and_jsonl(tmp_path):
    rows = [
        {"instruction": "Add the numbers.", "input": "3 and 4", "output": "3+4=7 \\boxed{7}"},
        {"instruction": "What is 5*5?", "input": "", "output": "#### 25"},
    ]
    array = tmp_path / "alpaca.json"
    array.write_text("[\n" + ",\n".join("  " + json.dumps(r) for r in rows) + "\n]\n")
    result = load_problems(array)
    assert result.fmt == "alpaca" and _one(result) == [("Add the numbers.\n\n3 and 4", "7", "3+4=7 \\boxed{7}")]
    # the second element starts on line 3 of the array file; its answer is no \boxed{}: a reject, not a guess
    assert [(r["line"], r["field"]) for r in result.rejects] == [(3, "output")]
    # the rule is named explicitly
    result = load_problems(array, fields=FieldOptions(answer_rule="gsm8k"))
    assert [p.answer for p in result.problems] == ["25"] and result.rejects[0]["line"] == 2
    # the same rows as JSON lines in a .json file (LLaMA-Factory accepts both)
    lines = _jsonl(tmp_path / "alpaca_lines.json", rows)
    assert len(load_problems(lines, fields=FieldOptions(answer_rule="last_number")).problems) == 2


def test_a_json_array_with_a_bad_element_keeps_the_rows_before_it(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"instruction": "1+1?", "output": "\\\\boxed{2}"},\n {"instruction": "x" "output": 1}]')
    result = load_problems(path)
    assert len(result.problems) == 1 and result.rejects[0]["line"] == 2
    assert "malformed JSON array element" in result.rejects[0]["reason"]


def test_sharegpt(tmp_path):
    rows = [
        {
            "conversations": [
                {"from": "system", "value": "s"},
                {"from": "human", "value": "What is 9-3?"},
                {"from": "gpt", "value": "9-3=6 \\boxed{6}"},
            ]
        },
        {"conversations": [{"from": "gpt", "value": "hi"}]},
    ]
    array = tmp_path / "sharegpt.json"
    array.write_text(json.dumps(rows, indent=1))
    result = load_problems(array)
    assert result.fmt == "sharegpt" and _one(result) == [("What is 9-3?", "6", "9-3=6 \\boxed{6}")]
    assert result.rejects[0]["field"] == "conversations" and result.rejects[0]["line"] > 2
    assert _one(load_problems(_jsonl(tmp_path / "sharegpt.jsonl", rows))) == _one(result)


def test_verl_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [  # as verl's own examples/data_preprocess/gsm8k.py writes them
        {
            "data_source": "openai/gsm8k",
            "ability": "math",
            "prompt": [
                {
                    "role": "user",
                    "content": "Tom has 3 apples and buys 4. How many? Let's think step by step "
                    'and output the final answer after "####".',
                }
            ],
            "reward_model": {"style": "rule", "ground_truth": "7"},
            "extra_info": {
                "split": "train",
                "index": 0,
                "question": "Tom has 3 apples and buys 4. How many?",
                "answer": "3+4=7\n#### 7",
            },
        },
        {
            "data_source": "openai/gsm8k",
            "ability": "math",
            "prompt": [{"role": "user", "content": "q2"}],
            "reward_model": {"style": "rule", "ground_truth": ""},
            "extra_info": {"split": "train", "index": 1, "question": "q2", "answer": "x"},
        },
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    result = load_problems(path)
    assert result.fmt == "verl"
    assert _one(result) == [("Tom has 3 apples and buys 4. How many?", "7", "3+4=7\n#### 7")]
    assert result.problems[0].meta["extra_info"]["index"] == 0 and result.problems[0].meta["data_source"]
    assert result.rejects[0]["line"] == 2 and result.rejects[0]["field"] == "reward_model.ground_truth"


def test_save_to_disk_folder(tmp_path):
    import datasets

    rows = {"question": ["What is 6*7?", "What is 8+1?"], "answer": ["6*7=42\n#### 42", "8+1=9\n#### 9"]}
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows),
            "test": datasets.Dataset.from_dict({k: v[:1] for k, v in rows.items()}),
        }
    ).save_to_disk(str(tmp_path / "ds"))
    result = load_problems(tmp_path / "ds")
    assert result.fmt == "gsm8k" and [p.answer for p in result.problems] == ["42", "9"]
    assert len(load_dataset_spec(f"{tmp_path / 'ds'}@test").problems) == 1
    assert len(load_problems(tmp_path / "ds" / "test").problems) == 1  # one split's own folder
    with pytest.raises(SourceError, match="needs the network.*--online"):
        load_dataset_spec("hf:someorg/some-set")  # a hub id only with --online (tests run offline)


def test_nested_field_paths_and_field_rule(tmp_path):
    path = _jsonl(
        tmp_path / "nested.jsonl",
        [
            {"prompt": [{"role": "user", "content": "What is 10/2?"}], "gold": {"value": 5}, "sol": {"text": "5"}},
            {"prompt": [], "gold": {"value": 1}},
        ],
    )
    assert get_path({"a": [{"b": 1}, {"b": 2}]}, "a.-1.b") == 2 and get_path({"a": []}, "a.0.b") is None
    fields = FieldOptions(problem="prompt.0.content", answer_rule="field:gold.value", solution="sol.text")
    result = load_problems(path, fields=fields)
    assert _one(result) == [("What is 10/2?", "5", "5")]
    assert result.rejects[0]["field"] == "prompt.0.content" and result.rejects[0]["line"] == 2
    assert result.answer_rule == "field:gold.value"


def test_a_field_map_never_switches_the_answer_rule_silently(tmp_path):
    """Issue 14: `--problem-field question --solution-field answer` on GSM8K used to extract \\boxed{} silently
    and reject every row; now the rule must be named, and `gsm8k` reads it."""
    path = _jsonl(tmp_path / "g.jsonl", [{"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}])
    with pytest.raises(SourceError, match="must say where the gold answer is"):
        load_problems(path, fields=FieldOptions(problem="question", solution="answer"))
    result = load_problems(path, fields=FieldOptions(problem="question", solution="answer", answer_rule="gsm8k"))
    assert [p.answer for p in result.problems] == ["4"] and not result.rejects
    result = runner.invoke(
        app,
        [
            "data",
            "check",
            str(path),
            "--problem-field",
            "question",
            "--solution-field",
            "answer",
            "--answer-rule",
            "last_number",
        ],
    )
    assert result.exit_code == 0 and "answer rule last_number, 1 rows, 1 ok" in result.output, result.output
    result = runner.invoke(app, ["data", "check", str(path), "--answer-rule", "nope"])
    assert result.exit_code == 2 and "answer_rule 'nope'" in result.output


def test_a_mix_of_formats_is_reported(tmp_path):
    path = _jsonl(
        tmp_path / "mix.jsonl",
        [
            *[
                {
                    "messages": [
                        {"role": "user", "content": f"q{i}"},
                        {"role": "assistant", "content": f"\\boxed{{{i}}}"},
                    ]
                }
                for i in range(3)
            ],
            {"instruction": "q9", "output": "\\boxed{9}"},
        ],
    )
    result = load_problems(path)
    assert result.fmt == "messages" and len(result.problems) == 3
    assert "mixed formats (3 like messages, 1 like alpaca)" in result.warnings[0]
    assert result.rejects[0]["line"] == 4


def test_field_options_reach_stage_commands_and_the_run_task(tmp_path):
    from sftadapt.config import build_config
    from sftadapt.pipeline import RunConfig

    path = _jsonl(tmp_path / "custom.jsonl", [{"q": "What is 2+2?", "sol": "2+2=4, \\boxed{4}"}])
    out = tmp_path / "sample"
    result = runner.invoke(
        app,
        [
            "sample",
            "--model",
            "tiny-random",
            "--data",
            str(path),
            "--out",
            str(out),
            "--max-new-tokens",
            "2",
            "--dtype",
            "float32",
            "--problem-field",
            "q",
            "--solution-field",
            "sol",
            "--answer-rule",
            "boxed",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["problems"] == 1
    # the same options through --set, and a bad one is one line naming the option
    result = runner.invoke(
        app, ["sample", "--model", "tiny-random", "--data", str(path), "--out", str(out), "--set", "fields.problem=q"]
    )
    assert result.exit_code == 2 and "must say where the gold answer is" in result.output
    cfg = build_config(
        RunConfig,
        {
            "task": {
                "kind": "dataset",
                "data": str(path),
                "fields": {"problem": "q", "solution": "sol", "answer_rule": "boxed"},
            }
        },
    )
    assert cfg.task.fields.answer_rule == "boxed"
    for command in ("sample", "rewrite", "train", "map train", "map synthesize"):
        help_text = runner.invoke(app, [*command.split(), "--help"]).output
        assert "--problem-field" in help_text and "--answer-rule" in help_text and "fields.answer_rule" in help_text
    # eval reads benchmark files with the same options (it has no stage config: flags only)
    help_text = runner.invoke(app, ["eval", "--help"]).output
    assert "--problem-field" in help_text and "--answer-rule" in help_text
