"""The papers' kind of protocol on one seed of a finished study: T = 1 with n samples, avg@n and pass@n.

    python benchmarks/study_sampled.py RUN_OR_SEED_DIR OUT [--n 4] [--temperature 1.0] [--limit 50] [--dtype float32]

The study evaluates every arm greedily (protocol `quick`, one sample). This re-evaluates the very models the
study evaluated - each `eval_<arm>` stage's model folder, benchmarks, dtype and token limit, read from its
stage.json - with the same prompt but n samples at temperature T (per-sample seeds as in every eval), each arm
into OUT/<arm>/ through `sftadapt eval` (resumable: re-running the command skips finished shards). Then
`sftadapt report` writes OUT/report-avg/ (avg@n, deltas against base) and OUT/report-pass/ (pass@n).
Sampling needs the trained weights, which study_archive.py does not keep: run it before the run folder goes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def eval_stages(run: Path) -> dict[str, dict]:
    """arm -> the options its finished eval stage ran with, in the study's arm order."""
    found = {}
    for path in run.glob("eval_*/stage.json"):
        stage = json.loads(path.read_text())
        if stage.get("status") == "done":
            found[path.parent.name.removeprefix("eval_")] = stage["spec"]["options"]
    if "base" not in found:
        raise SystemExit(f"{run}: no finished eval_base stage (is this a study's seed folder?)")
    config = next((d / "run_config.json" for d in (run, run.parent) if (d / "run_config.json").exists()), None)
    order = json.loads(config.read_text())["arms"] if config else []
    rank = {arm: i for i, arm in enumerate(order)}
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != "base", rank.get(kv[0], len(rank)), kv[0])))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a single-seed study folder, or one seed-<s>/ of a multi-seed run")
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=50, help="first N problems of each benchmark")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--dtype",
        help="evaluate in this dtype instead of each stage's own (the study's evaluation dtype depends on its arm "
        "list: a subset without LoRA arms resolves `auto` to bf16 where the CPU runs it natively)",
    )
    ap.add_argument("--arms", help="comma-separated subset (default: every evaluated arm)")
    args = ap.parse_args(argv)
    cli = shutil.which("sftadapt") or str(Path(sys.executable).with_name("sftadapt"))

    stages = eval_stages(args.run)
    arms = args.arms.split(",") if args.arms else list(stages)
    for arm in arms:
        opts = stages[arm]
        proto = opts["protocol"]
        cmd = [cli, "eval", "--model", opts["model"], "--benchmarks", ",".join(opts["benchmarks"])]
        cmd += ["--protocol", proto["name"], "--set", f"n={args.n}", "--set", f"temperature={args.temperature}"]
        cmd += ["--set", f"max_new_tokens={proto['max_new_tokens']}", "--limit", str(args.limit)]
        cmd += [
            "--dtype",
            args.dtype or opts["dtype"],
            "--batch-size",
            str(args.batch_size),
            "--out",
            str(args.out / arm),
        ]
        print(f"== {arm}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
    folders = [str(args.out / arm) for arm in arms]
    for metric, name in (("avg", "report-avg"), (f"pass@{args.n}", "report-pass")):
        subprocess.run(
            [cli, "report", *folders, "--baseline", "base", "--metric", metric, "--out", str(args.out / name)],
            check=True,
        )


if __name__ == "__main__":
    main()
