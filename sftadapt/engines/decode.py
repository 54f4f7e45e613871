"""Batched decoding for the hf engine: our own loop over a causal LM's forward pass and KV cache.

Why not `model.generate`: it keeps a finished row in the batch, decoding padding, until the batch's longest
row ends. Answer lengths spread widely (in the embedded study's evaluation, 25-93 tokens on average per arm,
the longest 60-165), and the padding share grows with that spread. `decode` drops a finished row from the batch
and from the KV cache (`Cache.batch_select_indices`) at the step it finishes. The tokens are the ones
`generate` picks (tests/test_engine.py compares the two in float64). The time saved depends on that spread:
0.97-1.15x at the quickstart's size, where a batch's rows end close together (benchmarks/decode.md).
Caches that cannot drop rows (linear-attention, static or quantized ones) keep a finished row and ignore its
output, as `generate` does.

Sampling is per row: `SeededSampler` draws each row's token with the row's own `torch.Generator`, so a sample
depends on its seed, not on its batch, and dropping other rows cannot change it. Inputs follow `generate`'s
conventions: left padding, position ids = cumulative attention mask - 1, the mask grown by one column a step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Sequence

import torch


class SeededSampler:
    """Samples each row with its own generator and records the chosen token's log-prob (untempered)."""

    def __init__(self, generators: list[torch.Generator], temperature: float, top_p: float):
        self.generators, self.temperature, self.top_p = generators, temperature, top_p

    def choose(self, scores: torch.Tensor, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Next token and its log-prob for each row of `scores`; `rows` names each row's generator."""
        logits = scores.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        if self.temperature <= 0:
            chosen = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / self.temperature, dim=-1)
            if self.top_p < 1.0:
                probs = _top_p_filter(probs, self.top_p)
            cpu_probs = probs.cpu()
            chosen = torch.stack(
                [torch.multinomial(cpu_probs[k], 1, generator=self.generators[r])[0] for k, r in enumerate(rows)]
            ).to(logits.device)
        return chosen, logprobs.gather(1, chosen[:, None])[:, 0]


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    # keep the smallest prefix whose mass reaches top_p (the first token is always kept)
    drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    filtered = torch.zeros_like(probs).scatter_(1, order, sorted_probs)
    return filtered / filtered.sum(-1, keepdim=True)


def hits_stop(tokenizer, ids: list[int], stops: list[str]) -> bool:
    """Whether the decoded tail of `ids` contains a stop string (decoding only the tail keeps it O(1) a step)."""
    tail = max(len(s) for s in stops) + 8
    text = tokenizer.decode(ids[-tail:], skip_special_tokens=True)
    return any(s in text for s in stops)


def _can_drop_rows(cache) -> bool:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    # only plain dynamic layers are known to hold nothing but per-row keys and values
    return type(cache) is DynamicCache and all(
        type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in cache.layers
    )


@torch.no_grad()
def decode(
    model,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    sampler: SeededSampler,
    max_new_tokens: int,
    eos: int | Collection[int],
    stop: Callable[[list[int]], bool] | None = None,
    limits: Sequence[int] | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """Decode a left-padded batch; each row's tokens (its end token included when reached) and their log-probs.

    A row finishes at an end token (`eos`: one id or all of the model's end ids), when `stop(its tokens)` is
    true, or after `max_new_tokens` tokens (`limits[row]` tokens when given: the room its prompt leaves)."""
    n = input_ids.shape[0]
    ends = {eos} if isinstance(eos, int) else set(eos)
    limits = list(limits) if limits is not None else [max_new_tokens] * n
    tokens: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    if max_new_tokens <= 0:
        return tokens, logprobs
    keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
    extra = {"logits_to_keep": 1} if keep_last else {}
    rows = list(range(n))  # the batch row each position of the running batch stands for
    alive = [True] * n  # a finished row stays in the running batch only when the cache cannot drop rows
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    step_ids, step_positions, cache, droppable = input_ids, positions, None, False
    for step in range(max_new_tokens):
        out = model(
            input_ids=step_ids,
            attention_mask=attention,
            position_ids=step_positions,
            past_key_values=cache,
            use_cache=True,
            **extra,
        )
        if cache is None:  # the model built its cache in the prefill; its kind does not change after
            droppable = _can_drop_rows(out.past_key_values)
        cache = out.past_key_values
        chosen, chosen_logprobs = sampler.choose(out.logits[:, -1], rows)
        newly_finished = False
        for r, t, lp in zip(rows, chosen.tolist(), chosen_logprobs.tolist()):
            if not alive[r]:  # a row the cache could not drop
                continue
            tokens[r].append(t)
            logprobs[r].append(lp)
            if t in ends or len(tokens[r]) >= limits[r] or (stop is not None and stop(tokens[r])):
                alive[r], newly_finished = False, True
        if step == max_new_tokens - 1 or not any(alive):
            break
        last = step_positions[:, -1:]
        if newly_finished and droppable:
            keep = torch.tensor([k for k, r in enumerate(rows) if alive[r]], device=input_ids.device)
            cache.batch_select_indices(keep)
            rows = [rows[k] for k in keep.tolist()]
            chosen, attention, last = chosen[keep], attention[keep], last[keep]
        attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=1)
        step_ids, step_positions = chosen[:, None], last + 1
    return tokens, logprobs


@torch.no_grad()
def decode_with_generate(
    model,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    sampler: SeededSampler,
    max_new_tokens: int,
    eos: int,
    stop: Callable[[list[int]], bool] | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """`decode` done by `model.generate` (the hf engine's decoder until 2026-12-05): finished rows stay in the
    batch, decoding padding. Kept as the reference that tests/test_engine.py and benchmarks/bench_decode.py
    compare `decode` with; the engine does not use it."""
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    picked, picked_lp, width = [], [], input_ids.shape[1]

    def processor(_ids, scores):
        chosen, lp = sampler.choose(scores, list(range(scores.shape[0])))
        picked.append(chosen)
        picked_lp.append(lp)
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen[:, None], 0.0)

    def stopping(ids, _scores, **_):
        # on the ids' device: generate ORs this with its own per-row flags, which live there (a CPU answer
        # beside CUDA ids fails)
        return torch.tensor([stop is not None and stop(row[width:].tolist()) for row in ids], device=ids.device)

    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos)
    model.generate(
        input_ids=input_ids,
        attention_mask=attention,
        generation_config=config,
        logits_processor=LogitsProcessorList([processor]),
        stopping_criteria=StoppingCriteriaList([stopping]),
    )
    tokens, logprobs = torch.stack(picked, 1).tolist(), torch.stack(picked_lp, 1).tolist()
    for row in range(len(tokens)):  # a row ends at EOS or where the stop rule first holds
        cut = next(
            (t + 1 for t in range(len(tokens[row])) if stop is not None and stop(tokens[row][: t + 1])),
            len(tokens[row]),
        )
        if eos in tokens[row][:cut]:
            cut = tokens[row].index(eos) + 1
        tokens[row], logprobs[row] = tokens[row][:cut], logprobs[row][:cut]
    return tokens, logprobs
