"""The papers' model fixtures (tests/paper_models/) are the real models' files: tokenizers that reproduce the
published tokenizer test cases, the real special-token ids, chat templates that render the published prompts, and
shrunk random models that load and generate in hf, one of them forced to a chosen first token.

The expected values here are written out from the published files, independently of build.py's tables, so a
wrong table in build.py fails here."""

import functools
import json

import pytest

QWEN25 = "qwen2.5-math-7b"
LLAMA = "llama-3.1-8b-instruct"
QWEN3 = "qwen3-0.6b"
NAMES = [QWEN25, LLAMA, QWEN3]
VOCAB = {QWEN25: "qwen2", LLAMA: "llama-bpe", QWEN3: "qwen2"}
USER = [{"role": "user", "content": "What is 1+1?"}]

_QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
_QWEN3_EXTRA = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
SPECIALS = {
    QWEN25: {t: 151643 + i for i, t in enumerate(_QWEN_SPECIALS)},
    QWEN3: {t: 151643 + i for i, t in enumerate(_QWEN_SPECIALS + _QWEN3_EXTRA)},
    LLAMA: {
        "<|begin_of_text|>": 128000,
        "<|end_of_text|>": 128001,
        "<|reserved_special_token_0|>": 128002,
        "<|reserved_special_token_1|>": 128003,
        "<|finetune_right_pad_id|>": 128004,
        "<|reserved_special_token_2|>": 128005,
        "<|start_header_id|>": 128006,
        "<|end_header_id|>": 128007,
        "<|eom_id|>": 128008,
        "<|eot_id|>": 128009,
        "<|python_tag|>": 128010,
        "<|reserved_special_token_3|>": 128011,
        "<|reserved_special_token_247|>": 128255,
    },
}
# len(tokenizer), (bos, eos, pad) ids of the tokenizer, and config: vocab_size, max_position_embeddings, eos
TOKENIZER = {QWEN25: (151665, (None, 151643, 151643)), LLAMA: (128256, (128000, 128009, None)),
             QWEN3: (151669, (None, 151645, 151643))}  # fmt: skip
CONFIG = {QWEN25: (152064, 4096, 151643), LLAMA: (128256, 131072, [128001, 128008, 128009]),
          QWEN3: (151936, 40960, 151645)}  # fmt: skip
GENERATION_EOS = {QWEN25: 151643, LLAMA: [128001, 128008, 128009], QWEN3: [151645, 151643]}


@functools.cache  # loading a 150k-token tokenizer.json takes ~1 s; no test changes one
def _tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("name", NAMES)
def test_the_published_tokenizer_cases_give_the_published_ids(paper_models, name):
    tok = _tokenizer(paper_models.build(name))
    cases = paper_models.cases(VOCAB[name])
    assert len(cases) >= 40  # llama.cpp's set: 46 texts, among them whitespace runs, digits, CJK and emoji
    wrong = [(text, ids, tok.encode(text, add_special_tokens=False)) for text, ids in cases]
    wrong = [case for case in wrong if case[1] != case[2]]
    assert not wrong, f"{len(wrong)} of {len(cases)} cases differ, first: {wrong[0]}"


@pytest.mark.parametrize("name", NAMES)
def test_special_tokens_have_the_published_ids(paper_models, name):
    tok = _tokenizer(paper_models.build(name))
    size, (bos, eos, pad) = TOKENIZER[name]
    assert len(tok) == size
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (bos, eos, pad)
    for text, token_id in SPECIALS[name].items():
        assert tok.convert_tokens_to_ids(text) == token_id, text
        # in text a special token is one id, never split into pieces
        assert tok.encode(f"a{text}b", add_special_tokens=False)[1:-1] == [token_id], text
    if name == QWEN25:
        assert tok.convert_tokens_to_ids("<think>") is None  # a Qwen3 addition, not Qwen2.5's
    # only Llama adds a bos to plain text
    assert tok.encode("Hi")[:1] == ([128000] if name == LLAMA else tok.encode("Hi", add_special_tokens=False)[:1])


@pytest.mark.parametrize("name", NAMES)
def test_config_keeps_the_real_vocab_context_and_end_ids(paper_models, name):
    folder = paper_models.build(name)
    config = json.loads((folder / "config.json").read_text())
    assert (config["vocab_size"], config["max_position_embeddings"], config["eos_token_id"]) == CONFIG[name]
    assert (config["num_hidden_layers"], config["hidden_size"]) == (2, 64)
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == GENERATION_EOS[name]
    if name == LLAMA:
        assert config["rope_scaling"]["rope_type"] == "llama3" and config["rope_theta"] == 500000.0


def test_qwen25_math_renders_its_default_system_prompt(paper_models):
    tok = _tokenizer(paper_models.build(QWEN25))
    text = tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"
    )
    own = [{"role": "system", "content": "Be brief."}, *USER]
    assert tok.apply_chat_template(own, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n"
    )


def test_llama31_renders_the_dated_system_header_after_one_bos(paper_models):
    tok = _tokenizer(paper_models.build(LLAMA))
    head = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    turn = "<|start_header_id|>user<|end_header_id|>\n\nWhat is 1+1?<|eot_id|>"
    prompt = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True) == (
        f"{head}Today Date: 26 Jul 2024\n\n<|eot_id|>{turn}{prompt}"
    )
    own = [{"role": "system", "content": " Be brief. "}, *USER]
    assert tok.apply_chat_template(own, tokenize=False) == f"{head}Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|>{turn}"
    ids = tok.apply_chat_template(USER, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids[:2] == [128000, 128006]  # the template's bos, and no second one from the tokenizer


def test_qwen3_renders_the_no_thinking_prompt(paper_models):
    tok = _tokenizer(paper_models.build(QWEN3))
    plain = "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True) == plain
    no_think = tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert no_think == plain + "<think>\n\n</think>\n\n"
    # an earlier assistant turn loses its thinking; the turn after the last user message keeps it
    chat = [*USER, {"role": "assistant", "content": "<think>\nsum\n</think>\n\n2"}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n<think>\nsum\n</think>\n\n2<|im_end|>\n"
    )
    chat = [*chat, {"role": "user", "content": "And 2+2?"}]
    assert "sum" not in tok.apply_chat_template(chat, tokenize=False)


def _generate(folder, max_new_tokens=4):
    """Greedy new ids after the chat prompt, with the folder's own generation config (its end ids)."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    inputs = tok.apply_chat_template(USER, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return model, out[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("name", NAMES)
def test_each_shrunk_model_loads_and_generates_in_hf(paper_models, name):
    model, new = _generate(paper_models.build(name))
    assert model.config.num_hidden_layers == 2
    assert model.get_input_embeddings().weight.shape == (CONFIG[name][0], 64)
    assert model.config.tie_word_embeddings == (name == QWEN3)
    assert 1 <= len(new) <= 4 and all(0 <= i < CONFIG[name][0] for i in new)


@pytest.mark.parametrize(
    ("name", "token", "stops"),
    [
        (LLAMA, 128008, True),  # <|eom_id|>: an end id of the config and the generation config, not the tokenizer's eos
        (QWEN3, 151643, True),  # <|endoftext|>: an end id of the generation config only
        (QWEN3, 151667, False),  # <think>: no end id, so the same token repeats up to the limit
    ],
)
def test_a_forced_first_token_is_greedys_first_token(paper_models, name, token, stops):
    _, new = _generate(paper_models.build(name, first_token=token))
    assert new == ([token] if stops else [token] * 4)


def test_the_hub_cache_serves_the_models_offline(paper_models, monkeypatch, tmp_path):
    from huggingface_hub import constants, snapshot_download

    from sftadapt.runtime.models import hub_cache_snapshot

    # a cache of two models of its own (the session's shared cache holds all three)
    cache = paper_models.hub_cache([QWEN3, "meta-llama/Llama-3.1-8B-Instruct"], cache=tmp_path / "hub")
    folder = snapshot_download("Qwen/Qwen3-0.6B", cache_dir=cache, local_files_only=True)
    assert json.loads(open(f"{folder}/config.json").read())["model_type"] == "qwen3"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    llama = hub_cache_snapshot("meta-llama/Llama-3.1-8B-Instruct")
    assert llama is not None and json.loads(open(f"{llama}/config.json").read())["model_type"] == "llama"
    assert hub_cache_snapshot("Qwen/Qwen2.5-Math-7B") is None  # not asked for
