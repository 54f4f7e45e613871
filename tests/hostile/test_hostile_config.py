"""Hostile config files and values: YAML alias bombs and cycles, empty files, out-of-range numbers, and a bad
nested option of `sftadapt run`. Each must be one error line before any work starts; a regression that expands
a bomb again fails on the deadline instead of hanging CI (and grows slowly enough in Python to stay small)."""

import dataclasses
import os
import signal
import typing

import pytest
from typer.testing import CliRunner

from sftadapt.adapt.mapper import MapperTrainConfig, SynthConfig
from sftadapt.adapt.reward import RewardConfig
from sftadapt.adapt.rewrite import RewriteConfig
from sftadapt.cli import CONFIGS, app, config_class
from sftadapt.config import YAML_MAX_ALIASES, YAML_MAX_BYTES, ConfigError, _rule, load_config, read_yaml
from sftadapt.eval.protocol import Protocol
from sftadapt.eval.sample import SampleConfig
from sftadapt.pipeline import CONFIG_DIR, RunConfig, check_stage_options, load_run_config
from sftadapt.rl.direct_rl import DirectRLConfig
from sftadapt.rl.grpo import GRPOOptions
from sftadapt.train.stage import TrainConfig

runner = CliRunner()
DEADLINE_S = 20  # a refused file takes milliseconds; an expanded bomb never ends


@pytest.fixture
def deadline():
    def expired(signum, frame):
        pytest.fail(f"still running after {DEADLINE_S} s: the config was expanded instead of refused", pytrace=False)

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(DEADLINE_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


# ---------------------------------------------------------------- alias bombs and cycles
def _laughs(indent: str, levels: int = 9) -> str:
    """The "billion laughs" block: each anchor lists the one before ten times, 10^levels values expanded."""
    lines = [f"{indent}a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _flow_laughs(levels: int = 9) -> str:
    parts = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    parts += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "{" + ", ".join(parts) + "}"


BOMBS = {
    # command, the free-form option that holds the bomb
    "run --dry-run (eval.engine.options)": (
        ["run", "{cfg}", "--dry-run"],
        "out: {out}\neval:\n  engine:\n    backend: hf\n    options:\n" + _laughs("      "),
    ),
    "train (trainer_args)": (
        ["train", "--config", "{cfg}"],
        "out: {out}\nmodel: tiny-random\ntrainer_args:\n  fsdp_config:\n" + _laughs("    "),
    ),
    "rewrite (engine.options)": (
        ["rewrite", "--config", "{cfg}", "--model", "tiny-random"],
        "out: {out}\nengine:\n  backend: hf\n  options:\n" + _laughs("    "),
    ),
    "run (rewrite.engine.options)": (
        ["run", "{cfg}"],
        "out: {out}\nrewrite:\n  engine:\n    backend: hf\n    options:\n" + _laughs("      "),
    ),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_an_alias_bomb_is_one_line_before_any_work(case, tmp_path, deadline):
    args, text = BOMBS[case]
    cfg, out = tmp_path / "bomb.yaml", tmp_path / "out"
    cfg.write_text(text.format(out=out))
    result = runner.invoke(app, [a.format(cfg=cfg) for a in args])
    _one_line_error(result, f"{cfg}: line ", "expands to more than 100000 values")
    assert not out.exists()


def test_a_self_referencing_alias_is_a_cycle_not_a_recursion_error(tmp_path, deadline):
    cfg = tmp_path / "self.yaml"
    cfg.write_text(f"out: {tmp_path / 'out'}\neval:\n  engine:\n    backend: hf\n    options: &r {{self: *r}}\n")
    result = runner.invoke(app, ["run", str(cfg), "--dry-run"])
    _one_line_error(result, f"{cfg}: line 5: alias *r refers to the value that contains it")
    cycle = tmp_path / "cycle.yaml"  # through a sequence two levels down
    cycle.write_text("trainer_args:\n  fsdp_config: &a {x: [1, {y: *a}]}\n")
    result = runner.invoke(app, ["train", "--config", str(cycle), "--out", str(tmp_path / "t")])
    _one_line_error(result, f"{cycle}: line 2: alias *a refers")


def test_an_alias_bomb_in_a_set_override_is_refused(tmp_path, deadline):
    cfg = tmp_path / "study.yaml"
    cfg.write_text(f"out: {tmp_path / 'out'}\n")
    result = runner.invoke(app, ["run", str(cfg), "--dry-run", "--set", "eval.engine.options=" + _flow_laughs()])
    _one_line_error(result, "override 'eval.engine.options={a0: &a0", "expands to more than 100000 values")
    result = runner.invoke(app, ["rewrite", "--out", str(tmp_path / "r"), "--set", "engine.options=&r {self: *r}"])
    _one_line_error(result, "override 'engine.options=&r {self: *r}': alias *r refers")
    assert not (tmp_path / "out").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("k: " + "[" * 200 + "]" * 200 + "\n", "line 1: nested more than 64 levels deep"),
        # shallow text, deep once expanded: each anchor nests the one before
        ("".join(f"a{i}: &a{i} [*a{i - 1}]\n" if i else "a0: &a0 [x]\n" for i in range(80)), "once its aliases"),
        ("a: &a x\nb: [" + ", ".join(["*a"] * (YAML_MAX_ALIASES + 1)) + "]\n", f"more than {YAML_MAX_ALIASES} aliases"),
        ("k: " + "1" * 5000 + "\n", "a value cannot be read: Exceeds the limit (4300 digits)"),
    ],
    ids=["deep", "deep-through-aliases", "many-aliases", "huge-int"],
)
def test_other_yaml_bounds_are_one_config_error(tmp_path, text, message, deadline):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"c\.yaml: ") as err:
        read_yaml(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_file_over_the_size_bound_is_not_read_whole(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("k: " + "x" * YAML_MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match=f"longer than {YAML_MAX_BYTES} bytes"):
        read_yaml(path)


def test_real_configs_and_ordinary_aliases_still_load(tmp_path):
    """Every file under configs/ reads; the study configs validate every stage (all seeds) and the report."""
    files = sorted(CONFIG_DIR.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        assert read_yaml(path)
        if "accelerate" not in path.parts:
            check_stage_options(load_run_config(path))
    shared = tmp_path / "shared.yaml"  # anchors for a shared engine block and a merge key: what YAML users write
    shared.write_text(
        "engine: &vllm {backend: vllm, options: {gpu_memory_utilization: 0.4}}\n"
        "base: &train {batch_size: 4, lr: 1.0e-4}\n"
        "train: {<<: *train, epochs: 2}\n"
        "again: *vllm\n"
    )
    data = read_yaml(shared)
    assert data["train"] == {"batch_size": 4, "lr": 1.0e-4, "epochs": 2} and data["again"] is data["engine"]


# ---------------------------------------------------------------- an empty config file
@pytest.mark.parametrize(
    "args",
    [
        ["run", "{cfg}"],
        ["run", "{cfg}", "--dry-run"],
        ["train", "--config", "{cfg}"],
        ["rewrite", "--config", "{cfg}"],
        ["sample", "--config", "{cfg}"],
        ["config", "show", "train", "--config", "{cfg}"],
    ],
    ids=lambda a: " ".join(a[:2]) + (" --dry-run" if "--dry-run" in a else ""),
)
@pytest.mark.parametrize("text", ["", "# only a comment\n\n"], ids=["empty", "comments"])
def test_an_empty_config_is_refused(tmp_path, monkeypatch, args, text, deadline):
    monkeypatch.chdir(tmp_path)  # an empty study config ran the whole default study into ./runs/study
    cfg = tmp_path / "EMPTY.yaml"
    cfg.write_text(text)
    result = runner.invoke(app, [a.format(cfg=cfg) for a in args])
    _one_line_error(result, f"{cfg}: empty config")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- numeric ranges, one table
CPUS = os.cpu_count() or 1
WORKERS = f"in [1, {4 * CPUS}] (4 x os.cpu_count() = 4 x {CPUS} on this machine)"
BOUNDS = [
    # (config class, override, the range the error must state)
    (TrainConfig, "max_steps=0", ">= 1 (or -1: train `epochs` passes)"),
    (TrainConfig, "max_steps=-2", ">= 1 (or -1"),
    (TrainConfig, "epochs=-3", "> 0"),
    (TrainConfig, "epochs=0", "> 0"),
    (TrainConfig, "lr=0", "> 0"),
    (TrainConfig, "lr=-1e-5", "> 0"),
    (TrainConfig, "weight_decay=-0.1", ">= 0"),
    (TrainConfig, "max_grad_norm=-1", ">= 0 (0 = no clipping)"),
    (TrainConfig, "save_total_limit=0", ">= 1"),
    (TrainConfig, "warmup_ratio=1.0", "in [0, 1)"),
    (TrainConfig, "warmup_ratio=-0.1", "in [0, 1)"),
    (TrainConfig, "lora_dropout=1.0", "in [0, 1)"),
    (TrainConfig, "dft_floor=1.5", "in [0, 1]"),
    (TrainConfig, "is_clip=-1", ">= 0 (0 = no clipping)"),
    (TrainConfig, "batch_size=0", ">= 1"),
    (TrainConfig, "grad_accum=0", ">= 1"),
    (TrainConfig, "max_length=1", ">= 2 (room for a prompt and a response)"),
    (TrainConfig, "seed=-1", "in [0, 4294967295]"),
    (TrainConfig, "lora_r=0", ">= 1"),
    (TrainConfig, "lora_alpha=0", ">= 1"),
    (TrainConfig, "save_steps=0", ">= 1"),
    (TrainConfig, "logging_steps=0", ">= 1"),
    (GRPOOptions, "max_steps=0", ">= 1"),
    (GRPOOptions, "max_steps=-1", ">= 1"),  # -1 means "unset" only for TrainConfig
    (GRPOOptions, "num_generations=1", ">= 2 (GRPO compares the rollouts of one prompt)"),
    (GRPOOptions, "prompts_per_step=0", ">= 1"),
    (GRPOOptions, "temperature=-1", ">= 0"),
    (GRPOOptions, "top_p=0", "in (0, 1]"),
    (GRPOOptions, "max_completion_length=0", ">= 1"),
    (GRPOOptions, "lr=0", "> 0"),
    (GRPOOptions, "beta=-0.1", ">= 0"),
    (GRPOOptions, "warmup_ratio=1.5", "in [0, 1)"),
    (GRPOOptions, "max_grad_norm=-1", ">= 0"),
    (GRPOOptions, "lora_r=0", ">= 1"),
    (GRPOOptions, "lora_alpha=0", ">= 1"),
    (GRPOOptions, "lora_dropout=-0.1", "in [0, 1)"),
    (GRPOOptions, "seed=-1", "in [0, 4294967295]"),
    (GRPOOptions, "logging_steps=0", ">= 1"),
    (GRPOOptions, "save_steps=0", ">= 1"),
    (GRPOOptions, "save_total_limit=0", ">= 1"),
    (GRPOOptions, "vllm_server_port=0", "in [1, 65535]"),
    (GRPOOptions, "vllm_server_port=70000", "in [1, 65535]"),
    (GRPOOptions, "vllm_gpu_memory_utilization=0", "in (0, 1]"),
    (GRPOOptions, "vllm_gpu_memory_utilization=1.5", "in (0, 1]"),
    (GRPOOptions, "vllm_tensor_parallel_size=0", ">= 1"),
    (GRPOOptions, "stop_pass_rate=1.0", "in [0, 1)"),
    (GRPOOptions, "stop_window=0", ">= 1"),
    (GRPOOptions, "stop_plateau=-0.1", ">= 0"),
    (RewardConfig, "dist_weight=-1", ">= 0"),
    (RewardConfig, "div_weight=-1", ">= 0"),
    (RewardConfig, "min_tokens=-1", ">= 0"),
    (RewardConfig, "min_length_ratio=-0.1", ">= 0"),
    (RewardConfig, "max_length_ratio=0", "> 0"),
    (RewardConfig, "repeat_ngram=0", ">= 1"),
    (RewardConfig, "max_repeat_frac=1.5", "in [0, 1]"),
    (RewardConfig, "copy_ngram=0", ">= 1"),
    (RewardConfig, "copy_jaccard=-0.5", "in [0, 1]"),
    (RewardConfig, "diversity_weight=-1", ">= 0"),
    (RewriteConfig, "limit=0", ">= 1"),
    (RewriteConfig, "k=0", ">= 1"),
    (RewriteConfig, "guided_tries=0", ">= 1"),
    (RewriteConfig, "guided_temperature=-1", ">= 0"),
    (RewriteConfig, "guided_top_p=2", "in (0, 1]"),
    (RewriteConfig, "rewrite_temperature=-1", ">= 0"),
    (RewriteConfig, "max_keep=0", ">= 1"),
    (RewriteConfig, "near_copy_threshold=0", "in (0, 1]"),
    (RewriteConfig, "near_copy_ngram=0", ">= 1"),
    (RewriteConfig, "shard_size=0", ">= 1"),
    (RewriteConfig, "verifier_workers=0", WORKERS),
    (RewriteConfig, f"verifier_workers={4 * CPUS + 1}", WORKERS),
    (RewriteConfig, "verifier_timeout=0", "> 0"),
    (SynthConfig, "k=0", ">= 1"),
    (SynthConfig, "top_p=1.5", "in (0, 1]"),
    (SynthConfig, f"verifier_workers={100 * CPUS}", WORKERS),
    (SynthConfig, "max_prompt_tokens=0", ">= 1"),
    (MapperTrainConfig, f"verifier_workers={4 * CPUS + 1}", WORKERS),
    (MapperTrainConfig, "grpo.num_generations=1", ">= 2"),
    (MapperTrainConfig, "reward.copy_jaccard=2", "in [0, 1]"),
    (DirectRLConfig, "verifier_timeout=-1", "> 0"),
    (DirectRLConfig, "grpo.max_steps=0", ">= 1"),
    (SampleConfig, "n=0", ">= 1"),
    (SampleConfig, "batch_size=0", ">= 1"),
    (SampleConfig, "seed=-1", "in [0, 4294967295]"),
    (Protocol, "n=0", ">= 1"),
    (Protocol, "max_new_tokens=0", ">= 1"),
    (Protocol, "top_p=0", "in (0, 1]"),
    (RunConfig, "seeds=[0, -1]", "each must be in [0, 4294967295]"),
    (RunConfig, "keep_superseded=-1", ">= 0"),
    (RunConfig, "task.train_problems=0", ">= 1"),
    (RunConfig, "task.steps=[0, 3]", "each must be >= 1"),
    (RunConfig, "warmup.problems=0", ">= 1"),
    (RunConfig, "eval.limit=0", ">= 1"),
    (RunConfig, "eval.batch_size=0", ">= 1"),
]


@pytest.mark.parametrize("cls, override, bound", BOUNDS, ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_each_numeric_option_has_a_sensible_range(cls, override, bound):
    name = override.split("=")[0].split(".")[-1]
    with pytest.raises(ConfigError) as err:
        load_config(cls, None, [override])
    message = str(err.value)
    assert f"option '{name}' = " in message and bound in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "cls, override",
    [
        (TrainConfig, "max_steps=-1"),  # kept: -1 = train `epochs` passes
        (TrainConfig, "max_steps=1"),
        (TrainConfig, "epochs=0.5"),
        (TrainConfig, "weight_decay=0"),
        (TrainConfig, "max_grad_norm=0"),
        (TrainConfig, "warmup_ratio=0"),
        (GRPOOptions, "stop_pass_rate=0"),
        (GRPOOptions, "lr=null"),
        (RewriteConfig, f"verifier_workers={4 * CPUS}"),
        (RewardConfig, "r_min=-100"),
        (RunConfig, "seeds=[0, 4294967295]"),
    ],
)
def test_the_edges_of_each_range_still_load(cls, override):
    load_config(cls, None, [override])


def _numeric_fields(cls, seen=None):
    """(class, field) of every int/float option (or list of them) of `cls` and its nested config sections."""
    seen = set() if seen is None else seen
    if cls in seen:
        return []
    seen.add(cls)
    found = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            found += _numeric_fields(hint, seen)
            continue
        args = set(typing.get_args(hint)) or {hint}
        if typing.get_origin(hint) is list:
            args = set(typing.get_args(hint))
        if args & {int, float} and hint is not bool:
            found.append((cls.__name__, f.name))
    return found


def test_every_numeric_option_of_every_config_is_in_the_range_table():
    fields = [pair for command in CONFIGS for pair in _numeric_fields(config_class(command))]
    assert len(fields) > 60
    missing = [f"{owner}.{name}" for owner, name in fields if _rule(name, owner) is None]
    assert not missing, f"no Range in config.RANGES for {missing}"


# ---------------------------------------------------------------- run: every nested option before any write
@pytest.mark.parametrize(
    "section, message",
    [
        ("train: {lrr: 1}", "train: unknown option 'lrr'"),
        ("rewrite: {k: 0}", "rewrite: option 'k' = 0: must be >= 1"),
        ("direct_rl: {grpo: {num_generations: 1}}", "direct_rl.grpo: option 'num_generations' = 1"),
        ("warmup: {train: {epochs: -3}}", "warmup.train: option 'epochs' = -3.0: must be > 0"),
        ("eval: {protocol_overrides: {top_p: 0}}", "option 'top_p' = 0.0: must be in (0, 1]"),
        ("report: {metric: pass@9}", "report: metric 'pass@9': k must be an integer between 1 and n=1"),
        ("report: {metrc: maj}", "report: unknown option 'metrc'; known: metric, html_samples"),
    ],
)
def test_run_checks_every_nested_option_before_writing_anything(tmp_path, section, message, deadline):
    out = tmp_path / "out"
    cfg = tmp_path / "study.yaml"
    cfg.write_text(f"out: {out}\nseeds: [0, 1]\n{section}\n")
    result = runner.invoke(app, ["run", str(cfg)])
    _one_line_error(result, message)
    assert not out.exists()
