"""Did a GRPO run have a learning signal? Read from its `rl_log.jsonl`, by the mechanism, not by the outcome.

GRPO scores each rollout against the others of its group (the rollouts of one prompt): advantage = reward minus
the group's mean (over its std with `scale_rewards: group`). When every rollout of a group gets the same reward,
every advantage of that group is zero and the group adds nothing to the policy gradient. TRL logs, per step,
`frac_reward_zero_std`: the fraction of that step's groups whose rewards were all equal. So:

- **no learning signal**: every logged step has `frac_reward_zero_std` = 1.0. No group ever had unequal rewards,
  every advantage was zero, the policy got no gradient, and the model left RL as it entered it (for DART's
  mapper: DART's set is then the untrained mapper's, the same as PR's). What made the rewards equal is named
  when the log shows it: `gate_pass_rate` 0 at every step (mapper RL): every rollout failed the gate and got
  r_min; `accuracy` 0 or 1 at every step (direct RL): every rollout was wrong, or right; else every rollout
  of a group got the same reward.
- **learning signal**: some step has `frac_reward_zero_std` < 1.0. Said with the share of groups that carried a
  signal (1 - the mean of `frac_reward_zero_std` over steps) and how far the numbers moved: reward (and gate
  pass rate where logged) first -> last, as the means of the first and last quarter of the steps when at least
  8 are logged, else the first and last step. The movement is reported as measured: a signal means the policy
  was pushed, not that it improved, and no trend is claimed.
- **cannot tell**: a log without `frac_reward_zero_std` (older sftadapt) on a step that would decide it. The
  verdict is then not guessed from the reward curve: a flat reward can hide a signal, a moving one can come
  from sampling noise alone.

Rows without a `step`, and TRL's closing summary row (`train_runtime`), are not steps.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sftadapt.report.html import _num, _read_jsonl, discover

LOG_FILE = "rl_log.jsonl"  # what sftadapt/rl/grpo.py writes (read here without importing the trainer)
SIGNAL, NO_SIGNAL, UNKNOWN = "learning signal", "no learning signal", "cannot tell"
QUARTERS_FROM = 8  # steps from which first/last are quarter means rather than single steps

# what gives a mapper a signal, as measured (benchmarks/mapper_sweep.md, "RL, per interval of steps")
MAPPER_HINT = (
    "more rollouts per step and more steps make a group with both passing and failing rollouts likelier "
    "(mapper_train.grpo.num_generations, max_steps); benchmarks/mapper_sweep.md: at lr 5e-5 with 8 rollouts "
    "per step the mapper's gate pass rate rose from 0.46 (steps 1-16) to 0.76 (steps 33-64)"
)
DIRECT_HINT = (
    "more rollouts per step and more steps (direct_rl.grpo.num_generations, max_steps) make a group with both "
    "a right and a wrong answer likelier"
)


@dataclass
class RLSignal:
    """What one RL run's log says about its learning signal (see the module docstring for the rule)."""

    name: str
    steps: int
    verdict: str
    reason: str
    reward: list[float] | None = None  # [first, last]
    gate_pass: list[float] | None = None  # [first, last], mapper RL only
    span: str = ""  # what first/last are: "first -> last quarter mean" or "first -> last step"
    zero_std_mean: float | None = None  # mean over steps of frac_reward_zero_std
    hint: str | None = None  # what would give a signal, when there was none

    def line(self) -> str:
        """One line for the study report and the run's closing summary."""
        text = f"{self.name}: {self.verdict}: {self.reason}"
        moved = self.movement()
        if moved and self.verdict != NO_SIGNAL:
            text += f"; {moved}"
        if self.hint:
            text += f". For a signal: {self.hint}"
        return text + "."

    def movement(self) -> str:
        """The numbers as measured, e.g. "reward -10.00 -> -9.10 over 2 steps (first -> last step)"."""
        if self.reward is None:
            return ""
        text = f"reward {self.reward[0]:.2f} -> {self.reward[1]:.2f}"
        if self.gate_pass is not None:
            text += f", gate pass {self.gate_pass[0]:.2f} -> {self.gate_pass[1]:.2f}"
        return text + f" over {self.steps} steps ({self.span})"


def _ends(values: list[float]) -> tuple[list[float], str] | None:
    """[first, last] of a per-step series: quarter means from QUARTERS_FROM values on, else the end values."""
    if not values:
        return None
    if len(values) >= QUARTERS_FROM:
        q = len(values) // 4
        return [statistics.fmean(values[:q]), statistics.fmean(values[-q:])], "first -> last quarter mean"
    return [values[0], values[-1]], "first -> last step"


def _series(rows: list[dict[str, Any]], *keys: str) -> list[float]:
    """One number per step: the first of `keys` the row holds as a finite number (steps without one skipped)."""
    out = []
    for r in rows:
        value = next((v for v in (_num(r.get(k)) for k in keys) if v is not None), None)
        if value is not None:
            out.append(value)
    return out


def _every(rows: list[dict[str, Any]], key: str, value: float) -> bool:
    vals = [_num(r.get(key)) for r in rows]
    return bool(vals) and all(v is not None and v == value for v in vals)


def _role(name: str) -> str:
    """What having no gradient means for the model this run trains."""
    if name.startswith("DART"):
        return "the mapper left RL untrained, so DART's set is what the untrained mapper gives (PR's)"
    if "mapper" in name:
        return "the mapper left RL untrained"
    return "the model left RL as it entered it"


def rl_signal(rows: list[dict[str, Any]], name: str = "RL") -> RLSignal:
    """The verdict on one RL run from its logged rows (the module docstring has the rule)."""
    steps = [r for r in rows if isinstance(r, dict) and "step" in r and "train_runtime" not in r]
    mapper = any(_num(r.get("gate_pass_rate")) is not None for r in steps)
    found = RLSignal(name=name, steps=len(steps), verdict=UNKNOWN, reason="no step was logged")
    if not steps:
        return found
    reward = _ends(_series(steps, "reward", "reward_mean"))
    gate = _ends(_series(steps, "gate_pass_rate")) if mapper else None
    found.span = (reward or gate or ([], ""))[1]
    found.reward = reward[0] if reward else None
    found.gate_pass = gate[0] if gate else None
    zero = [_num(r.get("frac_reward_zero_std")) for r in steps]
    known = [z for z in zero if z is not None]
    found.zero_std_mean = statistics.fmean(known) if known else None
    with_signal = sum(z < 1.0 for z in known)
    if with_signal:
        found.verdict = SIGNAL
        found.reason = (
            f"{100 * (1 - found.zero_std_mean):.0f}% of groups had unequal rewards "
            f"({with_signal} of {len(steps)} steps carried a gradient)"
        )
        if len(known) < len(steps):
            found.reason += f"; {len(steps) - len(known)} steps do not record it"
        return found
    if len(known) < len(steps):
        found.reason = (
            "the log does not record frac_reward_zero_std (written by an older sftadapt)"
            if not known
            else f"{len(steps) - len(known)} of {len(steps)} steps do not record frac_reward_zero_std, "
            "the others had equal rewards in every group"
        ) + ", so whether any group had unequal rewards is unknown (not guessed from the reward curve)"
        return found
    if mapper and _every(steps, "gate_pass_rate", 0.0):
        why = "every rollout failed the gate (gate pass 0" + (
            f", reward {found.reward[0]:.1f})" if found.reward else ")"
        )
    elif _every(steps, "accuracy", 0.0):
        why = "every rollout was wrong (accuracy 0)"
    elif _every(steps, "accuracy", 1.0):
        why = "every rollout was right (accuracy 1)"
    else:
        why = "every rollout of a group got the same reward"
    when = "at the one logged step" if len(steps) == 1 else f"at each of the {len(steps)} logged steps"
    found.verdict = NO_SIGNAL
    found.reason = (
        f"{when} {why}, so every group's rewards were equal, GRPO's advantages were all zero "
        f"and the policy got no gradient: {_role(name)}"
    )
    found.hint = MAPPER_HINT if mapper or "mapper" in name else DIRECT_HINT
    return found


def read_rows(folder: str | Path) -> list[dict[str, Any]]:
    """The rows of `folder/rl_log.jsonl`; unreadable lines are skipped (a report must not die on one bad line)."""
    return _read_jsonl(Path(folder) / LOG_FILE)


def study_signals(seed_roots: dict[int, Path], arms: list[str]) -> list[dict[str, Any]]:
    """One verdict per RL run per seed of a `sftadapt run` folder, found the way the HTML report finds its RL
    curves (report/html.py `discover`, from each arm's eval results): {"seed", "name", "path", **RLSignal}."""
    out = []
    for seed, root in seed_roots.items():
        seen: set[Path] = set()
        for arm in arms:
            try:
                results = json.loads((Path(root) / f"eval_{arm}" / "results.json").read_text(encoding="utf-8"))
                logs = discover(results)["rl_logs"]
            except Exception as err:  # noqa: BLE001 — a diagnostic is no reason to fail a finished study
                print(f"[report] RL learning signal of eval_{arm} (seed {seed}) not read: {err}", flush=True)
                continue
            for name, path in logs:
                if path.resolve() in seen:
                    continue  # one mapper behind several arms (DART+SFT and its ablations): one line
                seen.add(path.resolve())
                verdict = rl_signal(read_rows(path.parent), name)
                out.append({"seed": seed, "path": str(path), **asdict(verdict), "line": verdict.line()})
    return out


def markdown_lines(signals: list[dict[str, Any]]) -> list[str]:
    """The study report's "RL learning signal" section (empty when the study ran no RL)."""
    if not signals:
        return []
    return [
        "",
        "## RL learning signal",
        "",
        "GRPO learns only from groups whose rollouts got unequal rewards (TRL's frac_reward_zero_std: the share "
        "of groups with equal rewards). Per RL run and seed:",
        "",
        *(f"- seed {s['seed']}, {s['line']}" for s in signals),
    ]
