"""Log-probs of the trained tokens, computed without work on positions that train nothing.

Two savings, each giving the same numbers as one forward over the padded batch with the full head
(tests/test_train.py checks log-probs and gradients against that in float64; measured on SFT steps:
benchmarks/logits.md):

1. **The LM head only where a token is trained.** A causal LM's head projects every position onto the vocabulary
   (49,152 entries for SmolLM2, 151,936 for Qwen), and its log-softmax runs over all of them. The losses only use
   the positions that predict a response token: prompt and padding are masked out. So the mask goes to the model
   as a boolean `logits_to_keep` (transformers >= 5 slices the last hidden states with it before the head:
   `modeling_utils.slice_logits_to_keep`) and the logits come back for the kept positions only, flattened to
   (kept, vocab). A model whose forward does not slice through `slice_logits_to_keep` (remote code, older
   transformers, a model that post-processes its hidden states its own way) gets the full head:
   `selective_logits` decides.
2. **No forward over padding, on a CPU.** A batch is padded on the right to its longest row, and every layer runs
   on the padding too (a fifth of the quickstart's warm-up batch). With the rows sorted by length, `length_groups`
   cuts the batch into the groups that minimise the padded token count plus a fixed cost per extra forward, and
   each group runs trimmed to its own longest row. The padding never reached a real token (causal attention,
   right padding), so nothing changes but the work. All groups' graphs feed one backward. Only for a plain (or
   PEFT) model on a CPU: a DDP / DeepSpeed / FSDP wrapper expects one forward per backward, and a GPU runs a
   padded batch in about the time of its longest row, so there the batch goes in whole (`split_rows`).
"""

from __future__ import annotations

import inspect
import sys

import torch

from sftadapt.train.data import IGNORE_INDEX
from sftadapt.train.losses import token_logprobs

# One more forward costs about as much as this many more tokens in a batch: SmolLM2-135M's forward on a Zen 4
# (AVX2 kernels, fp32) took ~0.07 s + 1.33 ms per token from 200 to 1,600 tokens (benchmarks/logits.md), and a
# small group also runs its matmuls less efficiently, so the constant is rounded up from ~50.
GROUP_OVERHEAD_TOKENS = 64


def _unwrap(model):
    while hasattr(model, "module"):  # DDP / DeepSpeed engines
        model = model.module
    if hasattr(model, "get_base_model"):  # PEFT: the transformers model under the adapters
        model = model.get_base_model()
    return model


def selective_logits(model) -> bool:
    """Whether `model`'s forward takes a boolean (batch, seq) `logits_to_keep` and slices its hidden states with
    transformers' `slice_logits_to_keep` (the modelling file that defines the forward imports it)."""
    forward = type(_unwrap(model)).forward
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
    module = sys.modules.get(getattr(forward, "__module__", None) or "")
    return "logits_to_keep" in params and getattr(module, "slice_logits_to_keep", None) is not None


def split_rows(model) -> bool:
    """Whether a batch may go through `model` in several forwards before one backward: a model that is not
    wrapped for distributed training, on a CPU."""
    if hasattr(model, "module"):
        return False
    param = next(model.parameters(), None)
    return param is not None and param.device.type == "cpu"


def length_groups(lengths: list[int], overhead: int | None = None) -> list[list[int]]:
    """Row indices in groups, each run as one forward trimmed to its longest row, so that
    Σ over groups (rows x longest + overhead) is least. Groups are runs of the rows sorted by length (an optimal
    grouping has that form), found exactly by dynamic programming over the sorted lengths.
    `overhead`: the cost of one more group, in tokens (GROUP_OVERHEAD_TOKENS by default)."""
    overhead = GROUP_OVERHEAD_TOKENS if overhead is None else overhead
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    best = [0] + [None] * len(sizes)  # best[i]: least cost of the i shortest rows
    cut = [0] * (len(sizes) + 1)
    for i in range(1, len(sizes) + 1):
        for j in range(i):  # rows j..i-1 in one group, padded to sizes[i-1]
            cost = best[j] + (i - j) * sizes[i - 1] + overhead
            if best[i] is None or cost < best[i]:
                best[i], cut[i] = cost, j
    groups, i = [], len(sizes)
    while i > 0:
        groups.append(order[cut[i] : i])
        i = cut[i]
    return groups[::-1]


def _forward(model, input_ids, attention_mask, targets, selective: bool) -> torch.Tensor:
    if not selective:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return token_logprobs(logits, targets)
    keep = targets != IGNORE_INDEX
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits
    kept = token_logprobs(logits, targets[keep])  # (kept,), in the row-major order of keep's True entries
    return torch.zeros(targets.shape, dtype=kept.dtype, device=kept.device).masked_scatter(keep, kept)


def target_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    selective: bool,
    split: bool = False,
) -> torch.Tensor:
    """log π(targets) (B, T), 0 where the target is IGNORE_INDEX; `targets[:, t]` is the token position t predicts.
    `selective`: the head only where a target is; `split`: the rows in length groups (the module docstring)."""
    if not split or input_ids.shape[0] < 2:
        return _forward(model, input_ids, attention_mask, targets, selective)
    width = input_ids.shape[1]
    positions = torch.arange(1, width + 1, device=attention_mask.device)
    lengths = (attention_mask * positions).amax(1).tolist()  # up to the last real token, whatever the padding
    groups = length_groups(lengths)
    if len(groups) == 1:
        return _forward(model, input_ids, attention_mask, targets, selective)
    parts = []
    for rows in groups:
        index = torch.tensor(rows, device=input_ids.device)
        n = max(1, *(lengths[r] for r in rows))
        logp = _forward(model, input_ids[index, :n], attention_mask[index, :n], targets[index, :n], selective)
        parts.append(torch.nn.functional.pad(logp, (0, width - n)))
    order = torch.tensor([r for rows in groups for r in rows], device=input_ids.device)
    return torch.cat(parts)[torch.argsort(order)]
