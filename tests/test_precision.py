"""The precision policy (sftadapt/runtime/precision.py) and the two defects it exists to prevent:
a trained LoRA update that the next stage never sees, and importance weights that start away from 1."""

from pathlib import Path

import pytest
import torch

from sftadapt.data.records import Example, write_records
from sftadapt.runtime import precision

ROOT = Path(__file__).resolve().parents[1]
CPU_KINDS = {
    # what torch reports on the project's machine kinds
    "avx2-only": {"cpu_capability": "AVX2", "avx2": True, "avx512_bf16": False, "amx_bf16": False, "cuda": False},
    "avx512-bf16": {"cpu_capability": "AVX512", "avx2": True, "avx512_bf16": True, "amx_bf16": False, "cuda": False},
    "amx": {"cpu_capability": "AVX512", "avx2": True, "avx512_bf16": True, "amx_bf16": True, "cuda": False},
    # AVX-512 instructions but torch forced to its AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)
    "avx512-bf16, aten avx2": {
        "cpu_capability": "AVX2",
        "avx2": True,
        "avx512_bf16": True,
        "amx_bf16": False,
        "cuda": False,
    },
}


def _as_cpu(monkeypatch, kind: str) -> None:
    info = dict(CPU_KINDS[kind])
    info["cpu_bf16_native"] = info["cpu_capability"] in ("AVX512", "AMX") and (info["avx512_bf16"] or info["amx_bf16"])
    monkeypatch.setattr(precision, "capability", lambda: info)
    monkeypatch.setattr(precision, "_warned", set())


# ---------------------------------------------------------------- the policy
@pytest.mark.parametrize(
    "kind, auto",
    [("avx2-only", "float32"), ("avx512-bf16", "bfloat16"), ("amx", "bfloat16"), ("avx512-bf16, aten avx2", "float32")],
)
def test_auto_is_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, kind, auto):
    _as_cpu(monkeypatch, kind)
    assert precision.resolve_dtype("auto", "cpu") == auto
    assert precision.resolve_dtype("float32", "cpu") == "float32"
    assert precision.describe("auto", auto, "cpu")["bf16_native"] is (auto == "bfloat16")


def test_explicit_bf16_is_honoured_with_one_warning_where_it_is_emulated(monkeypatch):
    _as_cpu(monkeypatch, "avx2-only")
    with pytest.warns(UserWarning, match="emulated"):
        assert precision.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not once per stage
        assert precision.resolve_dtype("bf16", "cpu") == "bfloat16"
    _as_cpu(monkeypatch, "amx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_dtype("bfloat16", "cpu") == "bfloat16"


def test_the_real_machine_report_is_consistent():
    cap = precision.capability()
    assert cap["cpu_capability"] in ("DEFAULT", "AVX2", "AVX512", "AMX", "VSX", "ZVECTOR", "SVE256", "SVE128")
    if cap["cpu_bf16_native"]:
        assert cap["avx512_bf16"] or cap["amx_bf16"]
    print(f"this CPU: {precision.cpu_model_name()} {cap}")  # shown with -s: which kind the suite ran on


def test_unknown_dtype_names_are_refused():
    with pytest.raises(precision.PrecisionError, match="float16x"):
        precision.resolve_dtype("float16x")
    from sftadapt.train.stage import TrainConfig

    with pytest.raises(ValueError, match="weights_dtype"):
        TrainConfig(weights_dtype="auto").validate()


def test_training_keeps_fp32_master_weights_unless_pure_bf16_is_asked(monkeypatch):
    from sftadapt.rl.grpo import GRPOOptions
    from sftadapt.train.stage import TrainConfig

    _as_cpu(monkeypatch, "avx512-bf16")
    assert TrainConfig(loss="nll").precision() == ("bfloat16", "float32")  # autocast over fp32 weights
    assert GRPOOptions().precision() == ("bfloat16", "float32")
    _as_cpu(monkeypatch, "avx2-only")
    assert TrainConfig(loss="nll").precision() == ("float32", "float32")
    assert GRPOOptions().precision() == ("float32", "float32")
    with pytest.warns(UserWarning, match="rounded away"):
        assert TrainConfig(loss="nll", weights_dtype="bfloat16").precision() == ("bfloat16", "bfloat16")
    # is: π_θ in the precision π_β was scored in, whatever the shared train options say
    assert TrainConfig(loss="is").precision() == ("float32", "float32")
    _as_cpu(monkeypatch, "amx")
    assert TrainConfig(loss="is").precision() == ("float32", "float32")
    with pytest.raises(ValueError, match="float32"):
        TrainConfig(loss="is", weights_dtype="bfloat16").precision()


# ---------------------------------------------------------------- a trained adapter reaches the next stage
def _delta_match(ref: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    cos = torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0).item()
    return cos, (got.norm() / ref.norm()).item()


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    """A bf16-stored base (as hub checkpoints and the old warm-up target were) and LoRA trained on it for 4 steps
    at lr 1e-5 (a small update, like the study's mapper and direct RL), in every training precision allowed."""
    from transformers import AutoModelForCausalLM

    from sftadapt.runtime.models import load_tokenizer, resolve_model
    from sftadapt.train.stage import TrainConfig, train

    tmp = tmp_path_factory.mktemp("lora")
    tok = load_tokenizer("tiny-random")
    base = tmp / "base-bf16"
    AutoModelForCausalLM.from_pretrained(resolve_model("tiny-random"), dtype=torch.bfloat16).save_pretrained(base)
    tok.save_pretrained(base)
    data = tmp / "d.jsonl"
    write_records(
        data,
        [
            Example(
                id=f"r{i}",
                problem=f"What is {i} + {i + 1}?",
                answer=str(2 * i + 1),
                response=f"We add {i} and {i + 1}. So the answer is \\boxed{{{2 * i + 1}}}.",
                origin="expert",
            )
            for i in range(8)
        ],
    )
    runs = {}
    for compute in ("float32", "bfloat16"):
        for weights in ("float32", "bfloat16"):
            out = tmp / f"lora-{compute}-{weights}"
            train(
                TrainConfig(
                    model=str(base),
                    data=[str(data)],
                    out=str(out),
                    lr=1e-5,
                    max_steps=4,
                    batch_size=4,
                    grad_accum=1,
                    lora=True,
                    lora_dropout=0.0,
                    save_steps=100,
                    warmup_ratio=0.0,
                    resume=False,
                    dtype=compute,
                    weights_dtype=weights,
                )
            )
            runs[(compute, weights)] = out
    ids = torch.tensor([tok(" ".join(f"What is {i} + {i + 1}? We add them." for i in range(6)))["input_ids"]])
    return base, runs, ids


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("compute", ["float32", "bfloat16"])
@pytest.mark.parametrize("weights", ["float32", "bfloat16"])
@pytest.mark.parametrize("inference", ["auto", "float32"])
def test_a_lora_update_moves_the_next_stage_as_it_moved_the_trained_model(lora_runs, compute, weights, inference):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from sftadapt.engines.hf import HFEngine
    from sftadapt.runtime.models import load_model

    base, runs, ids = lora_runs
    out = runs[(compute, weights)]
    # the trained model in memory: the base with the adapter exactly as trained, in fp32
    trained = PeftModel.from_pretrained(load_model(str(base), "float32"), str(out / "adapter")).eval()
    ref = _logits(trained, ids) - _logits(load_model(str(base), "float32"), ids)
    assert ref.norm() > 0  # the adapter learnt something
    # the next stage: an engine on the output folder (what synthesis and evaluation build), against the base
    # as that same stage would load it
    engine = HFEngine.from_model(str(out), dtype=inference)
    assert engine.precision["generate"] == "float32"  # a LoRA folder is never rounded to bf16 under auto
    got = _logits(engine.model, ids) - _logits(load_model(str(base), engine.precision["generate"]), ids)
    cos, ratio = _delta_match(ref, got)
    assert cos >= 0.9 and 0.9 <= ratio <= 1.1, (cos, ratio)

    # 4407a5e: the merged weights loaded in bf16 on the bf16 base. The same check fails on it.
    old = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.bfloat16).eval()
    old_cos, old_ratio = _delta_match(ref, _logits(old, ids) - _logits(load_model(str(base), "bfloat16"), ids))
    assert not (old_cos >= 0.9 and 0.9 <= old_ratio <= 1.1), (old_cos, old_ratio)


def test_rl_stages_save_the_adapter_the_same_way(lora_runs, tmp_path):
    """trainer_io.save_merged (SFT LoRA, mapper RL, direct RL) merges into fp32 and leaves the record the loader reads."""
    from peft import PeftModel

    from sftadapt.pipeline import study_eval_dtype
    from sftadapt.runtime.models import adapter_of, inference_dtype, load_model, load_tokenizer
    from sftadapt.runtime.trainer_io import save_merged

    base, runs, ids = lora_runs
    adapter = runs[("float32", "float32")] / "adapter"
    save_merged(str(base), adapter, tmp_path, load_tokenizer(str(base)))
    assert adapter_of(str(tmp_path))["base"] == str(base)
    assert inference_dtype(str(tmp_path), "auto") == "float32"
    assert study_eval_dtype("auto", [str(base), str(tmp_path)]) == "float32"  # every arm beside it too
    trained = PeftModel.from_pretrained(load_model(str(base), "float32"), str(adapter)).eval()
    ref = _logits(trained, ids) - _logits(load_model(str(base), "float32"), ids)
    cos, ratio = _delta_match(
        ref, _logits(load_model(str(tmp_path)), ids) - _logits(load_model(str(base), "float32"), ids)
    )
    assert cos >= 0.9 and 0.9 <= ratio <= 1.1, (cos, ratio)
    with pytest.warns(UserWarning, match="erases"):
        assert inference_dtype(str(tmp_path), "bfloat16") == "bfloat16"  # explicit: honoured, with a warning


# ---------------------------------------------------------------- is: self rows start at weight 1
def _shipped_configs_with_dr_is() -> list[Path]:
    import yaml

    paths = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "paper").glob("*.yaml"))
    return [p for p in paths if "dr_is" in (yaml.safe_load(p.read_text()).get("arms") or ["dr_is"])]


def _self_row_weights(
    tmp_path, sample_dtype: str, score_dtype: str, train_base: dict, record_precision: bool = True
) -> torch.Tensor:
    """Step-0 is weights of self rows: behaviour log-probs scored as the rewrite stage scores them, π_θ from
    the trainer's own forward (its precision, its context manager), on the tiny model."""
    from sftadapt.data import prompts as P
    from sftadapt.engines.hf import HFEngine
    from sftadapt.train.losses import token_weights
    from sftadapt.train.stage import TrainConfig, build_trainer

    engine = HFEngine.from_model("tiny-random", dtype=sample_dtype, score_dtype=score_dtype)
    chat = train_base.get("chat", True)
    problems = [f"What is {i} + {2 * i}?" for i in range(6)]
    responses = [f"First {i} plus {2 * i} is {3 * i}. " * (1 + i % 3) + f"\\boxed{{{3 * i}}}" for i in range(6)]
    scores = engine.score([P.solve_prompt(engine.tokenizer, q, chat) for q in problems], responses)
    data = tmp_path / "self.jsonl"
    provenance = {"precision": {"score": engine.precision["score"]}} if record_precision else {}
    write_records(
        data,
        [
            Example(
                id=f"s{i}",
                problem=q,
                response=r,
                answer=str(3 * i),
                origin="self",
                behavior_logprobs=s.logprobs,
                provenance=provenance,
            )
            for i, (q, r, s) in enumerate(zip(problems, responses, scores))
        ],
    )
    train_cfg = TrainConfig(
        **{
            **train_base,
            "model": "tiny-random",
            "data": [str(data)],
            "out": str(tmp_path / "t"),
            "batch_size": 6,
            "grad_accum": 1,
            "max_length": 512,
            "resume": False,
            "gradient_checkpointing": False,
        }
    )
    trainer, prepared, _ = build_trainer(train_cfg)
    assert not trainer.args.bf16  # no autocast for is
    batch = trainer.data_collator(prepared.tokenized.rows)
    trainer.model.train()
    with torch.no_grad(), trainer.compute_loss_context_manager():
        logp, mask, behavior = trainer._token_logprobs(trainer.model, batch)
        weights, _ = token_weights(
            logp, mask, behavior_logprobs=behavior, has_behavior=batch["has_behavior"], **trainer._loss_kwargs()
        )
    assert mask.sum() > 50
    return weights[mask]


@pytest.mark.parametrize("path", _shipped_configs_with_dr_is(), ids=lambda p: p.name)
def test_self_rows_have_is_weight_one_at_step_zero_under_every_shipped_config(path, tmp_path):
    """Self rows' behaviour log-probs are the target's own scores (rewrite stage, its scoring precision); the
    trainer's π_θ at step 0 is the same model in the dr_is arm's precision: the ratio must be 1 to 1e-3."""
    from sftadapt.pipeline import load_run_config, seed_paths, stage_configs

    cfg = load_run_config(path)
    configs = stage_configs(cfg, 0, "tiny-random", seed_paths(tmp_path))
    rw, tr = configs["rewrite"], configs["train_dr_is"]
    w = _self_row_weights(tmp_path, rw.dtype, rw.score_dtype, dict(tr.__dict__))
    assert (w - 1).abs().max().item() <= 1e-3, (w.min().item(), w.max().item())


def test_the_weight_check_is_sharp_behaviour_scored_in_bf16_would_fail_it(tmp_path):
    """The control: π_β scored in bf16 (what 4407a5e's quickstart did) puts self rows visibly away from 1, and
    the train stage refuses such rows for the is loss when their precision is recorded."""
    w = _self_row_weights(tmp_path, "bfloat16", "bfloat16", {"loss": "is"}, record_precision=False)
    assert (w - 1).abs().max().item() > 1e-3
    with pytest.raises(ValueError, match="scored in bfloat16"):
        _self_row_weights(tmp_path / "b", "bfloat16", "bfloat16", {"loss": "is"})
