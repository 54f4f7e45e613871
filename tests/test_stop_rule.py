"""SPEC's stop rule for mapper RL (rl/grpo.py `should_stop`): closed cases on hand-made logs."""

import pytest

from sftadapt.rl.direct_rl import DirectRLConfig
from sftadapt.rl.grpo import GRPOOptions, should_stop


def rows(rates, aligns):
    return [{"gate_pass_rate": r, "r_align_pass_mean": a} for r, a in zip(rates, aligns)]


def test_stops_only_when_the_window_pass_rate_is_high_and_r_align_has_plateaued():
    flat = rows([0.95] * 4, [-1.0, -1.0, -1.004, -0.998])
    reason = should_stop(flat, pass_rate=0.9, window=2, plateau=0.01)
    assert reason and "0.950 > 0.9" in reason
    # r_align still climbing: mean -1.0 then -0.9 is a move of 0.1 >= 0.01
    assert should_stop(rows([0.95] * 4, [-1.0, -1.0, -0.9, -0.9]), 0.9, 2, 0.01) is None
    # pass rate 0.85 over the window (one step at 1.0 does not make it): no stop
    assert should_stop(rows([0.95, 0.95, 0.7, 1.0], [-1.0] * 4), 0.9, 2, 0.01) is None


def test_needs_two_full_windows_of_r_align_and_skips_steps_where_nothing_passed():
    assert should_stop(rows([1.0] * 3, [-1.0] * 3), 0.9, 2, 0.01) is None  # 3 < 2 x 2 rows
    gappy = rows([1.0] * 5, [-1.0, None, -1.0, -1.0, -1.0])
    assert should_stop(gappy, 0.9, 2, 0.01)  # four rows hold r_align
    assert should_stop(rows([1.0] * 4, [None] * 4), 0.9, 2, 0.01) is None


def test_stop_options_are_validated_and_refused_for_direct_rl():
    with pytest.raises(ValueError, match="stop_pass_rate"):
        GRPOOptions(stop_pass_rate=1.0).validate()
    with pytest.raises(ValueError, match="stop_window"):
        GRPOOptions(stop_pass_rate=0.9, stop_window=0).validate()
    with pytest.raises(ValueError, match="direct RL has no gate"):
        DirectRLConfig(grpo=GRPOOptions(stop_pass_rate=0.9)).validate()
