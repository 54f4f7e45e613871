"""Tracking in every stage (runtime/tracking.py): each stage's metrics written to a tracker that runs locally and
read back from its files — tensorboard event files (tensorboard's own EventAccumulator) for rewrite, map
synthesize, map train (mapper RL), direct RL, train and eval; trackio's local SQLite store and mlflow's `file:`
store in a subprocess under the network guard; a missing tracker package is one line before any work; the
run hands one report_to and one tracking folder to every stage, and changing them redoes no stage."""

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_evaluate import PROBLEMS as EVAL_PROBLEMS
from test_evaluate import proto
from test_evaluate import run as run_eval
from test_mapper import OPEN_GATE, AlwaysCorrect, InProcessVerifier
from test_mapper import PROBLEMS as MAP_PROBLEMS
from test_rewrite import run as run_rewrite

from sftadapt.config import ConfigError, load_config
from sftadapt.runtime import tracking

GUARD = Path(__file__).resolve().parent / "hostile" / "netguard"
needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="tensorboard not installed (pip install 'sftadapt[tensorboard]')",
)


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the tensorboard event files under `folder`: tag -> [(step, value)], read by tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    files = sorted(Path(folder).rglob("events.out.tfevents.*"))
    assert files, f"no event file under {folder}"
    for path in files:
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


def last(found, tag):
    assert tag in found, sorted(found)
    return found[tag][-1][1]


# ---------------------------------------------------------------- the module
def test_scalars_flatten_nested_numbers_and_drop_the_rest():
    got = tracking.scalars({"a": 1, "b": {"c": 0.5, "d": "text", "e": None, "f": float("nan")}, "g": [1], "h": True})
    assert got == {"a": 1.0, "b/c": 0.5, "h": 1.0}


def test_run_names_follow_the_stage_folder(tmp_path):
    run = tmp_path / "run"
    assert tracking.run_name(run / "seed-1" / "rewrite", run / "tracking") == "seed-1/rewrite"
    assert tracking.run_name(run / "train_sft", run / "tracking") == "train_sft"
    assert tracking.run_name(tmp_path / "mine", None) == "mine"
    assert tracking.tracking_folder(tmp_path / "mine", None) == tmp_path / "mine" / "tracking"


def test_unknown_tracker_and_missing_package_are_one_line(monkeypatch):
    from sftadapt.adapt.rewrite import RewriteConfig
    from sftadapt.pipeline import RunConfig
    from sftadapt.train.stage import TrainConfig

    with pytest.raises(ConfigError, match="choose one of none, tensorboard, wandb, trackio, mlflow"):
        load_config(TrainConfig, None, ["report_to=comet"])
    # a tracker whose module cannot be found (the real lookup, on a module name that does not exist)
    monkeypatch.setitem(tracking.PACKAGES, "wandb", ("sftadapt_no_such_tracker", "wandb"))
    for cls in (RewriteConfig, TrainConfig, RunConfig):
        with pytest.raises(ConfigError) as err:
            load_config(cls, None, ["report_to=wandb"])
        assert "pip install 'sftadapt[wandb]'" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_cli_names_the_extra_before_any_work(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args in (
        [
            "rewrite",
            "--model",
            "tiny-random",
            "--data",
            "nowhere.jsonl",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "report_to=wandb",
        ],
        [
            "eval",
            "--model",
            "tiny-random",
            "--benchmarks",
            "synthetic_id",
            "--out",
            str(tmp_path / "e"),
            "--report-to",
            "wandb",
        ],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "sftadapt.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "pip install 'sftadapt[wandb]'" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()  # refused before any work


# ---------------------------------------------------------------- each stage, read back from tensorboard
@needs_tensorboard
def test_rewrite_logs_origin_shares_and_the_gap(tmp_path):
    summary = run_rewrite(tmp_path, report_to="tensorboard")
    found = scalars(tmp_path / "run" / "tracking" / "run")
    assert last(found, "origins/self/share") == pytest.approx(0.25)
    assert last(found, "origins/guided/share") == pytest.approx(0.25)
    assert last(found, "origins/expert/share") == pytest.approx(0.5)
    assert last(found, "gap/delta") == pytest.approx(summary["gap"]["delta"])
    assert last(found, "counts/guided_near_copy") == 2
    assert last(found, "self/solved") == 1 and last(found, "guided/solved") == 1  # logged as each stage ends


@needs_tensorboard
def test_map_synthesize_logs_gate_pass_rate_and_reasons(tiny_engine, tmp_path):
    from sftadapt.adapt.mapper import SynthConfig, synthesize

    out = tmp_path / "sdft"
    cfg = SynthConfig(
        mapper="untrained",
        target="tiny-random",
        data="unused",
        out=str(out),
        k=2,
        max_new_tokens=16,
        report_to="tensorboard",
        tracking_dir=str(tmp_path / "tb"),
    )
    summary = synthesize(
        cfg,
        engine=tiny_engine,
        verifier=InProcessVerifier(),
        problems=MAP_PROBLEMS,
        progress=False,
        print_summary=False,
    )
    found = scalars(tmp_path / "tb" / "sdft")
    assert last(found, "gate_pass_rate") == summary["gate_pass_rate"] == 0.0
    assert last(found, "fallback_rate") == 1.0
    reasons = {tag.split("/", 1)[1]: found[tag][-1][1] for tag in found if tag.startswith("gate_reasons/")}
    assert reasons == pytest.approx(summary["gate_failures"]) and sum(reasons.values()) > 0


@needs_tensorboard
def test_mapper_rl_logs_every_step_through_trl(tiny_engine, tmp_path):
    from sftadapt.adapt.mapper import MapperTrainConfig, train_mapper
    from sftadapt.data.records import write_records
    from sftadapt.rl.grpo import GRPOOptions, read_rl_log

    data = tmp_path / "sft.jsonl"
    write_records(data, MAP_PROBLEMS)
    cfg = MapperTrainConfig(
        target="tiny-random",
        data=str(data),
        out=str(tmp_path / "mapper"),
        reward=OPEN_GATE,
        grpo=GRPOOptions(max_steps=2, num_generations=2, max_completion_length=8),
        report_to="tensorboard",
    )
    train_mapper(cfg, engine=tiny_engine, verifier=AlwaysCorrect(), progress=False)
    found = scalars(tmp_path / "mapper" / "tracking" / "mapper")
    gate = [tag for tag in found if tag.endswith("gate_pass_rate")]
    assert gate and [step for step, _ in found[gate[0]]] == [1, 2]
    assert [value for _, value in found[gate[0]]] == [row["gate_pass_rate"] for row in read_rl_log(cfg.out)]
    assert any(tag.endswith("fail_no_answer") for tag in found) and any(tag.endswith("loss") for tag in found)
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # set for the training only


@needs_tensorboard
def test_direct_rl_logs_accuracy_per_step(tmp_path):
    from test_direct_rl import HalfCorrect

    from sftadapt.data.records import Problem, write_records
    from sftadapt.rl.direct_rl import DirectRLConfig, direct_rl
    from sftadapt.rl.grpo import GRPOOptions

    data = tmp_path / "problems.jsonl"
    write_records(data, [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=str(i + 1)) for i in range(3)])
    cfg = DirectRLConfig(
        model="tiny-random",
        data=str(data),
        out=str(tmp_path / "direct"),
        report_to="tensorboard",
        grpo=GRPOOptions(max_steps=2, num_generations=2, max_completion_length=8),
    )
    direct_rl(cfg, verifier=HalfCorrect(), progress=False)
    found = scalars(tmp_path / "direct" / "tracking")
    accuracy = [tag for tag in found if tag.endswith("accuracy")]
    assert accuracy and [v for _, v in found[accuracy[0]]] == [0.5, 0.5]


@needs_tensorboard
def test_train_keeps_its_per_step_losses(tmp_path):
    from test_train import _examples

    from sftadapt.data.records import write_records
    from sftadapt.runtime.models import load_tokenizer
    from sftadapt.train.stage import TrainConfig, read_log, train

    data = tmp_path / "d.jsonl"
    write_records(data, _examples(load_tokenizer("tiny-random"), 4))
    cfg = TrainConfig(
        model="tiny-random",
        data=[str(data)],
        out=str(tmp_path / "sft"),
        max_steps=3,
        batch_size=2,
        grad_accum=1,
        resume=False,
        dtype="float32",
        report_to="tensorboard",
    )
    train(cfg)
    found = scalars(tmp_path / "sft" / "tracking" / "sft")
    assert [round(v, 4) for _, v in found["train/loss"]] == [round(r["loss"], 4) for r in read_log(cfg.out)]
    assert [step for step, _ in found["train/nll"]] == [1, 2, 3]


@needs_tensorboard
def test_eval_logs_accuracy_per_benchmark(tmp_path):
    res = run_eval(tmp_path, proto(), report_to="tensorboard")
    found = scalars(tmp_path / "run" / "tracking")
    assert last(found, "toy/avg@4/value") == pytest.approx(res["benchmarks"]["toy"]["avg@4"]["value"])
    assert last(found, "toy/counts/correct") == res["benchmarks"]["toy"]["counts"]["correct"]
    assert len(EVAL_PROBLEMS) == last(found, "toy/n_problems")


# ---------------------------------------------------------------- the run: one report_to for every stage
def test_run_hands_one_tracker_and_folder_to_every_stage(tmp_path):
    from sftadapt import arms
    from sftadapt.pipeline import load_run_config, run_seed, seed_paths, stage_configs

    cfg = load_run_config(
        None,
        [
            f"out={tmp_path / 'study'}",
            "report_to=tensorboard" if importlib.util.find_spec("tensorboard") else "report_to=none",
            "online=false",
        ],
    )
    root = tmp_path / "study"
    configs = stage_configs(cfg, 0, "tiny-random", seed_paths(root))
    stages = [c for name, c in configs.items() if name != "protocol"]
    # every adapt stage, direct RL, one training per trained arm, the warm-up, the evaluation
    adapt = {s for chain in arms.SOURCE_STAGES.values() for s in chain}
    assert len(stages) == len(adapt) + 1 + len(arms.TRAINED_ARMS) + 1 + 1
    for c in stages:
        assert c.report_to == cfg.report_to and c.tracking_dir == str(root / "tracking") and c.online is False
    # turning a tracker on or off redoes nothing: the stage hash leaves the bookkeeping options out
    plans = []
    for report_to in ("none", "tensorboard"):
        cfg.report_to = report_to
        plans.append(run_seed(cfg, 0, root, progress=False, dry_run=True)["plan"])
    assert plans[0] == plans[1]


def test_stage_hash_ignores_tracking_options():
    from sftadapt.pipeline import _decided

    a = _decided({"lr": 1.0, "report_to": "none", "tracking_dir": None, "online": False, "max_prompt_tokens": None})
    b = _decided({"lr": 1.0, "report_to": "mlflow", "tracking_dir": "x", "online": True})
    assert a == b == {"lr": 1.0}
    assert _decided({"lr": 1.0, "max_prompt_tokens": 64}) == {"lr": 1.0, "max_prompt_tokens": 64}


# ---------------------------------------------------------------- trackio and mlflow: local stores, offline
WRITE_AND_READ = """
import json, sys
from pathlib import Path
from sftadapt.runtime import tracking
kind, out = sys.argv[1], Path(sys.argv[2])
with tracking.open_tracker(kind, out=out, config={"k": 4}) as t:
    t.log({"self": {"solved": 3}}, step=1)
    t.summary({"gate_pass_rate": 0.25, "math500": {"avg@4": {"value": 0.5}}})
"""


def _guarded(args, tmp_path):
    log = tmp_path / "net.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(GUARD), os.environ.get("PYTHONPATH", "")]),
        "SFTADAPT_NETGUARD_LOG": str(log),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    for key in ("TRACKIO_DIR", "TRACKIO_SPACE_ID", "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_AND_READ, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    return proc, (log.read_text().splitlines() if log.exists() else [])


@pytest.mark.skipif(importlib.util.find_spec("trackio") is None, reason="trackio not installed")
def test_trackio_writes_its_local_store_offline(tmp_path):
    proc, attempts = _guarded(["trackio", str(tmp_path / "stage")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert attempts == []
    db = tmp_path / "stage" / "tracking" / "trackio" / "sftadapt.db"
    assert db.is_file()
    with sqlite3.connect(db) as con:
        tables = {row[0] for row in con.execute("select name from sqlite_master where type='table'")}
        assert "metrics" in tables, tables
        rows = [json.loads(r[0]) for r in con.execute("select metrics from metrics")]
    merged = {k: v for r in rows for k, v in r.items()}
    assert merged["self/solved"] == 3 and merged["gate_pass_rate"] == 0.25
    assert merged["math500/avg@4/value"] == 0.5


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
def test_mlflow_writes_a_file_store_inside_the_run_folder_offline(tmp_path, monkeypatch):
    proc, attempts = _guarded(["mlflow", str(tmp_path / "stage")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert attempts == []  # its usage telemetry too
    from mlflow.tracking import MlflowClient

    store = tmp_path / "stage" / "tracking" / "mlruns"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("sftadapt")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "stage" and run.data.params["k"] == "4"
    assert run.data.metrics["gate_pass_rate"] == 0.25 and run.data.metrics["math500/avg_4/value"] == 0.5
    assert [m.value for m in client.get_metric_history(run.info.run_id, "self/solved")] == [3.0]
