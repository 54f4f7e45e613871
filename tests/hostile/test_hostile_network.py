"""Hostile network configs: an `openai` engine pointed off the machine, and `push_to_hub` in the trainer's
pass-through arguments, must not reach the network unless the user said `--online` (or `online: true`).

The two subprocess tests observe the network rather than assume it: they run the real command under
tests/hostile/netguard, which logs every non-loopback name lookup and connection (and refuses it). Everything
else is in-process: the address matrix goes straight to the policy (sftadapt/runtime/network.py)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sftadapt.cli import app
from sftadapt.config import ConfigError, load_config
from sftadapt.runtime import network

GUARD = Path(__file__).resolve().parent / "netguard"
REMOTE = ["http://example.org:8000/v1", "http://10.1.2.3:8000/v1"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # what the CLI callback sets without --online; an in-process test must not inherit another's --online
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}) + "\n")
    return path


def _one_line_error(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text and len(lines) == 1 and lines[0].startswith("error: "), text[-3000:]
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the policy, address by address
@pytest.mark.parametrize(
    "url, local",
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://127.0.0.2:8000/v1", True),
        ("http://127.255.255.254/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://LOCALHOST:8000/v1", True),
        ("https://localhost/v1", True),
        ("http://[::ffff:127.0.0.1]:8000/v1", True),  # IPv4-mapped: still this machine's 127.0.0.1
        ("http://user:pw@127.0.0.1:8000/v1", True),  # userinfo is not where the request goes
        ("http://0.0.0.0:8000/v1", False),
        ("http://169.254.169.254/latest", False),  # link-local (cloud metadata)
        ("http://10.1.2.3:8000/v1", False),
        ("http://192.168.0.1:8000/v1", False),
        ("http://[fe80::1]:8000/v1", False),
        ("http://[::ffff:10.0.0.1]:8000/v1", False),
        ("http://example.org:8000/v1", False),
        ("http://127.0.0.1@evil.com/", False),  # the host is evil.com
        ("http://127.0.0.1:8000@evil.com/v1", False),
        ("http://evil.com#@127.0.0.1", False),  # the host is evil.com; the rest is a fragment
        ("http://evil.com?@127.0.0.1/v1", False),
        ("http://evil.com\\@127.0.0.1/v1", True),  # no browser rule here: http.client goes where urlsplit says
        ("http://user:secret@example.org/v1", False),
        ("http://127.0.0.1.evil.com/v1", False),
        ("http://127.0.0.1\t.evil.com/v1", False),  # urlsplit drops the tab, as the connection would
        ("http://localhost.evil.com/v1", False),
        ("http://localhost./v1", False),  # a name other than `localhost` is not resolved to decide
        ("http://2130706433/v1", False),  # the decimal spelling of 127.0.0.1 is a name here
        ("http://127.1/v1", False),
        ("http://0x7f000001/v1", False),
    ],
)
def test_offline_only_loopback_servers_pass(url, local):
    def check():
        network.check_servers([url], None, False, "engine.options.base_urls", "engine.options.allow_hosts")

    if local:
        check()
        return
    with pytest.raises(ValueError) as err:
        check()
    msg = str(err.value)
    assert "\n" not in msg and "--online" in msg and "engine.options.allow_hosts" in msg
    assert "127.0.0.1@" not in msg and "secret" not in msg  # the host is named, not the URL with its userinfo
    # online, the same URL is the user's choice
    network.check_servers([url], None, True, "engine.options.base_urls", "engine.options.allow_hosts")


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "ftp://127.0.0.1/v1", "http://127.0.0.1:99999/v1", "http://[::1"])
def test_a_server_that_is_not_an_http_url_is_refused_even_online(url):
    with pytest.raises(ValueError, match="not an http:// or https:// URL"):
        network.check_servers([url], None, True, "f", "a")


def test_allow_hosts_lists_the_remote_servers_the_user_wants():
    network.check_servers(REMOTE, ["EXAMPLE.org", "10.1.2.3"], False, "f", "a")
    network.check_servers(REMOTE, "example.org, 10.1.2.3", False, "f", "a")  # --engine-option allow_hosts=a,b
    with pytest.raises(ValueError, match="host '10.1.2.3'"):
        network.check_servers(REMOTE, ["example.org"], False, "f", "a")
    with pytest.raises(ValueError, match="host 'evil.com'"):  # listing the loopback part of a trick allows nothing
        network.check_servers(["http://127.0.0.1@evil.com/"], ["127.0.0.1"], False, "f", "a")


# ---------------------------------------------------------------- configs: refused when built, run --dry-run too
def test_stage_and_run_configs_are_refused_when_built_unless_online(tmp_path):
    from sftadapt.eval.sample import SampleConfig
    from sftadapt.pipeline import load_run_config

    remote = f"{{backend: openai, options: {{base_urls: [{REMOTE[0]}]}}}}"
    with pytest.raises(ConfigError, match=r"engine\.options\.base_urls: host 'example\.org'.*--online"):
        load_config(SampleConfig, None, [f"engine={remote}"], base={"model": "tiny-random", "data": "d.jsonl"})
    for override in (f"eval.engine={remote}", f"rewrite={{engine: {remote}}}", f"synth={{mapper_engine: {remote}}}"):
        with pytest.raises(ConfigError, match=r"host 'example\.org'.*pass --online"):
            load_run_config(None, [override])
    load_run_config(None, [f"eval.engine={remote}", "online=true"])  # the config's own switch counts
    allowed = f"{{backend: openai, options: {{base_urls: [{REMOTE[0]}], allow_hosts: [example.org]}}}}"
    load_run_config(None, [f"eval.engine={allowed}"])

    config = tmp_path / "study.yaml"
    config.write_text(f"out: {tmp_path / 'run'}\neval:\n  engine: {remote}\n")
    result = runner.invoke(app, ["run", str(config), "--dry-run"])
    assert result.exit_code == 2
    line = _one_line_error(result.output)
    assert "eval.engine.options.base_urls" in line and "example.org" in line and "--online" in line
    assert not (tmp_path / "run").exists()


def test_an_engine_built_directly_refuses_before_any_lookup_or_connection(monkeypatch):
    """Library callers skip config validation: the engine itself refuses, before a socket is touched."""
    from sftadapt.engines import EngineConfig, make_engine

    attempts = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: attempts.append(("lookup", a[0])) or [])
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: attempts.append(("connect", addr)))
    with pytest.raises(ValueError, match=r"host 'example\.org'.*--online") as err:
        make_engine("tiny-random", EngineConfig("openai", {"base_urls": REMOTE, "max_retries": 0}))
    assert "\n" not in str(err.value) and attempts == []


# ---------------------------------------------------------------- (b) loopback gets past the policy
def test_a_loopback_server_is_not_refused_by_the_policy(tmp_path):
    """Offline, eval against 127.0.0.1 goes through the check and fails only because nothing listens there."""
    port = _closed_port()
    urls = f"http://127.0.0.1:{port}/v1, 'http://[::1]:{port}/v1'"
    result = runner.invoke(app, _eval_args(tmp_path, urls))
    line = _one_line_error(result.output)
    assert result.exit_code != 0 and f"127.0.0.1:{port}" in line and "connection refused" in line, line
    assert "loopback" not in line and "--online" not in line


# ---------------------------------------------------------------- push_to_hub
def test_push_to_hub_offline_is_one_line_naming_online(tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "tiny-random",
            "--data",
            str(_data(tmp_path)),
            "--out",
            str(tmp_path / "t"),
            "--set",
            "trainer_args.push_to_hub=true",
        ],
    )
    assert result.exit_code == 2
    line = _one_line_error(result.output)
    assert "trainer_args.push_to_hub" in line and "pass --online" in line and "HF_HUB_OFFLINE" not in line
    assert not (tmp_path / "t").exists()  # refused before the stage started
    with pytest.raises(ConfigError, match=r"train\.trainer_args\.push_to_hub.*pass --online"):
        from sftadapt.pipeline import load_run_config

        load_run_config(None, ["train={trainer_args: {push_to_hub: true}}"])


def test_trainers_built_directly_refuse_push_to_hub_offline(tmp_path):
    """The trainers' own guards, for callers that skip config validation (no hub repo is created)."""
    from sftadapt.rl.grpo import GRPOOptions, grpo_config
    from sftadapt.train.stage import TrainConfig, _training_args

    cfg = TrainConfig(model="tiny-random", data=["d.jsonl"], out=str(tmp_path / "t"))
    cfg.trainer_args = {"push_to_hub": True}
    with pytest.raises(ValueError, match=r"^trainer_args\.push_to_hub: .*pass --online"):
        _training_args(cfg)
    with pytest.raises(ValueError, match=r"^grpo\.trl_args\.push_to_hub: .*pass --online"):
        grpo_config(GRPOOptions(trl_args={"push_to_hub": True}), tmp_path / "g")


# ---------------------------------------------------------------- real processes under the network guard
def _run(args, tmp_path):
    log = tmp_path / "net.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(GUARD), os.environ.get("PYTHONPATH", "")]),
        "SFTADAPT_NETGUARD_LOG": str(log),
        # inherited "online": the command line alone decides
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "sftadapt.cli", "-q", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    return proc, log.read_text().splitlines() if log.exists() else []


def _eval_args(tmp_path, urls=", ".join(REMOTE), *more):
    return [
        "eval",
        "--model",
        "tiny-random",
        "--benchmarks",
        str(_data(tmp_path)),
        "--out",
        str(tmp_path / "o"),
        "--engine",
        "openai",
        "--engine-option",
        f"base_urls=[{urls}]",
        "--engine-option",
        "max_retries=0",
        *more,
    ]


def test_offline_eval_with_remote_servers_never_looks_up_or_connects(tmp_path):
    proc, attempts = _run(_eval_args(tmp_path), tmp_path)
    assert attempts == [], attempts
    assert proc.returncode != 0
    line = _one_line_error(proc.stderr)
    assert "example.org" in line and "--online" in line and "allow_hosts" in line


def test_online_eval_lets_the_remote_server_through_the_policy(tmp_path):
    """With --online the policy lets example.org through: the guard sees the lookup (and refuses it)."""
    proc, attempts = _run(["--online", *_eval_args(tmp_path)], tmp_path)
    assert any("lookup example.org" in a for a in attempts), (attempts, proc.stderr[-2000:])
    assert proc.returncode != 0 and "loopback" not in proc.stderr


@pytest.mark.parametrize(
    "grpo, refused",
    [
        ({"use_vllm": True, "vllm_mode": "server", "vllm_server_host": "gpu-node-7"}, "vllm_server_host: 'gpu-node-7'"),
        (
            {"use_vllm": True, "vllm_mode": "server", "trl_args": {"vllm_server_base_url": "http://10.0.0.5:8000"}},
            "vllm_server_base_url: '10.0.0.5'",
        ),
        ({"use_vllm": True, "vllm_mode": "server"}, None),  # TRL's default 0.0.0.0: this machine
        ({"use_vllm": True, "vllm_mode": "server", "vllm_server_host": "127.0.0.1"}, None),
        ({"use_vllm": True, "vllm_mode": "colocate", "vllm_server_host": "gpu-node-7"}, None),  # no server used
    ],
)
def test_grpo_rollouts_from_a_remote_vllm_server_need_online(grpo, refused, monkeypatch):
    from sftadapt.runtime import network

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {"mapper_train": {"grpo": grpo}}
    if refused is None:
        network.check_config(cfg)
        return
    with pytest.raises(ValueError, match=refused + ".*pass --online"):
        network.check_config(cfg)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    network.check_config(cfg)  # --online: allowed
