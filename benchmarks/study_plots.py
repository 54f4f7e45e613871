"""The embedded study's figures for benchmarks/: each GRPO run's curves and compute vs accuracy over arms.

    python benchmarks/study_plots.py RUN_DIR benchmarks/

Per seed, for each RL stage that ran (DART's mapper `mapper_train`, the Patch mapper `mapper_train_patch`,
direct RL `direct_rl`): reward, gate pass rate and each gate reason per step (moving mean over 4 steps), from the
stage's rl_log.jsonl -> `study_rl_<stage>_seed<s>.png`. From RUN/report/study.json: every arm's mean accuracy
(with its interval) against what producing it cost beyond the shared warm-up - wall seconds and tokens
(generated + scored + trained, as report/compute.py counts them) -> `study_compute.png`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mapper_sweep import plot  # noqa: E402  (sibling scripts, not a package)
from study_details import seed_dirs  # noqa: E402

RL_STAGES = {"mapper_train": "DART mapper: ", "mapper_train_patch": "Patch mapper: ", "direct_rl": "direct RL: "}


def rl_curves(run: Path, out: Path) -> list[Path]:
    paths = []
    for seed, seed_dir in seed_dirs(run):
        for stage, title in RL_STAGES.items():
            log_path = seed_dir / stage / "rl_log.jsonl"
            if not log_path.exists():
                continue
            log = [r for r in map(json.loads, log_path.read_text().splitlines()) if "step" in r]
            name = f"study_rl_{stage}_seed{seed}.png"
            paths.append(plot(log, out, 4, name=name, title=title))
    return paths


def compute_plot(run: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study = json.loads((run / "report" / "study.json").read_text())
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, (key, label) in zip(axes, (("seconds", "wall seconds"), ("tokens", "tokens generated + scored + trained"))):
        for arm in study["arms"]:
            cell, comp = arm["benchmarks"]["mean"], arm.get("compute") or {}
            x = (
                comp.get("seconds", 0.0)
                if key == "seconds"
                else sum(comp.get(k, 0) for k in ("tokens_generated", "tokens_scored", "tokens_trained"))
            )
            y, (lo, hi) = 100 * cell["mean"], cell["ci"]
            ax.errorbar([x], [y], yerr=[[y - 100 * lo], [100 * hi - y]], fmt="o", capsize=3)
            ax.annotate(arm["label"], (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(f"{label} beyond the shared warm-up")
        ax.set_ylabel("accuracy (%), mean of the benchmarks")
        ax.set_xscale("symlog")
        ax.grid(alpha=0.3)
    seeds = ", ".join(map(str, study["seeds"]))
    fig.suptitle(f"{study['name']}: compute vs accuracy (seeds {seeds}; 95% intervals)")
    fig.tight_layout()
    path = out / "study_compute.png"
    fig.savefig(path, dpi=90)
    return path


if __name__ == "__main__":
    run_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    for p in [*rl_curves(run_dir, out_dir), compute_plot(run_dir, out_dir)]:
        print(p)
