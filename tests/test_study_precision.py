"""One precision per study (docs/precision.md): on hardware where bf16 is native, the arms of `sftadapt run` still
differ only in their data and method. Checked on the stage configs the pipeline builds (nothing is trained), with
the CPU kind faked as tests/test_precision.py fakes it; the stage-level checks use the tiny model's engine."""

import dataclasses
import warnings

import pytest
from fakes import BoxedVerifier
from test_mapper import PROBLEMS
from test_pipeline import TINY, _yaml
from test_precision import _as_cpu as as_cpu

from sftadapt import pipeline
from sftadapt.adapt.mapper import MapperTrainConfig, SynthConfig, synth_dtypes, synthesize, train_mapper
from sftadapt.config import config_hash
from sftadapt.pipeline import load_run_config, seed_paths, stage_configs
from sftadapt.runtime import precision
from sftadapt.runtime.models import inference_dtype
from sftadapt.runtime.stage_cache import _decided

ARMS = ["pr_sft", "dart_sft", "dr_sft", "dr_is"]
# the study's defaults where it matters: no dtype anywhere, so every stage asks for `auto`
STUDY = {
    **TINY,
    "arms": ["base", *ARMS],
    "rewrite": {k: v for k, v in TINY["rewrite"].items() if k != "dtype"},
    "synth": {k: v for k, v in TINY["synth"].items() if k != "dtype"},
}
STEPS = ("mapper_train", "mapper", "prompted", "train_pr_sft", "train_dart_sft", "train_dr_sft", "train_dr_is")


def _as_cpu(monkeypatch, kind: str) -> None:
    """The CPU kind of tests/test_precision.py, and the CPU as the device (on a GPU host too)."""
    as_cpu(monkeypatch, kind)
    monkeypatch.setattr(precision, "default_device", lambda: "cpu")


def _configs(tmp_path, values=STUDY):
    cfg = load_run_config(_yaml(tmp_path, values))
    return stage_configs(cfg, 0, "tiny-random", seed_paths(tmp_path))


def _mapper_sampling(configs) -> dict[str, str]:
    """The dtype each mapper samples in, as the synthesis stage resolves it (the trained mapper's folder is a
    LoRA model: mapper_train's grpo.lora is true in the study)."""
    untrained = precision.resolve_dtype(synth_dtypes(configs["prompted"])[0])
    asked = synth_dtypes(configs["mapper"])[1]
    lora_auto = asked == "auto" and configs["mapper_train"].grpo.lora
    return {"untrained": untrained, "trained": "float32" if lora_auto else inference_dtype("/nonexistent", asked)}


def test_on_native_bf16_the_mappers_scoring_and_training_are_one_precision(monkeypatch, tmp_path):
    _as_cpu(monkeypatch, "avx512-bf16")
    assert precision.resolve_dtype("auto") == "bfloat16"  # the fake is in force: auto alone would be bf16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults break no rule: no warning
        configs = _configs(tmp_path, {**STUDY, "arms": [*STUDY["arms"], "sdft_sft"]})
    sampling = _mapper_sampling(configs)
    assert sampling["untrained"] == sampling["trained"] == "float32"
    for step in ("mapper_train", "mapper", "prompted"):  # r_align is scored in float32, spelled out in the config
        assert configs[step].dtype == "float32" and precision.scoring_dtype(configs[step].dtype) == "float32"
    assert configs["sdft"].dtype == "float32"  # SDFT's one rewrite is sampled as the mappers sample
    computes = {arm: configs[f"train_{arm}"].precision()[0] for arm in ARMS}
    assert set(computes.values()) == {"float32"}, computes

    # without the study's rule the same hardware would have run them apart (the confounds this test guards)
    monkeypatch.setattr(pipeline, "study_precision", lambda cfg, configs: None)
    loose = _configs(tmp_path, {**STUDY, "arms": [*STUDY["arms"], "sdft_sft"]})
    assert loose["train_dr_sft"].precision()[0] == "bfloat16" != loose["train_dr_is"].precision()[0]
    assert loose["prompted"].dtype == "auto" and precision.resolve_dtype(loose["prompted"].dtype) == "bfloat16"
    assert precision.resolve_dtype(loose["sdft"].dtype) == "bfloat16"


def test_without_an_is_arm_sft_arms_keep_the_hardwares_answer(monkeypatch, tmp_path):
    _as_cpu(monkeypatch, "amx")
    configs = _configs(tmp_path, {**STUDY, "arms": ["base", "sft", "dr_sft", "dart_sft"]})
    assert configs["train_dr_sft"].dtype == "auto" and configs["train_dr_sft"].precision()[0] == "bfloat16"
    assert configs["mapper"].dtype == "float32"  # scoring is float32 whatever the arms


@pytest.mark.parametrize("kind", ["avx2-only", "avx512-bf16, aten avx2"])
def test_where_bf16_is_not_native_nothing_changes(monkeypatch, tmp_path, kind):
    _as_cpu(monkeypatch, kind)
    ruled = _configs(tmp_path)
    monkeypatch.setattr(pipeline, "study_precision", lambda cfg, configs: None)
    loose = _configs(tmp_path, {**STUDY, "arms": [*STUDY["arms"], "sdft_sft"]})
    for step in STEPS:  # the same options, so the same stage hashes as before the rule existed
        assert config_hash(_decided(ruled[step])) == config_hash(_decided(loose[step])), step
        assert ruled[step].dtype == "auto"
    assert _mapper_sampling(ruled) == {"untrained": "float32", "trained": "float32"}


def test_explicit_dtypes_that_break_the_rule_are_named_in_a_warning(monkeypatch, tmp_path):
    _as_cpu(monkeypatch, "avx512-bf16")
    values = {**STUDY, "train": {**STUDY["train"], "dtype": "bfloat16"}}
    with pytest.warns(
        UserWarning, match=r"arm\(s\) dr_sft, dart_sft, pr_sft train in bfloat16 .* dr_is must train in float32"
    ):
        configs = _configs(tmp_path, values)
    assert configs["train_dr_sft"].dtype == "bfloat16"  # an explicit value is honoured
    values = {**STUDY, "synth": {**STUDY["synth"], "mapper_dtype": "bfloat16"}}
    with pytest.warns(UserWarning, match="dart_sft bfloat16, pr_sft float32"):
        _configs(tmp_path, values)


@pytest.fixture
def engines(monkeypatch, tiny_engine):
    """make_engine recording (model, dtype) and handing out the tiny model's engine (loaded in float32)."""
    made = []

    def make_engine(model, engine=None, **common):
        made.append((model, common["dtype"]))
        return tiny_engine

    monkeypatch.setattr("sftadapt.engines.make_engine", make_engine)
    monkeypatch.setattr(type(tiny_engine), "close", lambda self: None)  # the session's engine outlives the stage
    return made


@pytest.mark.parametrize("mapper", ["untrained", "tiny-random"])
def test_synthesis_scores_and_samples_in_float32_under_auto(monkeypatch, tmp_path, engines, mapper):
    _as_cpu(monkeypatch, "amx")
    cfg = SynthConfig(mapper=mapper, target="tiny-random", data="unused", out=str(tmp_path / "s"), k=1)
    cfg.max_new_tokens = 4
    summary = synthesize(cfg, verifier=BoxedVerifier(), problems=PROBLEMS[1:2], progress=False, print_summary=False)
    assert [dtype for _, dtype in engines] == ["float32"] * len(engines) and len(engines) == (mapper != "untrained") + 1
    assert summary["precision"] == {"target": "float32", "mapper": "float32"}  # what the engines report they ran
    explicit = dataclasses.replace(cfg, dtype="bfloat16")  # honoured, for the target and (by default) the mapper
    assert synth_dtypes(explicit) == ("bfloat16", "bfloat16")


def test_mapper_rl_scores_the_reward_in_float32_under_auto(monkeypatch, tmp_path, engines):
    from sftadapt.data.records import write_records

    _as_cpu(monkeypatch, "amx")
    write_records(tmp_path / "d.jsonl", PROBLEMS[1:2])
    monkeypatch.setattr("sftadapt.rl.grpo.run_grpo", lambda *a, **k: {"steps": 0, "config": k["config"]})
    cfg = MapperTrainConfig(target="tiny-random", data=str(tmp_path / "d.jsonl"), out=str(tmp_path / "m"))
    summary = train_mapper(cfg, verifier=BoxedVerifier(), progress=False)
    assert engines == [("tiny-random", "float32")]
    assert summary["precision"]["target_score"] == "float32"
    assert summary["precision"]["mapper_train"] == {"compute": "bfloat16", "weights": "float32"}
