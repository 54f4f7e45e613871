"""Training stages started through `accelerate launch` (runtime/launch.py): two CPU ranks (gloo) train the
same curve as one process, a lost rank resumes from its checkpoint, and `sftadapt run` launches its arms and
caches them as it caches inline ones."""

import dataclasses
import json
import os
from pathlib import Path

import pytest
from test_pipeline import _yaml
from test_train import _examples

from sftadapt.data.records import write_records
from sftadapt.runtime import launch, owned
from sftadapt.runtime.trainer_options import LauncherConfig
from sftadapt.train.stage import TrainConfig, read_log, train


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    # two ranks on a 2-core machine: one thread each, or they fight over the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    from sftadapt.runtime.models import load_tokenizer

    path = tmp_path_factory.mktemp("data") / "eight.jsonl"
    write_records(path, _examples(load_tokenizer("tiny-random"), 8))  # every other row has behaviour log-probs
    return path


def _config(out: Path, data: Path, **kw) -> TrainConfig:
    values = dict(
        model="tiny-random",
        data=[str(data)],
        out=str(out),
        lr=1e-3,
        max_steps=3,
        batch_size=4,
        grad_accum=1,
        save_steps=100,
        warmup_ratio=0.0,
        resume=False,
        dtype="float32",
    )
    return TrainConfig(**{**values, **kw})


def _two_ranks(cfg: TrainConfig) -> TrainConfig:
    """The same global batch on two processes: half the rows per device."""
    return dataclasses.replace(
        cfg, batch_size=cfg.batch_size // 2, launcher=LauncherConfig(kind="accelerate", num_processes=2)
    )


def _same_curve(a: list[dict], b: list[dict], keys=("loss", "nll")) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) >= 3
    for x, y in zip(a, b):
        assert y["response_tokens"] == x["response_tokens"], x["step"]
        for key in keys:
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7), (x["step"], key)


@pytest.mark.parametrize("loss", ["nll", "dft", "is"])
def test_two_launched_ranks_train_the_curve_of_one_process(tmp_path, rows, loss, monkeypatch):
    one = _config(tmp_path / "one", rows, loss=loss)
    train(one)
    two = _two_ranks(_config(tmp_path / "two", rows, loss=loss))
    if loss == "nll":  # the stage command honours the launcher as `run` does
        import yaml
        from typer.testing import CliRunner

        from sftadapt.cli import app

        monkeypatch.setenv("SFTADAPT_QUIET", "1")  # what -q sets, undone after the test
        config = tmp_path / "two.yaml"
        config.write_text(yaml.safe_dump(dataclasses.asdict(two)))
        result = CliRunner().invoke(app, ["-q", "train", "--config", str(config)])
        assert result.exit_code == 0, result.output
        summary = json.loads((Path(two.out) / launch.SUMMARY_FILE).read_text())
    else:
        summary = launch.run_stage("train", two, progress=False)
    assert summary["processes"] == 2 and summary["global_batch"] == 4 and summary["steps"] == 3
    a, b = read_log(one.out), read_log(two.out)
    _same_curve(a, b, ("loss", "nll", "grad_norm", *(("weight_mean", "ess") if loss == "is" else ())))
    assert len({r["loss"] for r in a}) == 3  # a flat curve would make the comparison vacuous
    assert (Path(two.out) / "model.safetensors").is_file() and (Path(two.out) / launch.LOG_FILE).is_file()


def test_a_killed_rank_fails_the_launch_clearly_and_the_rerun_resumes(tmp_path, rows, monkeypatch):
    straight = _config(tmp_path / "straight", rows, max_steps=4)
    train(straight)
    cfg = _two_ranks(_config(tmp_path / "killed", rows, max_steps=4, save_steps=2, resume="auto"))
    monkeypatch.setenv(owned.KILL_RANK_ENV, "1:2")
    with pytest.raises(launch.LaunchError) as err:
        launch.run_stage("train", cfg, progress=False)
    message = str(err.value)
    assert "stage train" in message and "rank 1 failed first (killed by signal 9 (SIGKILL))" in message, message
    assert str(Path(cfg.out) / launch.LOG_FILE) in message
    assert (Path(cfg.out) / "checkpoint-2" / "trainer_state.json").is_file()
    monkeypatch.delenv(owned.KILL_RANK_ENV)
    summary = launch.run_stage("train", cfg, progress=False)
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 4
    _same_curve(read_log(straight.out), read_log(cfg.out))


def test_a_failing_rank_is_named_with_the_error_it_printed(tmp_path):
    # the tail of a launch log as torch's elastic agent and a rank that refused its data leave it
    log = tmp_path / launch.LOG_FILE
    log.write_text(
        "error: data/missing.jsonl: no such file\n"
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
        "Failures:\n  <NO_OTHER_FAILURES>\nRoot Cause (first observed failure):\n[0]:\n"
        "  rank      : 1 (local_rank: 1)\n  exitcode  : 2 (pid: 4242)\n"
    )
    message = launch.failure_message("map train", 1, log)
    assert message == (
        "stage map train: accelerate launch failed (exit 1): rank 1 failed first (exit code 2); it said: "
        f"error: data/missing.jsonl: no such file; the whole output is in {log}"
    )


def test_run_trains_its_arm_through_the_launcher_and_caches_it(tmp_path):
    from sftadapt.pipeline import load_run_config, run

    study = {
        "name": "launched",
        "model": "tiny-random",
        "seeds": [0],
        "arms": ["base", "sft"],
        "task": {"kind": "synthetic", "train_problems": 4},
        "warmup": {"enabled": False},
        "eval": {"benchmarks": ["synthetic_id"], "limit": 1, "dtype": "float32", "protocol_overrides": {"n": 1}},
        "train": {
            "max_steps": 2,
            "batch_size": 1,
            "grad_accum": 1,
            "save_steps": 1000,
            "launcher": {"kind": "accelerate", "num_processes": 2},
        },
    }
    path = _yaml(tmp_path, study)
    run(load_run_config(path), progress=False)
    folder = tmp_path / "run" / "train_sft"
    record = json.loads((folder / "stage.json").read_text())
    assert record["status"] == "done" and record["result"]["processes"] == 2 and record["result"]["global_batch"] == 2
    assert "launcher" not in record["spec"]["options"]  # how it ran is not what it trained
    assert (folder / launch.LOG_FILE).is_file() and len(read_log(folder)) == 2
    again = run(load_run_config(path), progress=False)
    assert again["stages_run"] == {0: []} and again["arms"][-1]["arm"] == "sft"
    # the same study trained inline: nothing to redo either (the launcher is not hashed)
    inline = {**study, "train": {**study["train"], "launcher": {"kind": "inline"}}}
    plan = run(load_run_config(_yaml(tmp_path, inline)), progress=False, dry_run=True)["plan"][0]
    assert {row["status"] for row in plan} == {"cached"}


def test_launcher_options_are_checked_and_the_command_is_plain_ddp_without_a_config_file(tmp_path):
    from sftadapt.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="launcher.kind = 'mpi'"):
        build_config(TrainConfig, {"launcher": {"kind": "mpi"}}, "train")
    with pytest.raises(ConfigError, match="launcher.config_file = 'nope.yaml': no such file"):
        build_config(TrainConfig, {"launcher": {"config_file": "nope.yaml"}}, "train")
    with pytest.raises(ConfigError, match="--num_processes is set by launcher.num_processes"):
        build_config(TrainConfig, {"launcher": {"args": ["--num_processes=4"]}}, "train")
    cmd = launch.command(LauncherConfig(kind="accelerate", num_processes=2), tmp_path / "launch.json")
    assert cmd[cmd.index("--num_processes") + 1] == "2" and "--multi_gpu" in cmd
    assert cmd[-3:] == ["-m", launch.ENTRY, str(tmp_path / "launch.json")]
    ddp = str(Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "ddp.yaml")
    cmd = launch.command(LauncherConfig("accelerate", 8, ddp, ["--gpu_ids", "0,1"]), Path("s.json"), online=True)
    assert cmd[cmd.index("--config_file") + 1] == ddp and "--multi_gpu" not in cmd and cmd[-1] == "--online"
    assert os.environ.get("WORLD_SIZE") is None


def test_direct_rl_through_the_launcher_counts_every_rank_s_rollouts(tmp_path):
    from sftadapt.data.records import Problem
    from sftadapt.rl.direct_rl import DirectRLConfig
    from sftadapt.rl.grpo import GRPOOptions, read_rl_log

    data = tmp_path / "problems.jsonl"
    write_records(data, [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=str(i + 1)) for i in range(4)])
    cfg = DirectRLConfig(
        model="tiny-random",
        data=str(data),
        out=str(tmp_path / "direct"),
        verifier_workers=1,
        grpo=GRPOOptions(max_steps=1, num_generations=2, max_completion_length=8, save_steps=100),
        launcher=LauncherConfig(kind="accelerate", num_processes=2),
    )
    summary = launch.run_stage("rl", cfg, progress=False)
    compute = json.loads((tmp_path / "direct" / "compute.json").read_text())
    # one step = one prompt group per rank: 2 ranks x 2 rollouts, counted over both ranks, not rank 0's alone
    assert summary["processes"] == 2 and compute["processes"] == 2 and compute["optimizer_steps"] == 1
    assert compute["rollouts"] == 4 and read_rl_log(cfg.out)[-1]["cum_rollouts"] == 4
    assert (tmp_path / "direct" / "model.safetensors").is_file()
