import json

import pytest

from sftadapt.data.records import (
    Attempt,
    Example,
    Problem,
    RecordError,
    from_dict,
    read_records,
    stable_id,
    write_records,
)


def _example(i: int) -> Example:
    return Example(
        id=f"p{i}",
        problem="1+1?",
        response="2 \\boxed{2}",
        answer="2",
        origin="self",
        behavior_logprobs=[-0.5, -0.25],
        target_logprobs=[-0.5, -0.1],
        target_logprob_mean=-0.3,
        self_pass_rate=0.5,
        attempts=[{"verdict": "correct"}],
        provenance={"model": "m"},
        meta={"k": 1},
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_roundtrip_every_record_type(tmp_path, suffix):
    rows = [_example(0), _example(1)]
    assert write_records(tmp_path / f"e{suffix}", rows) == 2
    assert read_records(tmp_path / f"e{suffix}", Example) == rows
    probs = [Problem(id="a", problem="q", answer="1", solution=None, source="s", meta={"level": 3})]
    write_records(tmp_path / f"p{suffix}", probs)
    assert read_records(tmp_path / f"p{suffix}", Problem) == probs
    atts = [
        Attempt(
            problem_id="a",
            stage="eval",
            index=0,
            prompt_hash="h",
            text="t",
            token_logprobs=[-1.0],
            verdict="wrong",
            extracted="3",
            rule="boxed",
        )
    ]
    write_records(tmp_path / f"a{suffix}", atts)
    assert read_records(tmp_path / f"a{suffix}", Attempt) == atts


def test_bad_rows_name_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"id": "a", "problem": "q", "answer": "1"})
    path.write_bytes((good + "\n\n" + '{"id": "b", "problem": "q"}\n').encode())
    with pytest.raises(RecordError) as err:
        read_records(path, Problem)
    assert (err.value.line, err.value.field) == (3, "answer")
    assert f"{path}:3 field 'answer'" in str(err.value)

    path.write_bytes(b'{"id": "a", "problem": "q", "answer": "1"}\n{"id": "b", "problem": \xff}\n')
    with pytest.raises(RecordError, match=r":2: not valid UTF-8"):
        read_records(path, Problem)
    path.write_text('{"id": "a", "problem": "q", "answer": "1"\n')
    with pytest.raises(RecordError, match=r":1: malformed JSON"):
        read_records(path, Problem)


def test_types_checked_and_extras_kept():
    with pytest.raises(RecordError, match="field 'problem'"):
        from_dict(Problem, {"id": "a", "problem": ["x"], "answer": "1"})
    p = from_dict(Problem, {"id": 7, "problem": "q", "answer": 27, "year": 2024})
    assert (p.id, p.answer, p.meta) == ("7", "27", {"year": 2024})


def test_stable_id_is_stable_and_ignores_outer_whitespace():
    assert stable_id("What is 1+1?") == stable_id("  What is 1+1?\n")
    assert len(stable_id("x")) == 16 and stable_id("x") != stable_id("y")
