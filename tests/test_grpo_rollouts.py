"""GRPO's `rollout_engine` block (sftadapt/rl/rollouts.py) mapped onto TRL's GRPOConfig, without a model.

Each backend sets TRL's generation fields (hf: none, vllm: colocate, openai + server: trl: server mode with
vllm_server_base_url), checked on a real `trl.GRPOConfig` built from the kwargs (TRL accepts `use_vllm` on a CPU
machine: it looks for vllm only when the trainer starts). The old TRL-named options and the block are exclusive;
a remote server is refused offline, `sftadapt run --dry-run` included. TRL's vLLM modes themselves are not run
here: vllm is not in .venv and TRL is not in .venv-vllm."""

from __future__ import annotations

import sys

import pytest
import yaml
from typer.testing import CliRunner

from sftadapt.adapt.mapper import MapperTrainConfig
from sftadapt.config import ConfigError, config_dict, load_config
from sftadapt.rl.direct_rl import DirectRLConfig
from sftadapt.rl.grpo import GRPOOptions, grpo_config, grpo_kwargs
from sftadapt.rl.rollouts import RolloutEngineConfig

SERVER = {"server": "trl", "base_urls": ["http://127.0.0.1:8000"]}
VLLM_FIELDS = ("use_vllm", "vllm_mode", "vllm_server_base_url", "vllm_tensor_parallel_size")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _opts(backend: str, options: dict | None = None, **more) -> GRPOOptions:
    opts = GRPOOptions(rollout_engine=RolloutEngineConfig(backend, dict(options or {})), **more)
    opts.validate()
    return opts


@pytest.mark.parametrize(
    ("backend", "options", "expect"),
    [
        ("hf", {}, {"use_vllm": False, "vllm_mode": "colocate", "vllm_server_base_url": None}),
        (
            "vllm",
            {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "vllm_enable_sleep_mode": True},
            {
                "use_vllm": True,
                "vllm_mode": "colocate",
                "vllm_tensor_parallel_size": 2,
                "vllm_gpu_memory_utilization": 0.5,
                "vllm_enable_sleep_mode": True,
                "vllm_server_base_url": None,
            },
        ),
        (
            "openai",
            {**SERVER, "vllm_server_timeout": 600.0},
            {
                "use_vllm": True,
                "vllm_mode": "server",
                "vllm_server_base_url": "http://127.0.0.1:8000",
                "vllm_server_timeout": 600.0,
            },
        ),
    ],
)
def test_each_backend_sets_trls_rollout_fields(backend, options, expect, tmp_path, offline):
    opts = _opts(backend, options)
    kwargs = grpo_kwargs(opts, tmp_path)
    assert {k: kwargs.get(k) for k in expect} == expect
    args = grpo_config(opts, tmp_path, progress=False)  # a real GRPOConfig: TRL takes every field as we set it
    assert {k: getattr(args, k) for k in expect} == expect


def test_a_vllm_block_means_what_the_trl_named_options_meant(tmp_path):
    # the paper config's switch from `use_vllm: true, vllm_mode: colocate` to `rollout_engine: {backend: vllm}`
    old = GRPOOptions(use_vllm=True, vllm_mode="colocate")
    assert grpo_kwargs(_opts("vllm"), tmp_path) == grpo_kwargs(old, tmp_path)
    served = GRPOOptions(use_vllm=True, vllm_mode="server", trl_args={"vllm_server_base_url": SERVER["base_urls"][0]})
    new = {k: v for k, v in grpo_kwargs(_opts("openai", SERVER), tmp_path).items() if k.startswith("vllm_")}
    assert new == {k: v for k, v in {**grpo_kwargs(served, tmp_path), **served.trl_args}.items() if k in new}


def test_the_block_does_not_import_vllm(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # any `import vllm` now raises
    assert grpo_kwargs(_opts("vllm", {"vllm_enable_sleep_mode": True}), tmp_path)["use_vllm"] is True


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["use_vllm=true", "rollout_engine.backend=vllm"], r"rollout_engine.backend: vllm and use_vllm: true"),
        (
            [
                "vllm_mode=server",
                "rollout_engine.backend=openai",
                "rollout_engine.options={server: trl, base_urls: ['http://127.0.0.1:8000']}",
            ],
            r"rollout_engine.backend: openai and vllm_mode both set",
        ),
        (
            ["trl_args.vllm_enable_sleep_mode=true", "rollout_engine.backend=vllm"],
            r"rollout_engine.backend: vllm and trl_args.vllm_enable_sleep_mode both set",
        ),
    ],
)
def test_the_block_and_the_trl_named_options_are_exclusive(overrides, refused):
    with pytest.raises(ConfigError, match=refused):
        load_config(GRPOOptions, None, overrides)


@pytest.mark.parametrize(
    ("backend", "options", "refused"),
    [
        (
            "vllm",
            {"vllm_enable_sleepmode": True},
            r"options.vllm_enable_sleepmode: not an option of backend vllm.*"
            r"did you mean 'vllm_enable_sleep_mode'",
        ),
        ("vllm", {"tp": 2}, r"options.tp: not an option of backend vllm"),
        ("vllm", {"vllm_tensor_parallel_size": 2}, r"write it as rollout_engine.options.tensor_parallel_size"),
        ("vllm", {"vllm_server_timeout": 60}, r"server mode only"),
        ("vllm", {"vllm_mode": "server"}, r"sets it from its backend"),
        ("vllm", {"gpu_memory_utilization": 1.5}, r"gpu_memory_utilization = 1.5: .* in \(0, 1\]"),
        ("vllm", {"tensor_parallel_size": 0}, r"tensor_parallel_size = 0: .* at least 1"),
        ("hf", {"tensor_parallel_size": 2}, r"backend hf .* takes no options"),
        ("ray", {}, r"rollout_engine.backend 'ray': TRL rolls out with one of hf, vllm, openai"),
        ("openai", {"base_urls": ["http://127.0.0.1:8000"]}, r"options.server: None: TRL's client talks to one `trl "),
        ("openai", {**SERVER, "server": "vllm"}, r"options.server: 'vllm': TRL's client talks to one `trl vllm-serve`"),
        (
            "openai",
            {**SERVER, "base_urls": ["http://127.0.0.1:8000", "http://127.0.0.1:8001"]},
            r"base_urls: 2 URLs: TRL's client talks to one `trl vllm-serve`",
        ),
        ("openai", {**SERVER, "base_urls": ["127.0.0.1:8000"]}, r"is not an http:// or https:// URL"),
        ("openai", {**SERVER, "gpu_memory_utilization": 0.5}, r"colocate mode only"),
        ("openai", {**SERVER, "vllm_server_host": "10.0.0.1"}, r"sets it from its backend and base_urls"),
    ],
)
def test_an_option_trl_would_not_read_is_refused_naming_it(backend, options, refused):
    values = {"rollout_engine": {"backend": backend, "options": options}}
    with pytest.raises(ConfigError, match=refused):
        load_config(MapperTrainConfig, None, base={"grpo": values})


REMOTE = {"backend": "openai", "options": {"server": "trl", "base_urls": ["http://10.0.0.5:8000"]}}


@pytest.mark.parametrize("cls, section", [(MapperTrainConfig, "mapper_train"), (DirectRLConfig, "direct_rl")])
def test_a_remote_rollout_server_needs_online_or_allow_hosts(cls, section, offline):
    with pytest.raises(ConfigError, match=r"grpo.rollout_engine.options.base_urls: host '10.0.0.5'.*--online"):
        load_config(cls, None, base={"grpo": {"rollout_engine": REMOTE}})
    assert load_config(cls, None, ["online=true"], base={"grpo": {"rollout_engine": REMOTE}}).online
    allowed = {**REMOTE, "options": {**REMOTE["options"], "allow_hosts": ["10.0.0.5"]}}
    cfg = load_config(cls, None, base={"grpo": {"rollout_engine": allowed}})
    assert cfg.grpo.rollout_engine.options["allow_hosts"] == ["10.0.0.5"]


def test_grpo_config_refuses_a_remote_server_offline_where_trl_connects(tmp_path, offline):
    opts = GRPOOptions(rollout_engine=RolloutEngineConfig(REMOTE["backend"], dict(REMOTE["options"])))
    with pytest.raises(ValueError, match=r"grpo.rollout_engine.options.base_urls: host '10.0.0.5'"):
        grpo_config(opts, tmp_path, progress=False)
    assert grpo_config(opts, tmp_path, progress=False, tracker={"online": True}).vllm_server_base_url.endswith(":8000")


def test_run_dry_run_refuses_a_remote_rollout_server_offline(tmp_path, offline):
    from sftadapt.cli import app

    config = {
        "name": "remote-rollouts",
        "model": "tiny-random",
        "out": str(tmp_path / "run"),
        "arms": ["base", "dart_sft"],
        "mapper_train": {"grpo": {"rollout_engine": REMOTE}},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code != 0
    assert "mapper_train.grpo.rollout_engine.options.base_urls: host '10.0.0.5'" in result.output
    assert "--online" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("cls", [MapperTrainConfig, DirectRLConfig], ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "engine",
    [
        {"backend": "vllm", "options": {"tensor_parallel_size": 2, "vllm_enable_sleep_mode": True}},
        {"backend": "openai", "options": {**SERVER, "vllm_server_timeout": 600.0}},
    ],
    ids=["vllm", "openai"],
)
def test_a_rollout_engine_survives_a_yaml_round_trip(cls, engine, tmp_path):
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump({"grpo": {"rollout_engine": engine}}))
    cfg = load_config(cls, path)
    assert isinstance(cfg.grpo.rollout_engine, RolloutEngineConfig)
    assert config_dict(cfg.grpo.rollout_engine) == engine
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(config_dict(cfg)))
    assert config_dict(load_config(cls, again)) == config_dict(cfg)
