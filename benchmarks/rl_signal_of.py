"""The "RL learning signal" lines of a run folder's GRPO stages (sftadapt/report/rl_signal.py), with the logged
numbers they are read from: for a run made before the study report had the section, or one stage alone.

    python benchmarks/rl_signal_of.py RUN_DIR      # each RUN_DIR/<stage>/rl_log.jsonl (mapper RL, direct RL)
"""

from __future__ import annotations

import sys
from pathlib import Path

from sftadapt.report import rl_signal as S

KEYS = ("step", "reward", "gate_pass_rate", "accuracy", "frac_reward_zero_std")


def lines(run: Path) -> list[str]:
    out = []
    for log in sorted(run.glob(f"*/{S.LOG_FILE}")):
        rows = [r for r in S.read_rows(log.parent) if "step" in r]
        logged = "; ".join(", ".join(f"{k} {r.get(k)}" for k in KEYS if k in r) for r in rows)
        out += [f"{log.parent.name}/{S.LOG_FILE}: {logged}", f"  {S.rl_signal(rows, log.parent.name).line()}"]
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/rl_signal_of.py RUN_DIR")
    print("\n".join(lines(Path(sys.argv[1]))))
