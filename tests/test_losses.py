"""Closed-form checks of the nll / dft / is losses (sftadapt/train/losses.py); pure tensors, no model."""

import math

import pytest
import torch

from sftadapt.train.losses import LossStats, loss_summary, sft_loss, token_logprobs, token_weights


def _logits(shape=(3, 5, 7), seed=0):
    torch.manual_seed(seed)
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def _mask(lengths, width):
    return torch.tensor([[t < n for t in range(width)] for n in lengths])


def test_token_logprobs_matches_log_softmax_and_zero_where_ignored():
    logits = _logits()
    labels = torch.randint(0, 7, (3, 5))
    labels[0, 3:] = -100
    logp = token_logprobs(logits, labels)
    expected = torch.log_softmax(logits, -1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    keep = labels != -100
    assert torch.allclose(logp[keep], expected[keep], atol=1e-6)
    assert torch.all(logp[~keep] == 0)


def test_dft_on_two_equiprobable_tokens_is_half_the_cross_entropy():
    logits = torch.zeros(2, 4, 2, requires_grad=True)  # p = 1/2 for both tokens everywhere
    labels = torch.tensor([[0, 1, 1, 0], [1, 0, -100, -100]])
    logp, mask = token_logprobs(logits, labels), labels != -100
    nll, _ = sft_loss(logp, mask, "nll")
    dft, _ = sft_loss(logp, mask, "dft")
    assert nll.item() == pytest.approx(math.log(2), abs=1e-6)
    assert dft.item() == pytest.approx(0.5 * math.log(2), abs=1e-6)
    (grad_nll,) = torch.autograd.grad(nll, logits, retain_graph=True)
    (grad_dft,) = torch.autograd.grad(dft, logits)
    # The weight is a stop-gradient: DFT's gradient is exactly p times the NLL gradient, not d(p log p).
    assert torch.allclose(grad_dft, 0.5 * grad_nll, atol=1e-7)


def test_dft_floor_raises_small_probabilities_only():
    logp = torch.log(torch.tensor([[0.01, 0.5, 0.9]]))
    mask = torch.ones(1, 3, dtype=torch.bool)
    weights, _ = token_weights(logp, mask, "dft", dft_floor=0.2)
    assert torch.allclose(weights, torch.tensor([[0.2, 0.5, 0.9]]))
    loss, _ = sft_loss(logp, mask, "dft", dft_floor=0.2)
    expected = -(0.2 * math.log(0.01) + 0.5 * math.log(0.5) + 0.9 * math.log(0.9)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_is_with_behaviour_equal_to_current_policy_is_nll_with_unit_weights():
    logits = _logits()
    labels = torch.randint(0, 7, (3, 5))
    mask = _mask([5, 3, 1], 5)
    logp = token_logprobs(logits, labels)
    behavior = logp.detach().clone()
    loss_is, stats = sft_loss(
        logp, mask, "is", behavior_logprobs=behavior, has_behavior=torch.ones(3, dtype=torch.bool)
    )
    loss_nll, _ = sft_loss(logp, mask, "nll")
    assert loss_is.item() == pytest.approx(loss_nll.item(), abs=1e-12)
    grads = [torch.autograd.grad(x, logits, retain_graph=True)[0] for x in (loss_is, loss_nll)]
    assert torch.allclose(grads[0], grads[1], atol=1e-12)
    summary = loss_summary(stats)
    assert summary["weight_mean"] == pytest.approx(1.0) and summary["weight_max"] == pytest.approx(1.0)
    assert summary["clip_frac"] == 0 and summary["ess"] == pytest.approx(9.0)  # 5 + 3 + 1 tokens


def test_is_without_behaviour_is_dft_and_expert_rows_ignore_stale_values():
    logits = _logits()
    labels = torch.randint(0, 7, (3, 5))
    mask = _mask([5, 4, 2], 5)
    logp = token_logprobs(logits, labels)
    dft, _ = sft_loss(logp, mask, "dft")
    no_behaviour, _ = sft_loss(logp, mask, "is")
    # Rows flagged as expert take log π_β = 0 whatever their behaviour column holds.
    garbage = torch.full((3, 5), -3.0)
    flagged, _ = sft_loss(logp, mask, "is", behavior_logprobs=garbage, has_behavior=torch.zeros(3, dtype=torch.bool))
    assert no_behaviour.item() == pytest.approx(dft.item(), abs=1e-12)
    assert flagged.item() == pytest.approx(dft.item(), abs=1e-12)
    mixed, _ = sft_loss(logp, mask, "is", behavior_logprobs=garbage, has_behavior=torch.tensor([False, True, False]))
    assert mixed.item() != pytest.approx(dft.item(), abs=1e-6)  # the behaviour row does change the loss


def test_is_clipping_bound_and_clipped_fraction():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    behavior = torch.log(torch.tensor([[0.5, 0.25, 0.01, 1e-30]]))  # ratios 1, 2, 50, 5e29
    mask = torch.ones(1, 4, dtype=torch.bool)
    weights, clipped = token_weights(logp, mask, "is", behavior, torch.tensor([True]), is_clip=5.0)
    assert torch.allclose(weights, torch.tensor([[1.0, 2.0, 5.0, 5.0]]))
    assert clipped.tolist() == [[False, False, True, True]]
    loss, stats = sft_loss(logp, mask, "is", behavior_logprobs=behavior, has_behavior=torch.tensor([True]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-(13.0 * math.log(0.5)) / 4, rel=1e-6)
    summary = loss_summary(stats)
    assert summary["clip_frac"] == 0.5 and summary["weight_max"] == 5.0 and summary["weight_mean"] == 13 / 4
    unclipped, _ = token_weights(logp, mask, "is", behavior, torch.tensor([True]), is_clip=None)
    assert unclipped[0, 2].item() == pytest.approx(50.0, rel=1e-5)


def test_sequence_level_ratio_is_the_geometric_mean_of_the_row():
    logp = torch.log(torch.tensor([[0.5, 0.8, 0.1], [0.3, 0.3, 0.3]]))
    behavior = torch.log(torch.tensor([[0.25, 0.2, 0.1], [0.6, 0.9, 0.3]]))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    weights, clipped = token_weights(
        logp, mask, "is", behavior, torch.tensor([True, True]), is_clip=5.0, is_level="sequence"
    )
    row0 = (2.0 * 4.0 * 1.0) ** (1 / 3)  # token ratios 2, 4, 1
    row1 = (0.5 * (1 / 3)) ** (1 / 2)  # the masked third token does not count
    assert torch.allclose(weights, torch.tensor([[row0] * 3, [row1, row1, 0.0]]), atol=1e-6)
    assert not clipped.any()
    low_clip, clipped = token_weights(
        logp, mask, "is", behavior, torch.tensor([True, True]), is_clip=1.5, is_level="sequence"
    )
    assert torch.allclose(low_clip[0], torch.full((3,), 1.5)) and clipped.tolist() == [[True] * 3, [False] * 3]


def test_effective_sample_size_formula():
    stats = LossStats(
        nll=torch.tensor(0.0),
        tokens=torch.tensor(4.0),
        weight_sum=torch.tensor(1.0 + 1 + 2 + 4),
        weight_sq_sum=torch.tensor(1.0 + 1 + 4 + 16),
        weight_max=torch.tensor(4.0),
        clipped=torch.tensor(1.0),
    )
    summary = loss_summary(stats)
    assert summary["ess"] == pytest.approx(64 / 22) and summary["ess_frac"] == pytest.approx(64 / 22 / 4)
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    behavior = torch.log(torch.tensor([[0.5, 0.5, 0.25, 0.125]]))  # weights 1, 1, 2, 4
    _, real = sft_loss(
        logp, torch.ones(1, 4, dtype=torch.bool), "is", behavior_logprobs=behavior, has_behavior=torch.tensor([True])
    )
    assert loss_summary(real)["ess"] == pytest.approx(64 / 22, rel=1e-6)


def _step_pieces(loss_type, **kw):
    """A step of 4 rows with 7, 2, 5 and 1 response tokens: one batch of 4 vs 4 micro-batches of 1."""
    logits = _logits((4, 8, 11), seed=3)
    torch.manual_seed(4)
    labels = torch.randint(0, 11, (4, 8))
    mask = _mask([7, 2, 5, 1], 8)
    behavior = -torch.rand(4, 8, dtype=torch.float64) * 3
    has_behavior = torch.tensor([True, False, True, True])

    def loss_of(rows, num_tokens=None, weight_total=None):
        logp = token_logprobs(logits[rows], labels[rows])
        return sft_loss(
            logp,
            mask[rows],
            loss_type,
            num_tokens=num_tokens,
            behavior_logprobs=behavior[rows],
            has_behavior=has_behavior[rows],
            weight_total=weight_total,
            **kw,
        )

    return logits, mask, loss_of


@pytest.mark.parametrize(
    "loss_type,kw",
    [
        ("nll", {}),
        ("dft", {}),
        ("is", {}),
        ("is", {"is_level": "sequence"}),
        ("is", {"is_self_normalize": True, "is_clip": 1.2}),
    ],
)
def test_four_micro_batches_equal_one_batch_of_four(loss_type, kw):
    logits, mask, loss_of = _step_pieces(loss_type, **kw)
    big, big_stats = loss_of(slice(0, 4))
    (big_grad,) = torch.autograd.grad(big, logits)
    step_tokens = int(mask.sum())
    weight_total = None
    if kw.get("is_self_normalize"):  # the step's Σw, as the trainer's pre-pass computes it
        weight_total = sum(loss_of(slice(i, i + 1))[1].weight_sum for i in range(4))
    total, stats, grad = 0.0, None, torch.zeros_like(logits)
    for i in range(4):
        micro, micro_stats = loss_of(slice(i, i + 1), num_tokens=step_tokens, weight_total=weight_total)
        grad += torch.autograd.grad(micro, logits)[0]
        total += micro.item()
        stats = micro_stats if stats is None else stats + micro_stats
    assert total == pytest.approx(big.item(), abs=1e-6)
    assert torch.allclose(grad, big_grad, atol=1e-6)
    for key, value in loss_summary(big_stats).items():
        assert loss_summary(stats)[key] == pytest.approx(value, abs=1e-6), key
    # Normalising each micro-batch by its own token count (the accumulation bug) would not match.
    naive = sum(loss_of(slice(i, i + 1), weight_total=weight_total)[0].item() for i in range(4)) / 4
    assert abs(naive - big.item()) > 1e-3


def test_unknown_options_are_refused():
    logp, mask = torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="loss_type"):
        sft_loss(logp, mask, "kl")
    with pytest.raises(ValueError, match="is_level"):
        sft_loss(logp, mask, "is", is_level="row")


def test_dft_rows_take_dfts_weight_while_the_other_rows_keep_their_loss():
    logits = torch.zeros(2, 3, 2, requires_grad=True)  # p = 1/2 everywhere
    labels = torch.tensor([[0, 1, 1], [1, 0, 0]])
    logp, mask = token_logprobs(logits, labels), labels != -100
    rows = torch.tensor([True, False])  # row 0: an expert fallback row trained with dft
    weights, _ = token_weights(logp, mask, "nll", dft_rows=rows)
    assert weights.tolist() == [[0.5] * 3, [1.0] * 3]
    mixed, _ = sft_loss(logp, mask, "nll", dft_rows=rows)
    assert mixed.item() == pytest.approx((3 * 0.5 + 3 * 1.0) * math.log(2) / 6, abs=1e-6)
    # under is, a flagged row is DFT's and never counts as clipped; a dft loss ignores the flags
    blp = torch.full((2, 3), -5.0)  # ratio (1/2)/e^-5 ~ 74 > clip 5
    w_is, clipped = token_weights(logp, mask, "is", blp, torch.tensor([True, True]), is_clip=5.0, dft_rows=rows)
    assert w_is[0].tolist() == [0.5] * 3 and w_is[1].tolist() == pytest.approx([5.0] * 3)
    assert clipped.tolist() == [[False] * 3, [True] * 3]
    assert token_weights(logp, mask, "dft", dft_rows=rows)[0].tolist() == [[0.5] * 3] * 2
