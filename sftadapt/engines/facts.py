"""What every backend takes from the model's own files, the same way: which ids end a generation, how many
new tokens a request has room for, and whether requests carry seeds.

- **End ids.** A generation ends at any id the model's `generation_config.json` lists as `eos_token_id` (an id
  or a list: Llama-3.1-8B-Instruct lists <|end_of_text|>, <|eom_id|> and <|eot_id|>; Qwen3 <|im_end|> and
  <|endoftext|>), and at the tokenizer's EOS. hf stops on each of them, in-process vLLM and `vllm serve` get them
  as `stop_token_ids` (vLLM itself reads only the tokenizer's EOS when its generation config is off), and no
  backend keeps the end token in `Completion.token_ids`: training appends the end token once itself. The RL
  stages' rollouts are TRL's GRPO generation, which stops on the same set (TRL 1.16's `eos_token_ids`: the
  model's generation config ids plus the tokenizer's EOS) and masks the completion after the first of them.
- **Room.** A request asks for `max_new_tokens`; where its prompt leaves fewer in the context (hf: the model
  config's; vLLM: its `max_model_len`; a server: the `max_model_len` its `/v1/models` reports), it gets the room
  left and ends "length" there. A prompt that leaves no room at all is refused as that row's reject
  (`RequestRejected`) on every backend, before anything is generated. `budget.screen_stage` says once per stage
  how many prompts were clamped.
- **Seeds.** `engine.options.seeded`: `auto` (the default) seeds every sample where that buys
  reproducibility, i.e. hf and in-process vLLM; a server (openai backend) gets no seed, since vLLM's sampler
  takes seeded requests one by one, off its fast path, and a server's batching makes them irreproducible anyway
  (benchmarks/engines.md). `true`/`false` force it. An unseeded sample records `seed: null`.

`describe(engine)` is the one line and the record every stage's summary carries of it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sftadapt.engines.base import RequestRejected


def _ids(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def folder_end_ids(folder: str | Path | None) -> list[int]:
    """The `eos_token_id` of a model folder's generation_config.json, else of its config.json ([] if neither)."""
    if folder is None or not Path(folder).is_dir():
        return []
    for name in ("generation_config.json", "config.json"):
        path = Path(folder) / name
        if path.is_file():
            try:
                found = _ids(json.loads(path.read_text(encoding="utf-8")).get("eos_token_id"))
            except (OSError, ValueError, AttributeError):
                found = []
            if found:
                return found
    return []


def end_ids(tokenizer, generation_eos: Any = None) -> tuple[int, ...]:
    """Every id that ends a generation: the generation config's (`generation_eos`), then the tokenizer's EOS."""
    found = _ids(generation_eos)
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int) and eos not in found:
        found.append(eos)
    if not found:
        raise ValueError("the model names no end token (no eos_token_id anywhere): cannot tell where a sample ends")
    return tuple(found)


def strip_end(ids: list[int], logprobs: list[float], ends: Sequence[int]) -> tuple[list[int], list[float]]:
    """`ids` without a final end token (and its log-prob): token_ids stop before the end, on every backend."""
    if ids and ids[-1] in ends:
        return ids[:-1], logprobs[: len(ids) - 1]
    return ids, logprobs


def room(prompt_tokens: int, max_new_tokens: int, context: int | None) -> int:
    """New tokens a request may take: `max_new_tokens`, clamped to what its prompt leaves of the context."""
    return max_new_tokens if context is None else min(max_new_tokens, context - prompt_tokens)


def fit(prompt_lengths: Sequence[int], max_new_tokens: int, context: int | None, backend: str) -> list[int]:
    """Each prompt's room (see `room`); RequestRejected naming every prompt that leaves none."""
    rooms = [room(n, max_new_tokens, context) for n in prompt_lengths]
    refused = {
        i: f"the prompt is {n} tokens and leaves no room in the model's context of {context} tokens"
        for i, (n, r) in enumerate(zip(prompt_lengths, rooms))
        if r < 1
    }
    if refused:
        raise RequestRejected(refused, backend)
    return rooms


def seeded_option(options: dict, backend: str) -> bool:
    """`options['seeded']` (auto | true | false, taken out of `options`) as this backend runs it; auto is the
    backend class's own `seeded` default."""
    value = options.pop("seeded", "auto")
    if isinstance(value, str):
        value = {"auto": "auto", "true": True, "on": True, "false": False, "off": False}.get(value.lower(), value)
    if value == "auto":
        import importlib

        from sftadapt.engines.base import BACKENDS

        module, cls = BACKENDS[backend].split(":")
        return bool(getattr(importlib.import_module(module), cls).seeded)
    if not isinstance(value, bool):
        raise ValueError(f"engine.options.seeded = {value!r}: auto, true or false")
    return value


def describe(engine) -> dict[str, Any]:
    """What an engine takes from the model's files, as stage summaries record it."""
    tok = engine.tokenizer
    names = {}
    for i in engine.end_ids:
        try:
            names[str(i)] = tok.convert_ids_to_tokens(i)
        except Exception:  # a fake tokenizer: the id alone says it
            names[str(i)] = None
    return {"seeded": engine.seeded, "context_length": engine.context_length, "end_ids": names}


def record(engine, chat: bool = True) -> dict[str, Any]:
    """`describe` plus how prompts are rendered (prompts.prompt_format), and a replicated engine's replica count and
    restarts so far: a stage summary's `engine` entry."""
    from sftadapt.data.prompts import prompt_format

    replicated = {k: int(engine.stats[k]) for k in ("replicas", "replica_restarts") if k in engine.stats}
    return {**describe(engine), "prompt_format": prompt_format(engine.tokenizer, chat), **replicated}


def line(engine, backend: str) -> str:
    """One line for the terminal: `model: seeded, context N, ends <|eot_id|> (128009), ...`."""
    d = describe(engine)
    ends = ", ".join(f"{name} ({i})" if name else i for i, name in d["end_ids"].items())
    context = f"context {d['context_length']}" if d["context_length"] else "context as the server enforces it"
    return (
        f"{backend} engine for {engine.name}: {'seeded' if d['seeded'] else 'unseeded'} samples, {context}, ends {ends}"
    )


# ---------------------------------------------------------------- from the files alone (`run --dry-run`)
MODEL_FIELDS = ("model", "target", "mapper")  # the stage config fields that name a model to generate with


@functools.lru_cache(maxsize=32)  # a dry run asks once per stage; the tokenizer load is what costs
def file_facts(spec: str, chat: bool = True) -> dict[str, Any] | None:
    """Context, end ids and prompt format as the model's own files give them, no weights loaded; None when
    the model is not on this machine (a checkpoint an earlier stage will write, a hub id not in the cache)."""
    from sftadapt.data.budget import context_length
    from sftadapt.data.prompts import prompt_format
    from sftadapt.runtime.models import load_tokenizer, resolve_model

    try:
        folder = resolve_model(spec)
        if not Path(folder).is_dir():
            return None
        tokenizer = load_tokenizer(spec)
    except Exception:  # noqa: BLE001 - not here yet: nothing to check against
        return None
    ends = end_ids(tokenizer, folder_end_ids(folder))
    return {
        "model": spec,
        "context_length": context_length(tokenizer, None, spec),
        "end_ids": {str(i): tokenizer.convert_ids_to_tokens(i) for i in ends},
        "prompt_format": prompt_format(tokenizer, chat),
    }


def check_stage(options: Any) -> list[str]:
    """What a stage config's models' files say, and its `max_new_tokens` against their context: one line per
    model; a BudgetError where no request could take `max_new_tokens` (engines clamp the rest)."""
    from sftadapt.data.budget import check_max_new_tokens

    lines, seen = [], set()
    chat = getattr(options, "chat", True)
    wanted = getattr(options, "max_new_tokens", None)
    for field in MODEL_FIELDS:
        spec = getattr(options, field, None)
        if not isinstance(spec, str) or not spec or spec in seen:
            continue
        seen.add(spec)
        found = file_facts(spec, chat)
        if found is None:
            continue
        context = found["context_length"]
        note = ""
        if isinstance(wanted, int) and context:
            check_max_new_tokens(wanted, context, name=f"max_new_tokens of {spec}", clamp=True)
            if wanted > context // 2:
                note = f"; max_new_tokens {wanted}: a prompt of more than {context - wanted} tokens is clamped"
        ends = ", ".join(f"{name} ({i})" for i, name in found["end_ids"].items())
        lines.append(f"{spec}: context {context}, ends {ends}, prompt: {found['prompt_format']}{note}")
    return lines
