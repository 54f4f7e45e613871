"""The RL learning-signal verdict (report/rl_signal.py) from hand-written rl_log.jsonl rows: no torch, no models."""

import json
from pathlib import Path

import html_fixture as fx
import pytest

from sftadapt.report.rl_signal import NO_SIGNAL, SIGNAL, UNKNOWN, read_rows, rl_signal

ROOT = Path(__file__).resolve().parents[1]


def _mapper_row(step, reward, zero_std, gate, **extra):
    return {
        "step": step,
        "reward": reward,
        "reward_std": 0.0 if zero_std == 1.0 else 3.0,
        "frac_reward_zero_std": zero_std,
        "gate_pass_rate": gate,
        "loss": 0.0,
        "grad_norm": 0.0 if zero_std == 1.0 else 0.2,
        **extra,
    }


def _write(folder: Path, rows) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rl_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_every_rollout_failing_the_gate_is_no_signal_and_names_the_gate_and_the_sweep():
    # the quickstart's mapper RL: 2 steps x 4 rollouts, every rollout gated to r_min
    found = rl_signal([_mapper_row(1, -10.0, 1.0, 0.0), _mapper_row(2, -10.0, 1.0, 0.0)], "DART mapper RL")
    assert found.verdict == NO_SIGNAL and found.steps == 2
    line = found.line()
    assert line.startswith("DART mapper RL: no learning signal: ")
    assert "every rollout failed the gate" in line and "reward -10.0" in line
    assert "advantages were all zero" in line and "untrained mapper" in line
    assert "benchmarks/mapper_sweep.md" in line and "0.46 (steps 1-16) to 0.76 (steps 33-64)" in line
    assert found.reward == [-10.0, -10.0] and found.gate_pass == [0.0, 0.0] and found.zero_std_mean == 1.0
    one = rl_signal([_mapper_row(1, -10.0, 1.0, 0.0)], "DART mapper RL")
    assert one.reason.startswith("at the one logged step every rollout failed the gate")


def test_the_quoted_sweep_numbers_are_the_sweeps_own():
    sweep = (ROOT / "benchmarks" / "mapper_sweep.md").read_text(encoding="utf-8")
    assert "| 1-16 | 0.461 |" in sweep and "| 33-64 | 0.762 |" in sweep and "lr 5e-5" in sweep
    assert "GRPO group 8" in sweep


def test_equal_rewards_without_a_failed_gate_say_so_without_blaming_the_gate():
    rows = [_mapper_row(1, -0.1, 1.0, 1.0), _mapper_row(2, -10.0, 1.0, 0.0)]
    found = rl_signal(rows, "Patch mapper RL")
    assert found.verdict == NO_SIGNAL
    assert "every rollout of a group got the same reward" in found.reason and "gate" not in found.reason
    direct = rl_signal([{"step": s, "reward": 0.0, "accuracy": 0.0, "frac_reward_zero_std": 1.0} for s in (1, 2)])
    assert direct.verdict == NO_SIGNAL and "every rollout was wrong" in direct.reason
    assert "mapper_sweep" not in direct.line() and "num_generations" in direct.line()


def test_some_unequal_groups_are_a_signal_reported_with_the_movement_as_measured():
    rows = [_mapper_row(1, -10.0, 1.0, 0.0), _mapper_row(2, -9.1, 0.0, 0.125)]
    found = rl_signal(rows, "DART mapper RL")
    assert found.verdict == SIGNAL
    line = found.line()
    assert "50% of groups had unequal rewards (1 of 2 steps carried a gradient)" in line
    assert "reward -10.00 -> -9.10, gate pass 0.00 -> 0.12 over 2 steps (first -> last step)" in line
    assert "For a signal" not in line and "improv" not in line  # no claim beyond the numbers


def test_from_eight_steps_first_and_last_are_quarter_means():
    rewards = [-8.0, -6.0, -5.0, -5.0, -5.0, -5.0, -2.0, 0.0]
    rows = [_mapper_row(s + 1, r, 0.5, 0.5) for s, r in enumerate(rewards)]
    found = rl_signal(rows + [{"step": 8, "train_runtime": 9.0, "train_loss": 0.1}], "DART mapper RL")
    assert found.steps == 8  # TRL's closing summary row is not a step
    assert found.reward == pytest.approx([-7.0, -1.0]) and found.span == "first -> last quarter mean"
    assert found.zero_std_mean == 0.5 and "50% of groups" in found.reason


def test_a_log_without_frac_reward_zero_std_cannot_tell_rather_than_guess():
    old = [{"step": s, "reward": -10.0, "reward_std": 0.0, "gate_pass_rate": 0.0} for s in (1, 2, 3)]
    found = rl_signal(old, "DART mapper RL")
    assert found.verdict == UNKNOWN and "does not record frac_reward_zero_std" in found.reason
    assert "no learning signal" not in found.line() and found.hint is None
    # some steps recorded, all with equal rewards, others not: still unknown, said with the counts
    mixed = rl_signal(old[:2] + [_mapper_row(3, -10.0, 1.0, 0.0)], "DART mapper RL")
    assert mixed.verdict == UNKNOWN and "2 of 3 steps do not record" in mixed.reason
    # one recorded step with unequal rewards decides it: a gradient was there
    assert rl_signal(old[:2] + [_mapper_row(3, -9.0, 0.75, 0.1)]).verdict == SIGNAL
    assert rl_signal([], "direct RL").verdict == UNKNOWN


def test_read_rows_skips_bad_lines(tmp_path):
    _write(tmp_path, [_mapper_row(1, -10.0, 1.0, 0.0)])
    with open(tmp_path / "rl_log.jsonl", "a", encoding="utf-8") as fh:
        fh.write("{not json\n[1, 2]\n\n")
    assert [r["step"] for r in read_rows(tmp_path)] == [1] and read_rows(tmp_path / "none") == []


def test_study_report_has_one_line_per_rl_run_and_seed(tmp_path):
    from sftadapt.report.study import write_study_report

    per_seed = {0: fx.build_seed(tmp_path, 0)}
    _write(tmp_path / "mapper_train", [_mapper_row(1, -10.0, 1.0, 0.0), _mapper_row(2, -10.0, 1.0, 0.0)])
    direct = [
        {"step": s, "reward": r, "accuracy": r, "frac_reward_zero_std": z} for s, r, z in [(1, 0.0, 1), (2, 0.5, 0)]
    ]
    _write(tmp_path / "direct_rl", direct)
    study = write_study_report(fx.FixtureConfig(), per_seed, tmp_path / "report")
    md = (tmp_path / "report" / "study.md").read_text(encoding="utf-8")
    section = md.split("## RL learning signal", 1)[1]
    lines = [x for x in section.splitlines() if x.startswith("- ")]
    assert len(lines) == 2  # the mapper behind DART+SFT once, direct RL once
    assert lines[0].startswith("- seed 0, DART mapper RL: no learning signal: ") and "failed the gate" in lines[0]
    assert "benchmarks/mapper_sweep.md" in lines[0]
    assert lines[1].startswith("- seed 0, direct RL: learning signal: 50% of groups")
    assert "reward 0.00 -> 0.50 over 2 steps" in lines[1]
    assert study["markdown"] == md  # what `sftadapt run` prints at its end
    saved = json.loads((tmp_path / "report" / "study.json").read_text(encoding="utf-8"))["rl_signal"]
    assert [(s["seed"], s["name"], s["verdict"]) for s in saved] == [
        (0, "DART mapper RL", NO_SIGNAL),
        (0, "direct RL", SIGNAL),
    ]
