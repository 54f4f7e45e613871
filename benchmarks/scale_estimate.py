"""What the Mind the Gap Qwen2.5-Math-7B recipe (configs/paper/mind_the_gap_qwen2.5-math-7b.yaml) would take on a
cluster: tokens per stage, then GPU-hours and wall hours at given per-GPU rates.

Measured here (no GPU needed): the token counts. The prompts are the problems in the Qwen2.5-Math chat format (its
own default system turn, tests/paper_models/qwen2.5-math-7b/chat_template.jinja) and the responses are the expert
solutions, both tokenised with Qwen2.5's real tokenizer (the vocab `make vocab` converts from llama.cpp's published
GGUF). NuminaMath-CoT, the recipe's training set, is not on this machine: MATH train (7,500 problems, Hendrycks) is
the stand-in, scaled to the recipe's 50,000 problems; the evaluation sets are the five the recipe names.

Projected (arguments, each printed with its source in the output): how long the target's own responses are
against the expert's (`--length-factor`), which share of problems the target fails on its own and so is rewritten
with guided tries (`--unsolved`), the vLLM generation rate of one 7B replica on one H100 (`--gen-rate`) and the
training model-FLOPs utilisation (`--mfu`). Training FLOPs per token are 8N (6N forward and backward plus 2N for
the recomputed forward of gradient checkpointing, which the recipe turns on), N = 7.62e9 for Qwen2.5-Math-7B.

    python benchmarks/scale_estimate.py --out benchmarks/results/scale_estimate.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TEMPLATE = ROOT / "tests" / "paper_models" / "qwen2.5-math-7b" / "chat_template.jinja"
# the five benchmarks of the recipe's `paper` protocol: file, problem field, solution field (None: no solution)
EVAL_SETS = {
    "math500": ("math500/test.jsonl", "problem", "solution"),
    "minerva_math": ("minerva_math/test.jsonl", "problem", "solution"),
    "olympiadbench": ("olympiadbench/test.jsonl", "question", "solution"),
    "aime24": ("aime24/test.jsonl", "problem", "solution"),
    "amc23": ("amc23/test.jsonl", "problem", None),
}
SOURCES = {
    "gen_rate": "projected: MLPerf Inference v5.1 (Red Hat, vLLM 0.10.0) Llama-3.1-8B offline 5,777 tok/s on one H100 "
    "in FP8; the recipe samples in bf16, taken here as 0.6 of that",
    "mfu": "projected: a common model-FLOPs utilisation for 7B full fine-tuning with DeepSpeed ZeRO-2 on H100s",
    "peak": "H100 SXM dense bf16 peak, 989 TFLOP/s (NVIDIA's datasheet)",
    "length_factor": "projected: the target's own solutions as long as the expert's; Qwen2.5-Math-7B writes longer "
    "ones than MATH's terse solutions, so this is a lower bound",
    "unsolved": "projected: the share of training problems the target fails in all k self samples",
}


def rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def text(value) -> str:
    return "\n".join(value) if isinstance(value, list) else str(value or "")


def stats(lengths: list[int]) -> dict:
    ordered = sorted(lengths)
    return {
        "n": len(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "median": statistics.median(ordered),
        "p90": ordered[int(0.9 * (len(ordered) - 1))],
    }


def main(argv: list[str] | None = None) -> dict:
    from tokenizers import Tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    vocab = Path(os.environ.get("SFTADAPT_VOCAB_DIR", ROOT / ".cache" / "vocab"))
    ap.add_argument(
        "--tokenizer", type=Path, default=next(iter(sorted(vocab.glob("ggml-vocab-qwen2.gguf.*.json"))), None)
    )
    ap.add_argument("--problems", type=int, default=50_000, help="the recipe's task.train_problems")
    ap.add_argument("--k", type=int, default=4, help="rewrite.k: self samples per problem")
    ap.add_argument("--guided-tries", type=int, default=4, help="rewrite.guided_tries (all counted: an upper bound)")
    ap.add_argument("--max-new-tokens", type=int, default=4096)
    ap.add_argument("--max-length", type=int, default=2048, help="train.max_length (training truncates there)")
    ap.add_argument("--eval-n", type=int, default=16, help="samples per problem of the paper protocol")
    ap.add_argument("--eval-arms", type=int, default=6, help="base, sft, dft, dr_sft, dr_dft, dr_is")
    ap.add_argument("--train-arms", type=int, default=5, help="sft, dft, dr_sft, dr_dft, dr_is: one epoch each")
    ap.add_argument("--length-factor", type=float, default=1.0)
    ap.add_argument("--unsolved", type=float, default=0.5)
    ap.add_argument("--gen-rate", type=float, default=0.6 * 5777, help="output tok/s of one 7B vLLM replica, 1 GPU")
    ap.add_argument("--mfu", type=float, default=0.4)
    ap.add_argument("--peak", type=float, default=989e12)
    ap.add_argument("--params", type=float, default=7.62e9)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument(
        "--train-gpus", type=int, default=8, help="GPUs of the accelerate launch (one node: `run` starts it)"
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.tokenizer is None:
        raise SystemExit(f"no Qwen2.5 tokenizer under {vocab}: run `make vocab` first")
    tok = Tokenizer.from_file(str(args.tokenizer))
    template = jinja2.Environment().from_string(TEMPLATE.read_text())

    def count(s: str) -> int:
        return len(tok.encode(s, add_special_tokens=False).ids)

    def prompt_tokens(problem: str) -> int:
        return count(template.render(messages=[{"role": "user", "content": problem}], add_generation_prompt=True))

    train = rows(DATA / "math_train" / "train.jsonl")
    train_prompt = [prompt_tokens(r["problem"]) for r in train]
    train_solution = [count(r["solution"]) for r in train]
    measured = {"math_train_prompt": stats(train_prompt), "math_train_solution": stats(train_solution)}
    eval_problems, eval_prompt_tokens, eval_solution = 0, 0, []
    for name, (path, q_field, s_field) in EVAL_SETS.items():
        got = rows(DATA / path)
        eval_problems += len(got)
        eval_prompt_tokens += sum(prompt_tokens(text(r[q_field])) for r in got)
        if s_field:
            lengths = [count(text(r[s_field])) for r in got if text(r[s_field])]
            measured[f"{name}_solution"] = stats(lengths)
            eval_solution += lengths
    measured["eval_problems"] = eval_problems

    gen_len = min(args.length_factor * measured["math_train_solution"]["mean"], args.max_new_tokens)
    eval_len = min(args.length_factor * statistics.fmean(eval_solution), args.max_new_tokens)
    prompt_len = measured["math_train_prompt"]["mean"]
    samples = args.problems * (args.k + args.unsolved * args.guided_tries)
    stages = {
        "rewrite (self + guided samples)": {"generated": samples * gen_len, "prefill": samples * prompt_len},
        "eval (all arms)": {
            "generated": args.eval_arms * eval_problems * args.eval_n * eval_len,
            "prefill": args.eval_arms * args.eval_n * eval_prompt_tokens,
        },
    }
    train_tokens = args.train_arms * args.problems * min(prompt_len + gen_len, args.max_length)
    gpus = args.nodes * args.gpus_per_node
    train_rate = args.mfu * args.peak / (8 * args.params)  # tokens/s per GPU
    plan = {}
    for name, tokens in stages.items():
        gpu_hours = tokens["generated"] / args.gen_rate / 3600
        plan[name] = {
            **{k: round(v) for k, v in tokens.items()},
            "gpu_hours": round(gpu_hours, 2),
            "wall_hours": round(gpu_hours / gpus, 2),
        }
    gpu_hours = train_tokens / train_rate / 3600
    plan["train (all arms)"] = {
        "trained": round(train_tokens),
        "gpu_hours": round(gpu_hours, 2),
        "wall_hours": round(gpu_hours / args.train_gpus, 2),
    }
    result = {
        "command": "python benchmarks/scale_estimate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured": measured,
        "projected": {k: getattr(args, k) for k in ("gen_rate", "mfu", "peak", "length_factor", "unsolved")},
        "sources": SOURCES,
        "cluster": {
            "nodes": args.nodes,
            "gpus_per_node": args.gpus_per_node,
            "replicas": gpus,
            "train_gpus": args.train_gpus,
            "train_tokens_per_gpu_second": round(train_rate),
        },
        "plan": plan,
        "total_wall_hours": round(sum(p["wall_hours"] for p in plan.values()), 2),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
