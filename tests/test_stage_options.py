"""Options every stage has the same way (issue 13's last gaps), on the tiny model:

- `max_prompt_tokens`: a config field of every stage that samples or scores (default: the model's context less
  max_new_tokens), `$SFTADAPT_MAX_PROMPT_TOKENS` only when it is unset;
- an over-length reject names the field as the source spells it (`question`, or what a field map says);
- `force` on train, map train and direct RL: checkpoints written with other options are set aside
  (`checkpoints.old-<time>/`, nothing deleted) instead of refused;
- `online: true` in a config file opens the network exactly as `--online` does (seen by the network guard), on
  `sftadapt sample --config`, `python -m sftadapt.train --config` and `sftadapt run`.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_mapper import OPEN_GATE, AlwaysCorrect
from test_mapper import PROBLEMS as MAP_PROBLEMS

from sftadapt.config import ConfigError, load_config
from sftadapt.data import budget
from sftadapt.data import prompts as P
from sftadapt.data.records import Problem, write_records

GUARD = Path(__file__).resolve().parent / "hostile" / "netguard"
SHORT, LONG = "What is 2+2?", "What is " + " + ".join(["2"] * 30) + "?"


@pytest.fixture(scope="module")
def tok():
    from sftadapt.runtime.models import load_tokenizer

    return load_tokenizer("tiny-random")


# ---------------------------------------------------------------- max_prompt_tokens
def _stage_classes():
    from sftadapt.adapt.mapper import MapperTrainConfig, SynthConfig
    from sftadapt.adapt.rewrite import RewriteConfig
    from sftadapt.eval.sample import SampleConfig
    from sftadapt.eval.stage import EvalConfig
    from sftadapt.rl.direct_rl import DirectRLConfig

    return (SampleConfig, RewriteConfig, MapperTrainConfig, SynthConfig, DirectRLConfig, EvalConfig)


@pytest.mark.parametrize("cls", _stage_classes(), ids=lambda c: c.__name__)
def test_max_prompt_tokens_is_an_option_of_every_stage_that_samples_or_scores(cls):
    assert load_config(cls).max_prompt_tokens is None  # the model's context decides
    assert load_config(cls, None, ["max_prompt_tokens=64"]).max_prompt_tokens == 64
    with pytest.raises(ConfigError, match="max_prompt_tokens' = 0: must be >= 1"):
        load_config(cls, None, ["max_prompt_tokens=0"])


def _sample(tmp_path, name, data, *sets, env=None):
    from typer.testing import CliRunner

    from sftadapt.cli import app

    args = [
        "-q",
        "sample",
        "--model",
        "tiny-random",
        "--data",
        str(data),
        "--out",
        str(tmp_path / name),
        "--max-new-tokens",
        "2",
        "--dtype",
        "float32",
        *[x for s in sets for x in ("--set", s)],
    ]
    result = CliRunner().invoke(app, args, env=env or {})
    assert result.exit_code == 0, result.output
    path = tmp_path / name / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_option_sets_the_budget_and_the_environment_is_only_the_fallback(tmp_path, tok, monkeypatch):
    short, long = (budget.count_tokens(tok, P.solve_prompt(tok, text, True)) for text in (SHORT, LONG))
    assert short < long
    between = (short + long) // 2
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "x\n#### 4"}) + "\n" for q in (SHORT, LONG)))

    assert _sample(tmp_path, "none", data) == []  # the context (2048) fits both
    (reject,) = _sample(tmp_path, "option", data, f"max_prompt_tokens={between}")
    assert (reject["line"], reject["field"], reject["tokens"]) == (2, "question", long)
    assert f"max_prompt_tokens {between}" in reject["reason"]
    # the environment variable counts only when the option is unset
    monkeypatch.setenv(budget.ENV_BUDGET, str(between))
    assert [r["line"] for r in _sample(tmp_path, "env", data)] == [2]
    assert _sample(tmp_path, "option-wins", data, f"max_prompt_tokens={long + 10}") == []


def test_a_reject_names_the_field_as_the_source_spells_it(tmp_path, tok):
    from sftadapt.data.sources import FieldMap, load_problems

    path = tmp_path / "mine.jsonl"
    rows = [
        {"q": SHORT, "a": "4", "sol": "2+2=4"},
        {"q": LONG, "a": "60", "sol": "add"},
        {"q": SHORT + " ok", "a": "4", "sol": "It is " + "9" * 3000},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_problems(path, fmap=FieldMap(problem="q", answer="a", solution="sol"))
    limit = budget.count_tokens(tok, P.solve_prompt(tok, SHORT + " ok", True)) + 5
    _, over = budget.screen(
        tok,
        loaded.problems,
        context=2048,
        max_new_tokens=8,
        prompts=budget.solve_checks(tok, True),
        max_prompt_tokens=limit,
    )
    assert [(r["line"], r["field"]) for r in over] == [(2, "q")]  # the problem text, under its own name
    _, scored = budget.rewrite_checks(tok, True, "mind_the_gap")
    _, over = budget.screen(tok, loaded.problems, context=2048, max_new_tokens=8, prompts={}, scored=scored)
    assert [(r["line"], r["field"]) for r in over] == [(3, "sol")]  # the expert solution, scored
    # a problem with no source (made in code) keeps our own name
    _, over = budget.screen(
        tok,
        [Problem("p", LONG, "60")],
        context=2048,
        max_new_tokens=8,
        prompts=budget.solve_checks(tok, True),
        max_prompt_tokens=10,
    )
    assert over[0]["field"] == "problem"


# ---------------------------------------------------------------- force on the trainers
def _aside(out: Path) -> list[Path]:
    return sorted(out.glob("checkpoints.old-*"))


def test_train_force_sets_other_options_checkpoints_aside(tmp_path, tok):
    from test_train import _examples

    from sftadapt.train.stage import TrainConfig, read_log, train

    data = tmp_path / "d.jsonl"
    write_records(data, _examples(tok, 4))
    base = dict(
        model="tiny-random",
        data=[str(data)],
        out=str(tmp_path / "t"),
        max_steps=2,
        batch_size=2,
        grad_accum=1,
        save_steps=1,
        save_total_limit=5,
        dtype="float32",
        lr=1e-3,
    )
    train(TrainConfig(**base))
    out = Path(base["out"])
    before = sorted(p.name for p in out.glob("checkpoint-*"))
    assert before == ["checkpoint-1", "checkpoint-2"]
    with pytest.raises(ConfigError, match="lr changed.*force=true"):
        train(TrainConfig(**{**base, "lr": 2e-3}))
    with pytest.warns(UserWarning, match="set aside"):
        summary = train(TrainConfig(**{**base, "lr": 2e-3, "force": True}))
    assert summary["resumed_from"] is None and summary["steps"] == 2
    (aside,) = _aside(out)
    moved = [*before, "train_config.json", "train_log.jsonl"]
    assert sorted(p.name for p in aside.iterdir()) == sorted([*moved, ".sftadapt-set-aside.json"])
    assert json.loads((aside / ".sftadapt-set-aside.json").read_text())["entries"] == moved  # clean may free them
    assert json.loads((aside / "train_config.json").read_text())["config"]["lr"] == 1e-3  # the old run, kept whole
    assert json.loads((out / "train_config.json").read_text())["config"]["lr"] == 2e-3
    assert [r["step"] for r in read_log(out)] == [1, 2]
    # the same options again resume as usual: force sets aside only what differs
    summary = train(TrainConfig(**{**base, "lr": 2e-3, "force": True}))
    assert summary["resumed_from"].endswith("checkpoint-2") and len(_aside(out)) == 1


def test_train_command_takes_force(tmp_path, tok):
    from test_train import _examples
    from typer.testing import CliRunner

    from sftadapt.cli import app

    data = tmp_path / "d.jsonl"
    write_records(data, _examples(tok, 2))
    args = [
        "-q",
        "train",
        "--model",
        "tiny-random",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "t"),
        "--set",
        "max_steps=1",
        "--set",
        "batch_size=1",
        "--set",
        "grad_accum=1",
        "--set",
        "save_steps=1",
        "--set",
        "dtype=float32",
    ]
    assert CliRunner().invoke(app, args).exit_code == 0
    refused = CliRunner().invoke(app, [*args, "--set", "lr=1e-3"])
    assert refused.exit_code == 2 and "force" in refused.output and "Traceback" not in refused.output
    assert CliRunner().invoke(app, [*args, "--set", "lr=1e-3", "--force"]).exit_code == 0
    assert len(_aside(tmp_path / "t")) == 1


def _grpo(**kw):
    from sftadapt.rl.grpo import GRPOOptions

    return GRPOOptions(max_steps=1, num_generations=2, max_completion_length=4, save_steps=1, **kw)


def test_direct_rl_force_sets_other_options_checkpoints_aside(tmp_path):
    from test_direct_rl import HalfCorrect

    from sftadapt.rl.direct_rl import DirectRLConfig, direct_rl

    data = tmp_path / "p.jsonl"
    write_records(data, [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=str(i + 1)) for i in range(2)])
    make = lambda **kw: DirectRLConfig(model="tiny-random", data=str(data), out=str(tmp_path / "rl"), **kw)
    direct_rl(make(grpo=_grpo(lr=1e-3)), verifier=HalfCorrect(), progress=False)
    with pytest.raises(ConfigError, match="lr changed"):
        direct_rl(make(grpo=_grpo(lr=2e-3)), verifier=HalfCorrect(), progress=False)
    with pytest.warns(UserWarning, match="set aside"):
        summary = direct_rl(make(grpo=_grpo(lr=2e-3), force=True), verifier=HalfCorrect(), progress=False)
    assert summary["compute"]["resumed_from"] is None
    (aside,) = _aside(tmp_path / "rl")
    assert {"checkpoint-1", "rl_config.json", "rl_log.jsonl", "compute.json"} <= {p.name for p in aside.iterdir()}
    assert json.loads((aside / "rl_config.json").read_text())["grpo"]["lr"] == 1e-3


def test_map_train_force_sets_other_options_checkpoints_aside(tiny_engine, tmp_path):
    from sftadapt.adapt.mapper import MapperTrainConfig, train_mapper

    data = tmp_path / "sft.jsonl"
    write_records(data, MAP_PROBLEMS[:2])
    make = lambda **kw: MapperTrainConfig(
        target="tiny-random", data=str(data), out=str(tmp_path / "m"), reward=OPEN_GATE, **kw
    )
    train_mapper(make(grpo=_grpo(beta=0.0)), engine=tiny_engine, verifier=AlwaysCorrect(), progress=False)
    with pytest.raises(ConfigError, match="temperature changed"):
        train_mapper(make(grpo=_grpo(temperature=0.5)), engine=tiny_engine, verifier=AlwaysCorrect(), progress=False)
    with pytest.warns(UserWarning, match="set aside"):
        train_mapper(
            make(grpo=_grpo(temperature=0.5), force=True), engine=tiny_engine, verifier=AlwaysCorrect(), progress=False
        )
    (aside,) = _aside(tmp_path / "m")
    assert (aside / "checkpoint-1").is_dir()


# ---------------------------------------------------------------- online: true = --online
def _guarded(entries: dict, tmp_path, until_first_attempt=False, timeout=300) -> dict:
    """Run entry points side by side, each under the network guard (with HF_HUB_OFFLINE=0 inherited): for each
    name its (exit code, output, outbound attempts). `until_first_attempt`: stop each at its first attempt (the
    hub library would retry with back-off for a minute)."""
    procs, logs = {}, {}
    for name, args in entries.items():
        logs[name] = log = tmp_path / f"net-{name}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(GUARD), os.environ.get("PYTHONPATH", "")]),
            "SFTADAPT_NETGUARD_LOG": str(log),
            "HF_HUB_OFFLINE": "0",
            "OMP_NUM_THREADS": "1",
        }
        procs[name] = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
    deadline = time.monotonic() + timeout
    waiting = set(procs) if until_first_attempt else set()
    while waiting:
        for name in list(waiting):
            log, proc = logs[name], procs[name]
            if proc.poll() is not None or (log.exists() and log.stat().st_size):
                if proc.poll() is None:
                    proc.kill()
                waiting.discard(name)
        assert time.monotonic() < deadline, f"{sorted(waiting)}: no outbound attempt within {timeout} s"
        time.sleep(0.2)
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=timeout)
        log = logs[name]
        results[name] = (proc.returncode, out + err, (log.read_text().splitlines() if log.exists() else []))
    return results


def _yaml(tmp_path, name, values):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize("online", [False, True])
def test_online_in_a_config_file_is_the_online_flag(tmp_path, online):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "What is 2+2?", "answer": "4\n#### 4"}) + "\n")
    hub = "someorg/not-a-local-model"
    entries = {
        "sample": [
            "-m",
            "sftadapt.cli",
            "sample",
            "--config",
            _yaml(tmp_path, "s.yaml", {"model": hub, "data": str(data), "out": str(tmp_path / "s"), "online": online}),
        ],
        "train": [
            "-m",
            "sftadapt.train",
            "--config",
            _yaml(
                tmp_path, "t.yaml", {"model": hub, "data": [str(data)], "out": str(tmp_path / "t"), "online": online}
            ),
        ],
        "run": [
            "-m",
            "sftadapt.cli",
            "run",
            _yaml(
                tmp_path,
                "r.yaml",
                {
                    "model": hub,
                    "out": str(tmp_path / "r"),
                    "online": online,
                    "arms": ["base"],
                    "task": {"train_problems": 2},
                    "warmup": {"enabled": False},
                    "eval": {"limit": 1, "raw_model": False},
                },
            ),
        ],
    }
    # side by side: each is mostly one Python start-up importing sftadapt
    for name, (code, output, attempts) in _guarded(entries, tmp_path, until_first_attempt=online).items():
        if online:  # the hub was asked (and the guard refused it), exactly as with --online
            assert any("huggingface" in a for a in attempts), (name, attempts, output[-800:])
        else:
            assert code == 2 and "Traceback" not in output, (name, output[-1500:])
            assert attempts == [], (name, attempts)
            assert "offline" in output, name
