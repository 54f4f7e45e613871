"""The measurements of benchmarks/gpu_check.py, run in one worker process (`gpu_check.py --worker`).

Every model is random-weight and built from a config in code (tests/portable_model.py: Llama / Qwen2 shapes and
a byte-level tokenizer made in code), so nothing is downloaded and no file outside the repo is needed. Each part
gets a time budget and records why it stopped or skipped a step; a part that raises records its error line
instead of ending the worker. Nothing here imports trl, vllm or math_verify unless the part needs it and it is
installed (GRPO: trl and datasets).
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import json
import os
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Qwen2.5's published shapes (config.json of Qwen/Qwen2.5-1.5B and -7B), with random weights
SHAPES = {
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    # --tiny: the same code at a size a CPU runs in a second
    "tiny-qwen2": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,
    ),
}
# the fp32-vs-bf16 agreement model: large enough for bf16 rounding to show, initialised wider (std 0.1) than a
# real init (0.02) so that its next-token distributions are peaked like a trained model's, not near-uniform
AGREEMENT_SHAPE = dict(
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    initializer_range=0.1,
)
TINY_AGREEMENT_SHAPE = dict(initializer_range=0.1)  # the tiny-random shape
SFT_SHAPE = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4)


class Budget:
    """A part's time budget: the seconds left of it (never past the worker's deadline)."""

    def __init__(self, seconds: float, deadline: float):
        self.end = min(time.time() + seconds, deadline)

    def left(self) -> float:
        return self.end - time.time()


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def installed(name: str) -> bool:
    """Whether `name` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- env
def part_env(device: str, pins: dict[str, str]) -> dict:
    """Versions, the GPU, and which missing package blocks which part."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def ver(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    dists = ("torch", "transformers", "tokenizers", "accelerate", "peft", "pytest", "trl", "datasets", "vllm")
    out: dict = {
        "python": platform.python_version(),
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": device,
        "packages": {d: ver(d) for d in (*dists, "math-verify")},
        "pins": pins,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            bf16_supported=bool(torch.cuda.is_bf16_supported()),
        )
    blocks = []
    for dist, what in (
        ("trl", "the GRPO step (part train) and the GRPO gpu test"),
        ("datasets", "the GRPO step (TRL's trainer needs it)"),
        ("vllm", "nothing here: the check measures the hf engine only"),
        ("math-verify", "nothing here: the GRPO step's reward uses a stub verifier"),
    ):
        if out["packages"].get(dist) is None:
            blocks.append(f"{dist} not installed: {what}")
    for dist, pinned in pins.items():
        have = out["packages"].get(dist)
        if have is not None and have.split("+")[0] != pinned:
            blocks.append(f"{dist} {have} here, sftadapt pins {pinned}: parts that fail may fail for that")
    out["notes"] = blocks
    return out


# ---------------------------------------------------------------- agreement: fp32 vs bf16 on the hf engine
def _prompts(tok, n: int, scale: int = 1) -> list[str]:
    from sftadapt.data import prompts as P

    return [
        P.solve_prompt(tok, f"Problem {i}: what is {3 * i + 1} + {7 * i + 2}? " * (1 + (i % 3) * scale))
        for i in range(n)
    ]


def _agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    same = total = identical = 0
    diverge = []
    for x, y in zip(a, b):
        n = min(len(x), len(y))
        same += sum(p == q for p, q in zip(x[:n], y[:n]))
        total += n
        identical += x == y
        diverge.append(next((k for k in range(n) if x[k] != y[k]), n))
    return {
        "token_agreement": round(same / max(total, 1), 4),
        "rows_identical": f"{identical}/{len(a)}",
        "first_divergence_mean": round(sum(diverge) / max(len(diverge), 1), 1),
    }


def _score_ids(engine, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
    """Teacher-forced log-probs of given (prompt ids, response ids) through the engine's own scoring pass."""
    pad = engine.tokenizer.pad_token_id
    out = []
    for b in range(0, len(pairs), 8):
        chunk = pairs[b : b + 8]
        longest = max(len(r) for _, r in chunk)
        out += [s.logprobs for s in engine._score_batch(chunk, longest, pad, entropy=False)]
    return out


def part_agreement(device: str, tiny: bool, work: Path, budget: Budget) -> dict:
    """Sampling and scoring of one random model loaded by the hf engine in float32 and in bfloat16 on `device`."""

    from portable_model import write_model_folder

    from sftadapt.data import prompts as P
    from sftadapt.engines import Sampling
    from sftadapt.engines.decode import SeededSampler, decode, decode_with_generate
    from sftadapt.engines.hf import HFEngine, _left_pad

    shape = TINY_AGREEMENT_SHAPE if tiny else AGREEMENT_SHAPE
    folder = write_model_folder(work / "agreement-model", arch="qwen2", vocab_size=512 if tiny else 8192, **shape)
    n, new = (4, 8) if tiny else (16, 32)
    engines = {dt: HFEngine.from_model(folder, dtype=dt, device=device, batch_size=n) for dt in ("float32", "bfloat16")}
    tok = engines["float32"].tokenizer
    prompts = _prompts(tok, n)
    out: dict = {"model": f"qwen2 {shape}", "prompts": n, "new_tokens": new}
    greedy = {dt: e.generate(prompts, Sampling(n=1, temperature=0.0, max_new_tokens=new)) for dt, e in engines.items()}
    sampled = {
        dt: e.generate(prompts, Sampling(n=2, temperature=1.0, max_new_tokens=new, seed=3)) for dt, e in engines.items()
    }
    ids = {dt: [c.token_ids for row in g for c in row] for dt, g in greedy.items()}
    out["greedy_fp32_vs_bf16"] = _agreement(ids["float32"], ids["bfloat16"])
    out["sampled_fp32_vs_bf16"] = _agreement(
        *[[c.token_ids for row in sampled[dt] for c in row] for dt in ("float32", "bfloat16")]
    )
    # the same ids scored by both: the log-prob gap bf16 puts on a response
    prompt_ids = [P.prompt_token_ids(tok, p) for p in prompts]
    pairs = [(prompt_ids[i], c.token_ids) for i, row in enumerate(greedy["float32"]) for c in row if c.token_ids]
    scores = {dt: _score_ids(e, pairs) for dt, e in engines.items()}
    diffs = [abs(a - b) for x, y in zip(scores["float32"], scores["bfloat16"]) for a, b in zip(x, y)]
    out["score_fp32_vs_bf16"] = {
        "max_abs_logprob_diff": round(max(diffs), 5),
        "mean_abs_logprob_diff": round(sum(diffs) / len(diffs), 5),
        "tokens": len(diffs),
    }
    # each precision's sampled log-probs against its own scoring of the same ids (batched decode vs one pass)
    for dt, e in engines.items():
        rows = [(prompt_ids[i], c) for i, row in enumerate(sampled[dt]) for c in row if c.token_ids]
        scored = _score_ids(e, [(p, c.token_ids) for p, c in rows])
        gap = max(abs(a - b) for (_, c), s in zip(rows, scored) for a, b in zip(c.logprobs, s))
        out[f"sample_vs_score_{dt}_max_abs"] = round(gap, 5)
    # the engine's decoder against model.generate, greedy, fp32, on this device
    model = engines["float32"].model
    batch = sorted(prompt_ids, key=len, reverse=True)
    input_ids, attention = _left_pad(batch, tok.eos_token_id, engines["float32"].device)
    ours, _ = decode(model, input_ids, attention, SeededSampler([], 0.0, 1.0), new, tok.eos_token_id)
    ref, _ = decode_with_generate(model, input_ids, attention, SeededSampler([], 0.0, 1.0), new, tok.eos_token_id)
    out["decode_vs_generate_fp32_greedy"] = _agreement(ours, ref)
    for e in engines.values():
        e.close()
    del engines, model
    _free()
    return out


# ---------------------------------------------------------------- train: an SFT step, a GRPO step
def _examples(tok, n: int):
    from sftadapt.data.records import Example

    rows = []
    for i in range(n):
        a, b = 1 + i % 9, 2 + (3 * i) % 7
        response = f"We add {a} and {b}. " * (1 + i % 4) + f"So the answer is \\boxed{{{a + b}}}."
        rows.append(
            Example(id=f"r{i}", problem=f"What is {a} + {b}?", response=response, answer=str(a + b), origin="expert")
        )
    return rows


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.devices, self._start = [], set(), 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if model is not None:
                _sync(next(model.parameters()).device)
                self.devices.add(str(next(model.parameters()).device))
            self.seconds.append(time.perf_counter() - self._start)

    return StepTimer()


def _sft(folder: str, data: Path, out: Path, dtype: str) -> dict:
    from sftadapt.train.stage import TrainConfig, read_log, train

    timer = _step_timer()
    cfg = TrainConfig(
        model=folder,
        data=[str(data)],
        out=str(out),
        loss="nll",
        lr=1e-4,
        max_steps=2,
        batch_size=8,
        grad_accum=1,
        warmup_ratio=0.0,
        save_steps=1000,
        resume=False,
        dtype=dtype,
    )
    summary = train(cfg, callbacks=[timer])
    losses = [row["loss"] for row in read_log(out)]
    return {
        "steps": summary["steps"],
        "losses": losses,
        "step_seconds": [round(s, 3) for s in timer.seconds],
        "seconds_total": summary["seconds"],
        "device": sorted(timer.devices),
        "compute": summary["precision"]["compute"],
        "autocast_bf16": summary["precision"]["autocast_bf16"],
    }


def part_train(device: str, tiny: bool, work: Path, budget: Budget) -> dict:
    """One SFT run (2 optimiser steps) per precision through `sftadapt.train.stage.train`, then, with trl, one
    GRPO step through `sftadapt.rl.direct_rl.direct_rl`."""
    from portable_model import write_model_folder

    from sftadapt.data.records import write_records
    from sftadapt.runtime.models import load_tokenizer

    shape = {} if tiny else SFT_SHAPE
    folder = write_model_folder(work / "train-model", arch="qwen2", vocab_size=512, **shape)
    tok = load_tokenizer(folder)
    data = work / "sft.jsonl"
    write_records(data, _examples(tok, 16))
    out: dict = {"model": f"qwen2 {shape or 'tiny'}", "rows": 16, "batch": 8}
    for dtype in ("float32", "bfloat16"):
        if budget.left() < (3 if tiny else 20):
            out[f"sft_{dtype}"] = {"status": f"skipped: {budget.left():.0f} s left of the part's budget"}
            continue
        try:
            out[f"sft_{dtype}"] = {"status": "ok", **_sft(folder, data, work / f"sft-{dtype}", dtype)}
        except Exception as err:  # noqa: BLE001 - a failed part is a finding to record, not the end of the check
            out[f"sft_{dtype}"] = {"status": f"error: {first_line(err)}", "where": _where(err)}
    a, b = out.get("sft_float32", {}), out.get("sft_bfloat16", {})
    if a.get("losses") and b.get("losses"):
        out["sft_first_loss_rel_diff_bf16_vs_fp32"] = round(abs(b["losses"][0] - a["losses"][0]) / a["losses"][0], 5)

    missing = [d for d in ("trl", "datasets") if not installed(d)]
    if missing:
        out["grpo"] = {"status": f"skipped: {' and '.join(missing)} not installed"}
    elif budget.left() < (5 if tiny else 30):
        out["grpo"] = {"status": f"skipped: {budget.left():.0f} s left of the part's budget"}
    else:
        try:
            out["grpo"] = {"status": "ok", **_grpo(folder, work)}
        except Exception as err:  # noqa: BLE001
            out["grpo"] = {"status": f"error: {first_line(err)}", "where": _where(err)}
    _free()
    return out


class _HalfCorrect:
    """Every other rollout right: a real advantage in each group without math-verify."""

    def verify_many(self, golds, texts):
        from sftadapt.verify import Verdict

        return [Verdict("correct" if i % 2 else "wrong", g, "boxed", 0.0) for i, g in enumerate(golds)]

    def close(self):
        pass


def _grpo(folder: str, work: Path) -> dict:
    from sftadapt.data.records import Problem, write_records
    from sftadapt.rl.direct_rl import DirectRLConfig, direct_rl
    from sftadapt.rl.grpo import GRPOOptions, read_rl_log

    data = work / "problems.jsonl"
    write_records(data, [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=str(i + 1)) for i in range(4)])
    out = work / "grpo"
    started = time.perf_counter()
    cfg = DirectRLConfig(
        model=folder,
        data=str(data),
        out=str(out),
        grpo=GRPOOptions(max_steps=1, num_generations=4, max_completion_length=32, lr=1e-5),
    )
    summary = direct_rl(cfg, verifier=_HalfCorrect(), progress=False)
    log = read_rl_log(out)
    return {
        "steps": summary["steps"],
        "seconds": round(time.perf_counter() - started, 2),
        "tokens_generated": summary["compute"]["tokens_generated"],
        "grad_norm": log[-1].get("grad_norm") if log else None,
        "loss": log[-1].get("loss") if log else None,
    }


def _where(err: BaseException) -> str:
    """The innermost frame of sftadapt (or of this check) an error went through: file:line."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if "sftadapt" in f.filename or "benchmarks" in f.filename]
    f = (ours or frames)[-1]
    return f"{os.path.relpath(f.filename, ROOT)}:{f.lineno}"


# ---------------------------------------------------------------- throughput: the hf engine at real shapes
@contextmanager
def _timed_decode(model, device):
    """Time (synchronised) every model forward and every sampler call of sftadapt's decode loop; yields the
    totals. The wrapper keeps the forward's signature (functools.wraps), so decode still sees logits_to_keep."""
    from sftadapt.engines import decode as D

    totals = {"forward": 0.0, "prefill": 0.0, "sampler": 0.0, "steps": 0}
    forward, choose = model.forward, D.SeededSampler.choose

    @functools.wraps(forward)
    def timed_forward(*args, **kwargs):
        _sync(device)
        start = time.perf_counter()
        result = forward(*args, **kwargs)
        _sync(device)
        spent = time.perf_counter() - start
        totals["forward"] += spent
        if kwargs.get("past_key_values") is None:
            totals["prefill"] += spent
        totals["steps"] += 1
        return result

    def timed_choose(self, scores, rows):
        _sync(device)
        start = time.perf_counter()
        result = choose(self, scores, rows)
        _sync(device)
        totals["sampler"] += time.perf_counter() - start
        return result

    model.forward = timed_forward
    D.SeededSampler.choose = timed_choose
    try:
        yield totals
    finally:
        del model.forward
        D.SeededSampler.choose = choose


def _run(engine, prompts, params, device, instrument: bool) -> dict:
    tokens_before = engine.stats["generated_tokens"]
    _sync(device)
    if instrument:
        with _timed_decode(engine.model, device) as totals:
            start = time.perf_counter()
            engine.generate(prompts, params)
            _sync(device)
            seconds = time.perf_counter() - start
        return {
            "seconds": round(seconds, 3),
            "forward_share": round(totals["forward"] / seconds, 3),
            "prefill_share": round(totals["prefill"] / seconds, 3),
            "sampler_share": round(totals["sampler"] / seconds, 3),
            "loop_share": round(1 - (totals["forward"] + totals["sampler"]) / seconds, 3),
            "forwards": totals["steps"],
        }
    start = time.perf_counter()
    engine.generate(prompts, params)
    _sync(device)
    seconds = time.perf_counter() - start
    tokens = engine.stats["generated_tokens"] - tokens_before
    return {"seconds": round(seconds, 3), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def part_throughput(device: str, tiny: bool, work: Path, budget: Budget) -> dict:
    """Tokens/s of the hf engine sampling a batch (bf16, random weights) at the 1.5B and 7B shapes, and the share
    of the decode loop's time spent outside the model's forward (the sampler, the loop's bookkeeping)."""
    import torch
    from portable_model import build_model, make_config, make_tokenizer

    from sftadapt.engines import Sampling
    from sftadapt.engines.hf import HFEngine

    shapes = ["tiny-qwen2"] if tiny else ["qwen2.5-1.5b", "qwen2.5-7b"]
    batch, prompt_len, new = (4, 16, 8) if tiny else (32, 128, 128)
    dtype = torch.bfloat16
    out: dict = {"batch": batch, "prompt_tokens": prompt_len, "new_tokens": new, "dtype": "bfloat16", "shapes": {}}
    for name in shapes:
        shape = SHAPES[name]
        # a run takes about as long as the last one; a shape needs a build, a warm-up and 3 runs
        need = out.get("_last_seconds", 0.5 if tiny else 5.0) * 4 + (2 if tiny else 15)
        if budget.left() < need:
            out["shapes"][name] = {
                "status": f"skipped: {budget.left():.0f} s left of the part's budget, ~{need:.0f} s needed"
            }
            continue
        try:
            started = time.perf_counter()
            tok = make_tokenizer(shape["vocab_size"])
            model = build_model(make_config(tok, "qwen2", **shape), dtype=dtype, device=device)
            built = time.perf_counter() - started
            engine = HFEngine(model, tok, name, batch_size=batch)
            params = {
                "sampled": Sampling(n=1, temperature=1.0, max_new_tokens=new, seed=0),
                "greedy": Sampling(n=1, temperature=0.0, max_new_tokens=new),
            }
            # ASCII prompts of prompt_len characters, so prompt_len tokens each (one byte, one token)
            prompts = [(f"Problem {i}: " + "what is 12 + 34? " * prompt_len)[:prompt_len] for i in range(batch)]
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            engine.generate(prompts[:2], Sampling(n=1, temperature=1.0, max_new_tokens=4))  # warm-up
            row: dict = {
                "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 2),
                "build_s": round(built, 1),
            }
            row["sampled"] = _run(engine, prompts, params["sampled"], device, instrument=False)
            out["_last_seconds"] = row["sampled"]["seconds"]
            if budget.left() > 2 * out["_last_seconds"] + 5:
                row["sampled_timed"] = _run(engine, prompts, params["sampled"], device, instrument=True)
            if budget.left() > out["_last_seconds"] + 5:
                row["greedy"] = _run(engine, prompts, params["greedy"], device, instrument=False)
            if torch.cuda.is_available():
                row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            out["shapes"][name] = {"status": "ok", **row}
        except Exception as err:  # noqa: BLE001
            out["shapes"][name] = {"status": f"error: {first_line(err)}", "where": _where(err)}
        finally:
            engine = model = None
            _free()
    out.pop("_last_seconds", None)
    return out


def _steps(result: dict):
    """(name, step) of a part's steps that carry their own status (the SFT runs, GRPO, each shape)."""
    for key, value in result.items():
        if isinstance(value, dict) and "status" in value:
            yield key, value
        elif key == "shapes":
            yield from value.items()


PARTS = {"agreement": part_agreement, "train": part_train, "throughput": part_throughput}


def run_worker(
    parts: list[str], budgets: dict[str, float], deadline: float, device: str, tiny: bool, results: Path, pins
) -> None:
    """Run `parts` in order, writing `results` (JSON) after each, so a worker stopped at its time limit still
    leaves what it finished."""
    import tempfile

    os.environ.setdefault("SFTADAPT_QUIET", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight loading/saving bars of every small model built here
    record: dict = {"env": part_env(device, pins), "parts": {}}
    results.write_text(json.dumps(record, indent=2, default=str))
    with tempfile.TemporaryDirectory(prefix="sftadapt-gpu-check-") as tmp:
        for name in parts:
            left = deadline - time.time()
            if left < 10:
                record["parts"][name] = {"status": f"skipped: {left:.0f} s left of the check's time"}
                continue
            record["parts"][name] = {"status": "running"}
            results.write_text(json.dumps(record, indent=2, default=str))
            started = time.perf_counter()
            work = Path(tmp) / name
            work.mkdir()
            try:
                result = PARTS[name](device, tiny, work, Budget(budgets[name], deadline))
                failed = [k for k, v in _steps(result) if str(v.get("status", "")).startswith("error")]
                record["parts"][name] = {"status": f"error in {', '.join(failed)}" if failed else "ok", **result}
            except Exception as err:  # noqa: BLE001
                record["parts"][name] = {"status": f"error: {first_line(err)}", "where": _where(err)}
            record["parts"][name]["seconds"] = round(time.perf_counter() - started, 1)
            results.write_text(json.dumps(record, indent=2, default=str))
