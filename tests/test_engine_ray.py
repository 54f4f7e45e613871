"""The `ray` backend (engines/replicas.py): two hf replicas of the tiny random model on a local Ray cluster of 2
CPUs run the real rewrite and eval stages and write what one hf engine writes, greedy rows bit for bit; a
replica killed mid-stage is restarted and its piece run again, no row lost or doubled; bad options, a remote
cluster offline and vllm's removed data parallelism are refused.

One cluster and one engine are shared by the module (actors take seconds to start); each replica runs one torch
thread, and so does the in-process hf baseline: fp32 reductions may round differently with other thread counts."""

from __future__ import annotations

import os

import pytest
from stage_rows import eval_rows, rewrite_rows

from sftadapt.data.records import Problem
from sftadapt.engines import EngineConfig, RequestRejected, make_engine
from sftadapt.eval.stage import EvalConfig

try:
    import ray
except ImportError:  # in the test extra: CI installs it, so there a missing ray is a failure
    if os.environ.get("CI"):
        raise
    pytest.skip("ray is not installed (pip install sftadapt[ray])", allow_module_level=True)

BATCH = 4  # 8 prompts per call: two hf batches, one for each replica
PROBLEMS = [
    Problem(f"p{i}", f"Sam has {i} apples and buys {i + 1} more. How many now?", str(2 * i + 1), f"#### {2 * i + 1}")
    for i in range(8)
]


@pytest.fixture(scope="module")
def cluster():
    import torch

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each replica runs (num_cpus 1)
    yield
    torch.set_num_threads(threads)
    ray.shutdown()


def ray_engine(**options):
    # half a CPU each: the kill test's engine fits beside the shared one's (idle then) on the 2-CPU cluster
    cfg = EngineConfig("ray", {"replicas": 2, "backend": "hf", "num_cpus": 0.5, **options})
    return make_engine("tiny-random", cfg, dtype="float32", batch_size=BATCH)


@pytest.fixture(scope="module")
def engines(cluster):
    hf = make_engine("tiny-random", dtype="float32", batch_size=BATCH)
    replicated = ray_engine()
    yield hf, replicated
    replicated.close()
    hf.close()
    assert ray.is_initialized()  # the engine joined the fixture's cluster: closing it left the cluster up


def _rewrite(engine, out):
    return rewrite_rows(engine, out, "tiny-random", PROBLEMS, BATCH, max_new_tokens=6)


def _eval(engine, out, overrides=()):
    return eval_rows(engine, out, "tiny-random", PROBLEMS, BATCH, ["max_new_tokens=6", *overrides])


def test_greedy_rewrite_and_eval_write_what_one_hf_engine_writes(engines, tmp_path):
    hf, replicated = engines
    before = list(replicated.calls)
    assert _rewrite(replicated, tmp_path / "ray") == _rewrite(hf, tmp_path / "hf")
    got = _eval(replicated, tmp_path / "eval-ray")
    assert got == _eval(hf, tmp_path / "eval-hf") and len(got) == len(PROBLEMS)
    assert all(after > b for after, b in zip(replicated.calls, before))  # both replicas ran pieces
    assert replicated.stats["replicas"] == 2 and replicated.stats["replica_restarts"] == 0
    assert replicated.stats["generated_tokens"] > 0 and replicated.stats["scored_tokens"] > 0
    assert replicated.precision["generate"] == hf.precision["generate"] == "float32"
    # one thread each, bound to a core of its own (pin_cores): the two replicas never share one
    assert [len(c) for c in replicated.cores] == [1, 1] and replicated.cores[0] != replicated.cores[1]
    assert (replicated.context_length, replicated.end_ids) == (hf.context_length, hf.end_ids)


def test_sampled_eval_has_the_rows_of_one_hf_engine(engines, tmp_path):
    hf, replicated = engines
    sampled = ("n=2", "temperature=1.0")
    got, want = _eval(replicated, tmp_path / "ray", sampled), _eval(hf, tmp_path / "hf", sampled)
    key = lambda rows: sorted((r["problem_id"], r["index"]) for r in rows)  # noqa: E731
    assert key(got) == key(want) and len(got) == 2 * len(PROBLEMS)
    assert [sorted(r) for r in got] == [sorted(r) for r in want]  # the same schema
    assert {r["seed"] for r in got} == {r["seed"] for r in want}  # each sample got the seed one engine gives it
    # seeds travel with their prompts and the replicas run hf's own batches: the samples themselves agree too
    assert got == want


def test_a_refusal_in_a_replica_comes_back_with_the_callers_indices(engines):
    _, replicated = engines
    long = "apples " * 2100  # more than the tiny model's 2048-token context
    prompts = ["What is 1?", long, "What is 2?", long]
    context, replicated.context_length = replicated.context_length, None  # skip the driver's own check
    try:
        with pytest.raises(RequestRejected) as refused:
            replicated.generate(prompts, _params(), None)
    finally:
        replicated.context_length = context
    assert sorted(refused.value.reasons) == [1, 3]
    with pytest.raises(RequestRejected) as again:  # and the driver refuses the same rows itself
        replicated.generate(prompts, _params(), None)
    assert sorted(again.value.reasons) == [1, 3]


def _params():
    from sftadapt.engines import Sampling

    return Sampling(n=1, temperature=0.0, max_new_tokens=4)


def test_a_killed_replica_is_restarted_and_no_row_is_lost(engines, tmp_path, monkeypatch, capfd):
    from sftadapt.engines.replicas import KILL_REPLICA_ENV

    hf, _ = engines
    monkeypatch.setenv(KILL_REPLICA_ENV, "1:1")  # replica 1 dies at the start of its first piece
    killed = ray_engine()
    try:
        got = _eval(killed, tmp_path / "killed")
        assert killed.stats["replica_restarts"] == 1
        assert killed.calls[1] >= 1  # the restarted replica ran its piece
    finally:
        killed.close()
    assert got == _eval(hf, tmp_path / "hf")  # every row once, as the undisturbed engine writes it
    assert capfd.readouterr().err.count("replica 1 was lost and restarted") == 1


def test_options_are_checked_before_any_replica_starts(cluster):
    from sftadapt.engines.replicas import RayEngine
    from sftadapt.engines.vllm import VLLMEngine

    with pytest.raises(ValueError, match=r"\['replica', 'tensor_parallel_size'\] are not ray options"):
        RayEngine.from_config("tiny-random", {"replica": 2, "tensor_parallel_size": 2})
    with pytest.raises(ValueError, match="replicas = 0"):
        RayEngine.from_config("tiny-random", {"replicas": 0})
    with pytest.raises(ValueError, match="5 replicas need 2.5 CPU and the Ray cluster has 2 CPU"):
        ray_engine(replicas=5)
    with pytest.raises(ValueError, match="hf or vllm"):
        RayEngine.from_config("tiny-random", {"backend": "openai"})
    with pytest.raises(ValueError, match="host '10.1.2.3' is not a loopback address.*allow_hosts"):
        RayEngine.from_config("tiny-random", {"address": "10.1.2.3:6379"})
    with pytest.raises(ValueError, match="host 'head' is not a loopback"):
        RayEngine.from_config("tiny-random", {"address": "ray://head:10001"})
    with pytest.raises(ValueError, match="data_parallel_size.*backend: ray.*replicas: N.*vllm serve --data-parallel"):
        VLLMEngine.from_config("tiny-random", {"data_parallel_size": 2})
    with pytest.raises(ValueError, match="backend: ray"):
        VLLMEngine.from_config("tiny-random", {"llm_kwargs": {"data_parallel_size": 2}})


def test_a_remote_cluster_address_is_refused_when_the_config_is_checked(monkeypatch):
    """What `run --dry-run` and every stage check before any engine is built: the openai servers' rule."""
    from sftadapt.runtime import network

    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    def config(**options):
        return EvalConfig(model="tiny-random", engine=EngineConfig("ray", {"replicas": 2, **options}))

    with pytest.raises(ValueError, match=r"engine\.options\.address.*'10\.1\.2\.3' is not a loopback"):
        network.check_config(config(address="10.1.2.3:6379"))
    network.check_config(config(address="10.1.2.3:6379", allow_hosts=["10.1.2.3"]))
    network.check_config(config(address="auto"))
    network.check_config(config())
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")  # what `auto` connects to
    with pytest.raises(ValueError, match="'head' is not a loopback"):
        network.check_config(config(address="auto"))
