"""The in-process `vllm` backend against hf on the embedded model (fp32): greedy agreement and score agreement.

Runs wherever `import vllm` works (a CUDA machine, or a vLLM CPU build on a CPU it supports); elsewhere each
test is skipped with the reason: vllm not installed, or this CPU's instruction set (the vLLM CPU build gave
empty greedy completions on an AVX2-only EPYC, issue 16). A CPU build is trusted only after its greedy output
is non-empty, which the first test checks before anything else.
"""

import pytest

from sftadapt.data import prompts as P
from sftadapt.engines import EngineConfig, Sampling, make_engine

pytestmark = pytest.mark.slow


def _cpu_note() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "CPU flags unknown"
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    missing = [f for f in ("avx512f", "amx_bf16") if f not in flags]
    return f"this CPU has {', '.join(isa) or 'no AVX2'}" + (f", lacks {', '.join(missing)}" if missing else "")


@pytest.fixture(scope="module")
def engines():
    from sftadapt.engines.vllm import vllm_unavailable

    why = vllm_unavailable()
    if why:
        pytest.skip(
            f"{why}; {_cpu_note()} (real OpenAI-compatible servers are tested by tests/test_engine_openai.py: llama.cpp's in `make test`, llama-cpp-python's in `make test-server`)"
        )

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
    empty = sum(not c[0].text.strip() for c in theirs)
    assert empty == 0, (
        f"vLLM returned {empty}/32 empty greedy completions: this build is broken on this CPU ({_cpu_note()})"
    )
    ours = hf.generate(prompts, params)
    same = sum(a[0].token_ids == b[0].token_ids for a, b in zip(ours, theirs))
    print(f"\ngreedy fp32, 32 prompts x 48 tokens: hf == vllm on {same}/32")
    assert same >= 0.95 * 32


def test_vllm_scores_agree_with_hf(engines):
    hf, vllm = engines
    prompts = _prompts(hf.tokenizer, 16)
    responses = [c[0].text for c in hf.generate(prompts, Sampling(temperature=0.0, max_new_tokens=48))]
    mine, theirs = hf.score(prompts, responses), vllm.score(prompts, responses)
    diffs = [abs(x - y) for a, b in zip(mine, theirs) for x, y in zip(a.logprobs, b.logprobs)]
    assert all(len(a.logprobs) == len(b.logprobs) for a, b in zip(mine, theirs))
    assert sum(diffs) / len(diffs) < 0.01
