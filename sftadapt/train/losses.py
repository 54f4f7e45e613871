"""Training losses on response tokens: `nll` (SFT), `dft` (Dynamic Fine-Tuning) and `is` (importance-weighted SFT).

Pure tensor functions, no I/O. Every loss has the form

    L = -Σ_t sg(w_t) · log π_θ(y_t | x, y_<t) / N

over the response tokens t (prompt and padding masked), where N = `num_tokens` is the response-token count of
the WHOLE optimiser step (all gradient-accumulation micro-batches on all ranks). Summing the losses of the
micro-batches of a step therefore gives the loss of one big batch, and the same gradient.

- `nll`: w = 1.
- `dft` (arXiv 2508.05629): w = p = π_θ(y_t|·), or max(p, p_min) with the floor `dft_floor` > 0 (default off),
  for tokens such as EOS that start at a very low probability.
- per-row DFT (`dft_rows`, the `fallback: dft` option of train): the rows flagged take DFT's weight whatever the
  loss of the others, e.g. the expert-fallback rows of an adapted set trained with dft while the rest use nll.
- `is` (Mind the Gap's correction after rewriting): w = min(exp(log π_θ − log π_β), c) with π_β the
  probability under the policy that produced the row (`behavior_logprobs`). Rows without behaviour log-probs
  (expert fallback) take π_β = 1, so their weight is DFT's p. `is_level="sequence"` uses one ratio per row, the
  geometric mean of its token ratios exp(mean_t(log π_θ − log π_β)), clipped at c and applied to every token of
  the row. `is_self_normalize` rescales the weights so that they average 1 over the step's tokens:
  w̃ = w · N / W with W = Σ_step w (`weight_total`; default: this call's Σw, exact when the call is the step).

Beside the loss, `sft_loss` returns detached sums (`LossStats`) that add up over micro-batches and ranks;
`loss_summary` turns them into what the trainer logs: the plain NLL (so a falling weighted loss with a rising NLL
is visible), mean and max weight, fraction of tokens clipped, and the effective sample size (Σw)²/Σw².
Weight statistics are of the weights before self-normalisation (ESS does not depend on that scale).

Each loss is one `Loss` row of the registry `LOSSES` (its weight function, options, model-card formula, and
whether it reads behaviour log-probs or must train in float32); `register_loss` adds one, and the train stage
reads only the row: `loss: <name>` with `loss_options: {...}` for the options a new row declares.

    logp = token_logprobs(logits[:, :-1], labels[:, 1:])
    loss, stats = sft_loss(logp, labels[:, 1:] != -100, "is", num_tokens=step_tokens,
                           behavior_logprobs=blp[:, 1:], has_behavior=has_blp)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F

IS_LEVELS = ("token", "sequence")


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """log π(labels) from logits already aligned with them (B, T, V) × (B, T) -> (B, T); 0 where ignored.

    Uses the fused cross-entropy kernel, so no second (B, T, V) tensor of log-softmax is materialised."""
    if logits.dtype in (torch.float16, torch.bfloat16):  # log-probs of half-precision logits lose the weights
        logits = logits.float()
    flat = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=ignore_index, reduction="none"
    )
    return -flat.view(labels.shape)


WeightFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Loss:
    """One training loss: a row of `LOSSES`.

    `weights(logp, mask, behavior_logprobs=..., has_behavior=..., **options)` returns the detached per-token
    weights w_t (0 off the mask) and a bool tensor of the tokens whose weight was clipped; it receives every
    option of `options` ({name: default}; the train stage's flat field of that name where it has one, else
    `loss_options`). `formula` is what the model card prints. `needs_behavior`: the weights read the behaviour
    log-probs (the stage checks they were scored in float32). `float32_only`: π_θ must be computed in float32
    whatever `dtype` says (a ratio against π_β scored in float32). `logged`: the `loss_summary` keys the
    trainer logs beside loss and nll."""

    name: str
    weights: WeightFn
    options: Mapping[str, Any] = field(default_factory=dict)
    formula: str = ""
    needs_behavior: bool = False
    float32_only: bool = False
    logged: tuple[str, ...] = ("weight_mean", "weight_max")


LOSSES: dict[str, Loss] = {}


def register_loss(loss: Loss, replace: bool = False) -> Loss | None:
    """Add `loss` to `LOSSES`; returns the row it replaced (None if new). A taken name is refused unless
    `replace`, so that two modules cannot silently swap each other's loss."""
    previous = LOSSES.get(loss.name)
    if previous is not None and not replace:
        raise ValueError(f"loss '{loss.name}' is already registered; pass replace=True to replace it")
    LOSSES[loss.name] = loss
    return previous


def loss_names() -> tuple[str, ...]:
    """The registered loss names, now (a loss registered later is included)."""
    return tuple(LOSSES)


def get_loss(name: str) -> Loss:
    """The row of `name`, or a ValueError listing the registered ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss_type '{name}' is not one of {loss_names()}") from None


def __getattr__(name: str) -> Any:
    # LOSS_TYPES stays importable and current: computed from the registry each time it is read
    if name == "LOSS_TYPES":
        return loss_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def token_weights(
    logp: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    behavior_logprobs: torch.Tensor | None = None,
    has_behavior: torch.Tensor | None = None,
    dft_floor: float = 0.0,
    is_clip: float | None = 5.0,
    is_level: str = "token",
    dft_rows: torch.Tensor | None = None,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token weights (detached, 0 off the mask) and a bool tensor of the tokens whose ratio was clipped.
    `dft_rows` (B,) bool: rows whose weights are DFT's whatever `loss_type` says. `options`: those of a
    registered loss beyond the built-in ones (the row's declared defaults fill the rest)."""
    loss = get_loss(loss_type)
    given = {"dft_floor": dft_floor, "is_clip": is_clip, "is_level": is_level, **options}
    unknown = sorted(set(options) - set(loss.options))
    if unknown:
        raise ValueError(f"loss '{loss.name}' has no option {', '.join(unknown)}; its options: {_names(loss)}")
    weights, clipped = _row_weights(loss, logp, mask, behavior_logprobs, has_behavior, given)
    if dft_rows is not None and loss_type != "dft" and bool(dft_rows.any()):
        rows = dft_rows.bool().view(-1, 1)
        dft, _ = _row_weights(LOSSES["dft"], logp, mask, None, None, given)
        weights, clipped = torch.where(rows, dft, weights), clipped & ~rows
    return weights, clipped


def _names(loss: Loss) -> str:
    return ", ".join(loss.options) or "none"


def _row_weights(loss: Loss, logp, mask, behavior_logprobs, has_behavior, given: dict[str, Any]):
    values = {name: given.get(name, default) for name, default in loss.options.items()}
    return loss.weights(
        logp.detach(), mask.bool(), behavior_logprobs=behavior_logprobs, has_behavior=has_behavior, **values
    )


def _nll_weights(logp, mask, **_) -> tuple[torch.Tensor, torch.Tensor]:
    return mask.to(logp.dtype), torch.zeros_like(mask)


def _dft_weights(logp, mask, dft_floor: float = 0.0, **_) -> tuple[torch.Tensor, torch.Tensor]:
    prob = torch.exp(torch.where(mask, logp, torch.zeros_like(logp)))
    if dft_floor > 0:
        prob = prob.clamp_min(dft_floor)
    return prob * mask, torch.zeros_like(mask)


def _is_weights(
    logp,
    mask,
    behavior_logprobs=None,
    has_behavior=None,
    is_clip: float | None = 5.0,
    is_level: str = "token",
    **_,  # is_self_normalize: applied by sft_loss over the step, not per token
) -> tuple[torch.Tensor, torch.Tensor]:
    if behavior_logprobs is None:
        behavior = torch.zeros_like(logp)
    else:
        behavior = behavior_logprobs.detach().to(logp.dtype)
        if has_behavior is not None:
            # Expert rows: behaviour probability 1, i.e. log π_β = 0.
            behavior = torch.where(has_behavior.bool().view(-1, 1), behavior, torch.zeros_like(behavior))
    log_ratio = torch.where(mask, logp - behavior, torch.zeros_like(logp))
    if is_level == "sequence":
        counts = mask.sum(dim=1, keepdim=True).clamp_min(1)
        log_ratio = (log_ratio.sum(dim=1, keepdim=True) / counts).expand_as(logp)
    elif is_level != "token":
        raise ValueError(f"is_level '{is_level}' is not one of {IS_LEVELS}")
    # Clip in log space: exp of a large log-ratio would overflow to inf before min() could bound it.
    if is_clip is not None and is_clip > 0:
        log_clip = math.log(is_clip)
        clipped = (log_ratio > log_clip) & mask
        log_ratio = log_ratio.clamp_max(log_clip)
    else:
        clipped = torch.zeros_like(mask)
    return torch.exp(log_ratio) * mask, clipped


register_loss(Loss("nll", _nll_weights, {}, "L = -Σ_t log π(y_t) / N", logged=()))
register_loss(Loss("dft", _dft_weights, {"dft_floor": 0.0}, "L = -Σ_t sg(max(p_t, floor)) · log π(y_t) / N"))
register_loss(
    Loss(
        "is",
        _is_weights,
        {"is_clip": 5.0, "is_level": "token", "is_self_normalize": False},
        "L = -Σ_t sg(min(π(y_t)/π_β(y_t), c)) · log π(y_t) / N  (π_β = 1 for expert rows)",
        needs_behavior=True,
        float32_only=True,
        logged=("weight_mean", "weight_max", "clip_frac", "ess", "ess_frac"),
    )
)


@dataclass
class LossStats:
    """Sums over the tokens of one call (detached); add them up over micro-batches and ranks, then `loss_summary`.

    `nll` is Σ(−log p)/N with the step's N, so it adds up to the step's mean NLL like the loss does."""

    nll: torch.Tensor
    tokens: torch.Tensor
    weight_sum: torch.Tensor
    weight_sq_sum: torch.Tensor
    weight_max: torch.Tensor
    clipped: torch.Tensor

    def __add__(self, other: LossStats) -> LossStats:
        summed = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        summed["weight_max"] = torch.maximum(self.weight_max, other.weight_max)
        return LossStats(**summed)


def sft_loss(
    logp: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "nll",
    num_tokens: int | torch.Tensor | None = None,
    behavior_logprobs: torch.Tensor | None = None,
    has_behavior: torch.Tensor | None = None,
    dft_floor: float = 0.0,
    is_clip: float | None = 5.0,
    is_level: str = "token",
    is_self_normalize: bool = False,
    weight_total: float | torch.Tensor | None = None,
    dft_rows: torch.Tensor | None = None,
    **options: Any,
) -> tuple[torch.Tensor, LossStats]:
    """The loss of one micro-batch, normalised by the step's response-token count `num_tokens`.

    logp (B, T): log-probs of the labels under the current policy (with grad); mask (B, T): response tokens;
    behavior_logprobs (B, T) aligned with logp, has_behavior (B,) bool. `num_tokens` defaults to this call's
    count (the call is the whole step). `weight_total` is the step's Σw for `is_self_normalize` (a loss that
    declares that option). `options`: a registered loss's own options."""
    mask_f = mask.to(logp.dtype)
    local_tokens = mask_f.sum()
    if num_tokens is None:
        num_tokens = local_tokens
    weights, clipped = token_weights(
        logp, mask, loss_type, behavior_logprobs, has_behavior, dft_floor, is_clip, is_level, dft_rows, **options
    )
    loss_weights = weights
    if is_self_normalize and "is_self_normalize" in LOSSES[loss_type].options:
        total = weights.sum() if weight_total is None else weight_total
        loss_weights = weights * (num_tokens / torch.as_tensor(total, dtype=weights.dtype).clamp_min(1e-12))
    masked_logp = logp * mask_f
    loss = -(loss_weights * masked_logp).sum() / num_tokens
    with torch.no_grad():
        stats = LossStats(
            nll=-masked_logp.detach().sum() / num_tokens,
            tokens=local_tokens.detach(),
            weight_sum=weights.sum(),
            weight_sq_sum=(weights * weights).sum(),
            weight_max=weights.max() if weights.numel() else weights.new_zeros(()),
            clipped=clipped.sum().to(weights.dtype),
        )
    return loss, stats


def loss_summary(stats: LossStats, steps: int = 1) -> dict[str, float]:
    """What is logged: mean NLL per step, mean/max weight, clipped fraction, ESS (Σw)²/Σw² and ESS/tokens."""
    tokens = float(stats.tokens)
    weight_sum, weight_sq_sum = float(stats.weight_sum), float(stats.weight_sq_sum)
    ess = weight_sum * weight_sum / weight_sq_sum if weight_sq_sum > 0 else 0.0
    return {
        "nll": float(stats.nll) / max(steps, 1),
        "weight_mean": weight_sum / tokens if tokens else 0.0,
        "weight_max": float(stats.weight_max),
        "clip_frac": float(stats.clipped) / tokens if tokens else 0.0,
        "ess": ess,
        "ess_frac": ess / tokens if tokens else 0.0,
    }
