"""Does DART's mapper learn? One mapper-RL run to the largest budget, with the mapper synthesised from at each
smaller budget's checkpoint, beside the untrained mapper (the prompted rewrite): the evidence issue's budget sweep.

    python benchmarks/bench_mapper_sweep.py --target runs/study/seed-0/warmup \
        --data runs/study/seed-0/data/expert.jsonl --out runs/sweep --budgets 16,32,64 --lr 5e-5

What it does, in order (every step resumes: re-run the same command after an interruption):
1. `train_mapper` to max(budgets) steps, checkpointing at every budget (the checkpoints keep the LoRA adapter);
2. for each smaller budget, the checkpoint's adapter merged into fp32 base weights (`save_merged`, as the stage
   does at its end), so every budget's mapper loads the way the pipeline's does;
3. `synthesize` with the untrained mapper (the prompted rewrite) and with each budget's mapper, same k, seed and
   reward options;
4. writes `OUT/sweep.json` (per budget: the set's gap, mapped / fallback counts, rollout gate pass rate, gate
   failures) and `OUT/sweep.md`, and plots per step reward, gate pass rate, each gate reason and the fraction of
   groups with zero reward variance (no learning signal under GRPO) into `OUT/mapper_sweep.png`.

Per-step numbers come from `rl_log.jsonl` (TRL's own logged metrics plus the reward's gate statistics); the plot
shows a moving mean over `--window` steps because one prompt group per step is noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="the frozen target (e.g. a study seed's warmup folder)")
    ap.add_argument("--data", required=True, help="expert SFT set (e.g. a study seed's data/expert.jsonl)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budgets", default="16,32,64", help="comma-separated GRPO step counts (checkpoints)")
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=1)
    ap.add_argument("--max-completion-length", type=int, default=160)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--max-length-ratio", type=float, default=5.0)
    ap.add_argument("--k", type=int, default=2, help="rewrites per problem in synthesis")
    ap.add_argument("--synth-max-new-tokens", type=int, default=192)
    ap.add_argument("--window", type=int, default=8, help="moving-mean window of the plot")
    ap.add_argument(
        "--stop-pass-rate",
        type=float,
        default=None,
        help="the stop rule's pass-rate threshold, if this version of train_mapper has it",
    )
    return ap.parse_args()


def budgets_of(text: str) -> list[int]:
    out = sorted({int(b) for b in text.split(",") if b.strip()})
    if not out or out[0] < 1:
        raise SystemExit("--budgets: positive step counts")
    return out


def train(args, budgets: list[int], out: Path) -> dict:
    from sftadapt.adapt.mapper import MapperTrainConfig, train_mapper
    from sftadapt.config import build_config

    step = math.gcd(*budgets)
    grpo = {
        "max_steps": budgets[-1],
        "num_generations": args.num_generations,
        "lora": True,
        "lr": args.lr,
        "lora_r": args.lora_r,
        "lora_alpha": 2 * args.lora_r,
        "prompts_per_step": args.prompts_per_step,
        "max_completion_length": args.max_completion_length,
        "save_steps": step,
        "save_total_limit": budgets[-1] // step + 1,
    }
    values = {
        "target": args.target,
        "data": args.data,
        "out": str(out / "mapper_train"),
        "grpo": grpo,
        "reward": {"max_length_ratio": args.max_length_ratio},
    }
    if args.stop_pass_rate is not None:
        values["stop_pass_rate"] = args.stop_pass_rate
    cfg = build_config(MapperTrainConfig, values, "sweep")
    done = out / "train_summary.json"  # beside the stage's folder, not in it: that folder holds only its own files
    if done.exists():
        return json.loads(done.read_text())
    summary = train_mapper(cfg)
    done.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def budget_mapper(args, out: Path, budget: int, last: int) -> str:
    """The mapper after `budget` steps as a model folder: the stage's own output for the last budget, the
    checkpoint's adapter merged in fp32 otherwise."""
    from sftadapt.runtime.models import load_tokenizer
    from sftadapt.runtime.trainer_io import save_merged

    if budget == last:
        return str(out / "mapper_train")
    merged = out / f"mapper-{budget}"
    if not (merged / "config.json").exists():
        ckpt = out / "mapper_train" / f"checkpoint-{budget}"
        if not (ckpt / "adapter_config.json").exists():
            raise SystemExit(f"{ckpt}: no LoRA adapter checkpoint (was save_steps a divisor of {budget}?)")
        save_merged(args.target, ckpt, merged, load_tokenizer(args.target))
    return str(merged)


def synth(args, out: Path, name: str, mapper: str) -> dict:
    from sftadapt.adapt.mapper import SynthConfig, synthesize
    from sftadapt.config import build_config

    folder = out / f"synth-{name}"
    if (folder / "summary.json").exists():
        return json.loads((folder / "summary.json").read_text())
    cfg = build_config(
        SynthConfig,
        {
            "mapper": mapper,
            "target": args.target,
            "data": args.data,
            "out": str(folder),
            "k": args.k,
            "max_new_tokens": args.synth_max_new_tokens,
            "batch_size": 64,
            "reward": {"max_length_ratio": args.max_length_ratio},
        },
        "sweep",
    )
    t0 = time.perf_counter()
    summary = synthesize(cfg)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    return summary


def row(name: str, s: dict) -> dict:
    gap = s.get("gap", {})
    return {
        "mapper": name,
        "mapped": s["origins"]["mapper"],
        "fallback": s["origins"]["expert"],
        "gate_pass_rate": round(s["gate_pass_rate"], 3),
        "gap_final_set": gap.get("final_set"),
        "gap_mapped_rows": gap.get("mapped_rows"),
        "gap_mapped_rows_expert": gap.get("mapped_rows_expert"),
        "gate_failures": {k: round(v, 3) for k, v in s["gate_failures"].items() if v},
    }


def moving(values: list[float | None], window: int) -> list[float | None]:
    out = []
    for i in range(len(values)):
        seen = [v for v in values[max(0, i - window + 1) : i + 1] if v is not None]
        out.append(sum(seen) / len(seen) if seen else None)
    return out


def plot(log: list[dict], out: Path, window: int, name: str = "mapper_sweep.png", title: str = "") -> Path:
    """Reward, gate pass rate and each gate reason per GRPO step (moving mean over `window`) into OUT/name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in log]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, label in (("reward_mean", "reward (mean)"), ("r_align_pass_mean", "r_align of passing")):
        axes[0].plot(steps, moving([r.get(key) for r in log], window), label=label)
    axes[0].set_title(f"{title}reward, moving mean over {window} steps")
    axes[1].plot(steps, moving([r.get("gate_pass_rate") for r in log], window), label="gate pass rate", lw=2)
    axes[1].plot(
        steps,
        moving([r.get("frac_reward_zero_std") for r in log], window),
        label="groups with zero reward std",
        ls="--",
    )
    axes[1].set_ylim(0, 1)
    axes[1].set_title("gate pass rate / no-signal groups")
    reasons = sorted({k for r in log for k in r if k.startswith("fail_")})
    for key in reasons:
        series = moving([r.get(key) for r in log], window)
        if any(v for v in series if v):
            axes[2].plot(steps, series, label=key[5:])
    axes[2].set_ylim(0, 1)
    axes[2].set_title("gate failure rate by reason")
    for ax in axes:
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=90)
    return path


def per_budget_interval(log: list[dict], key: str, budgets: list[int]) -> list[tuple[int, int, float | None]]:
    """Mean of `key` over each budget interval (steps (previous budget, budget])."""
    out, lo = [], 0
    for b in budgets:
        vals = [r[key] for r in log if lo < r["step"] <= b and r.get(key) is not None]
        out.append((lo + 1, b, sum(vals) / len(vals) if vals else None))
        lo = b
    return out


def main() -> None:
    args = parse()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = budgets_of(args.budgets)
    t0 = time.perf_counter()
    summary = train(args, budgets, out)
    from sftadapt.rl.grpo import read_rl_log

    log = [r for r in read_rl_log(out / "mapper_train") if "step" in r and "gate_pass_rate" in r]
    results = {"untrained (prompted rewrite)": synth(args, out, "untrained", "untrained")}
    for b in budgets:
        results[f"{b} steps"] = synth(args, out, str(b), budget_mapper(args, out, b, budgets[-1]))
    rows = [row(name, s) for name, s in results.items()]
    fig = plot(log, out, args.window)
    per_interval = {
        key: per_budget_interval(log, key, budgets)
        for key in ("gate_pass_rate", "r_align_pass_mean", "reward_mean", "frac_reward_zero_std", "reward_std")
    }
    record = {
        "args": vars(args),
        "steps_run": summary.get("steps"),
        "stop": summary.get("stop"),
        "sets": rows,
        "per_interval": per_interval,
        "wall_s": round(time.perf_counter() - t0, 1),
        "train_compute": summary.get("compute"),
        "plot": str(fig),
    }
    (out / "sweep.json").write_text(json.dumps(record, indent=2, default=str))
    lines = [
        "| mapper | mapped / fallback | rollout gate pass rate | gap of the set | mapped rows: theirs vs the "
        "expert's |",
        "|---|---|---|---|---|",
    ]
    for r in rows:

        def f(x):
            return "–" if x is None else f"{x:.3f}"

        lines.append(
            f"| {r['mapper']} | {r['mapped']} / {r['fallback']} | {r['gate_pass_rate']:.2f} | "
            f"{f(r['gap_final_set'])} | {f(r['gap_mapped_rows'])} vs {f(r['gap_mapped_rows_expert'])} |"
        )
    lines += [
        "",
        "| steps | gate pass rate | r_align of passing | reward | groups with zero reward std |",
        "|---|---|---|---|---|",
    ]
    for i, (lo, hi, _) in enumerate(per_interval["gate_pass_rate"]):

        def g(key, i=i):
            v = per_interval[key][i][2]
            return "–" if v is None else f"{v:.3f}"

        lines.append(
            f"| {lo}-{hi} | {g('gate_pass_rate')} | {g('r_align_pass_mean')} | {g('reward_mean')} | "
            f"{g('frac_reward_zero_std')} |"
        )
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"plot -> {fig}; record -> {out / 'sweep.json'}")


if __name__ == "__main__":
    main()
