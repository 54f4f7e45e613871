"""What the hf engine takes from the model's files: room left in the context, every end id, seeds on request.

The papers' own models (real config, generation config and tokenizer, shrunk random weights) run through
every backend in tests/test_paper_models_engines.py; here small byte-level models test the rules themselves."""

from __future__ import annotations

import json

import pytest
from portable_model import write_model_folder

from sftadapt.data import budget
from sftadapt.data.records import Problem
from sftadapt.engines import EngineConfig, RequestRejected, Sampling, facts, make_engine


@pytest.fixture(scope="module")
def short_model(tmp_path_factory):
    """A random byte-level model whose context is 64 tokens."""
    return write_model_folder(tmp_path_factory.mktemp("short") / "m", max_position_embeddings=64)


def test_a_request_is_clamped_to_the_room_its_prompt_leaves(short_model):
    engine = make_engine(short_model, EngineConfig("hf"), dtype="float32")
    assert engine.context_length == 64
    prompt = "x" * 50  # byte-level: 50 tokens, 14 left
    [[out]] = engine.generate([prompt], Sampling(max_new_tokens=40, temperature=1.0, seed=3))
    ends = set(engine.end_ids)
    assert len(out.token_ids) <= 14
    if out.finish_reason == "length":
        assert len(out.token_ids) == 14
    else:  # ended on an end id first: it is not in token_ids
        assert not ends & set(out.token_ids)


def test_a_prompt_that_leaves_no_room_is_that_rows_reject(short_model):
    engine = make_engine(short_model, EngineConfig("hf"), dtype="float32")
    with pytest.raises(RequestRejected) as err:
        engine.generate(["x" * 10, "y" * 64, "z" * 70], Sampling(max_new_tokens=8))
    assert set(err.value.reasons) == {1, 2}
    assert "leaves no room in the model's context of 64 tokens" in err.value.reasons[1]


def test_every_generation_config_end_id_ends_a_sample(tmp_path):
    """The model's generation_config.json lists two end ids besides the tokenizer's EOS: hf stops on each."""
    folder = write_model_folder(tmp_path / "m", vocab_size=300)
    engine = make_engine(folder, EngineConfig("hf"), dtype="float32")
    [[free]] = engine.generate(["hello"], Sampling(max_new_tokens=24, temperature=0.0))
    assert free.finish_reason == "length" and len(free.token_ids) == 24  # a random model: no end within 24
    first, third = free.token_ids[0], free.token_ids[2]
    config = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    config["eos_token_id"] = [third, first] if first != third else [first]
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps(config))
    engine = make_engine(folder, EngineConfig("hf"), dtype="float32")
    assert set(engine.end_ids) >= {first, third} and engine.tokenizer.eos_token_id in engine.end_ids
    [[ended]] = engine.generate(["hello"], Sampling(max_new_tokens=24, temperature=0.0))
    assert ended.finish_reason == "stop" and ended.token_ids == []  # the end token itself is not kept


def test_seeded_auto_is_on_for_hf_and_off_asks_for_fresh_samples(short_model):
    seeded = make_engine(short_model, EngineConfig("hf"), dtype="float32")
    unseeded = make_engine(short_model, EngineConfig("hf", {"seeded": False}), dtype="float32")
    assert seeded.seeded and not unseeded.seeded
    params = Sampling(n=2, max_new_tokens=6, temperature=1.0, seed=1)
    a, b = seeded.generate(["abc"], params), seeded.generate(["abc"], params)
    assert [c.token_ids for c in a[0]] == [c.token_ids for c in b[0]] and a[0][0].seed is not None
    c, d = unseeded.generate(["abc"], params), unseeded.generate(["abc"], params)
    assert all(x.seed is None for x in c[0] + d[0])
    assert [x.token_ids for x in c[0]] != [x.token_ids for x in d[0]]  # 4 draws of 6 tokens over 512 ids
    with pytest.raises(ValueError, match="seeded"):
        make_engine(short_model, EngineConfig("hf", {"seeded": "sometimes"}))


def test_seeded_auto_is_off_for_servers():
    assert facts.seeded_option({}, "openai") is False
    assert facts.seeded_option({"seeded": "auto"}, "vllm") is True
    options = {"seeded": "true", "base_urls": ["x"]}
    assert facts.seeded_option(options, "openai") is True and options == {"base_urls": ["x"]}


def test_the_stage_budget_clamps_and_says_so_once(short_model, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("SFTADAPT_QUIET", raising=False)
    engine = make_engine(short_model, EngineConfig("hf"), dtype="float32")
    problems = [Problem(id=str(i), problem="q" * n, answer="1") for i, n in enumerate((5, 40, 70))]
    kept, over = budget.screen_stage(engine, problems, 32, tmp_path / "rejects.jsonl", {"problem": lambda p: p.problem})
    assert [p.id for p in kept] == ["0", "1"] and [r["raw"]["id"] for r in over] == ["2"]
    said = capsys.readouterr().err
    assert said.count("clamped to the room left") == 1 and "1 of 3 problems" in said
    with pytest.raises(budget.BudgetError, match="does not fit the model's context of 64"):
        budget.screen_stage(engine, problems, 65, tmp_path / "r2.jsonl", {"problem": lambda p: p.problem})
    # the RL stages (no engine: their trainer cannot clamp) keep prompt + max_new_tokens within the context
    kept, over = budget.screen_stage(
        None,
        problems,
        32,
        tmp_path / "r3.jsonl",
        {"problem": lambda p: p.problem},
        tokenizer=engine.tokenizer,
        model_spec=short_model,
    )
    assert [p.id for p in kept] == ["0"]
