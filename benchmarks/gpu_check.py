"""GPU check: do sftadapt's hf engine and trainers run right on a CUDA GPU, and how fast does the engine sample?

    make gpu-check                               # on a machine with a CUDA GPU: benchmarks/gpu.md + results/gpu_check.json
    python3 benchmarks/gpu_check.py              # the same with any python that has torch (the repo goes on sys.path)
    python3 benchmarks/gpu_check.py --dry-run    # = --device cpu --tiny: the same code on the CPU at tiny shapes
                                                 # (< 60 s), written under /tmp, never into benchmarks/

Parts, run in this order, each with its own time budget (the whole check ends within 8 minutes on one H100/H200):
  pytest      (a) `pytest -m gpu` on the test files with gpu variants, SFTADAPT_GPU_TESTS=1 (a test that finds no
              GPU fails instead of skipping); the dry run rehearses them on the CPU (SFTADAPT_GPU_TESTS_ON_CPU=1)
  agreement   (b) one random Qwen2 model through the hf engine in float32 and in bfloat16: greedy and seeded
              sampled token agreement, the log-prob gap on the same ids, each precision's sampled log-probs
              against its own scoring, and the engine's decoder against model.generate
  train       (c) two SFT optimiser steps per precision through sftadapt.train.stage.train, and one GRPO step
              through sftadapt.rl.direct_rl where trl and datasets are installed (else the reason is recorded)
  throughput  (d) tokens/s of the hf engine sampling 32 prompts x 128 tokens after 128-token prompts at Qwen2.5's
              1.5B and 7B shapes (random weights, bf16), and the shares of the decode loop's time spent in the
              model's forward, in sftadapt's sampler and in the loop's own bookkeeping

Everything is built in code (tests/portable_model.py: configs, random weights, a byte-level tokenizer): nothing
is downloaded. trl is imported only where installed, vllm and math_verify never. A part that runs out of its
budget, lacks a package or raises is recorded with its reason, and the check goes on. Wheels in
.cache/gpu-wheels (`make gpu-wheels`: sftadapt's pinned transformers, peft, trl, datasets) are installed into a
temporary folder first, where there are any, so a machine whose own transformers is older than the pin runs the
training parts on the pinned one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

WHEELS = Path(os.environ.get("SFTADAPT_GPU_WHEELS", ROOT / ".cache" / "gpu-wheels"))
SITE_ENV = "SFTADAPT_GPU_CHECK_SITE"  # set once the carried wheels are installed (the re-executed process)
DROPPED_ENV = "SFTADAPT_GPU_CHECK_DROPPED"  # why carried wheels were left out, for the report
START_ENV = "SFTADAPT_GPU_CHECK_T0"  # the first process's start: the wheel install counts in the 8 minutes
PARTS = ("pytest", "agreement", "train", "throughput")
TITLES = {
    "pytest": "(a) pytest -m gpu",
    "agreement": "(b) hf sampling + scoring, fp32 vs bf16",
    "train": "(c) SFT step (+ GRPO step)",
    "throughput": "(d) hf sampling throughput",
}
# seconds: (GPU run, --tiny run); the check's total is the last entry
BUDGETS = {"pytest": (120, 45), "agreement": (60, 20), "train": (90, 30), "throughput": (150, 15), "total": (460, 110)}
MD_OUT, JSON_OUT = ROOT / "benchmarks" / "gpu.md", ROOT / "benchmarks" / "results" / "gpu_check.json"
DRY_OUT = Path(os.environ.get("TMPDIR", "/tmp")) / "sftadapt-gpu-check-dry"


def pins() -> dict[str, str]:
    """sftadapt's pinned versions (pyproject.toml) of the packages this check runs on."""
    names = "torch|transformers|peft|accelerate|trl|datasets"
    return dict(re.findall(rf'^\s*"({names})==([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M))


def gpu_test_files() -> list[str]:
    """The test files holding gpu variants (marked gpu, or parametrized over conftest's ON_DEVICES). Only these
    are collected: other test files import packages (vllm, playwright, math_verify) a GPU machine may lack."""
    files = sorted((ROOT / "tests").glob("test_*.py"))
    return [str(p.relative_to(ROOT)) for p in files if re.search(r"mark\.gpu|ON_DEVICES", p.read_text())]


def install_wheels() -> None:
    """Install .cache/gpu-wheels/*.whl into a temporary folder and run this script again with it first on the
    path; where there are none (or --no-wheels), carry on with the machine's own packages."""
    from importlib.metadata import PackageNotFoundError, version

    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels or os.environ.get(SITE_ENV):
        return

    def have(wheel: Path) -> bool:  # NAME-VERSION-...whl installed here at that version already
        name, ver = wheel.name.split("-")[:2]
        try:
            return version(name) == ver
        except PackageNotFoundError:
            return False

    if all(have(w) for w in wheels):
        return
    site = Path(os.environ.get("TMPDIR", "/tmp")) / "sftadapt-gpu-site"
    shutil.rmtree(site, ignore_errors=True)  # only this run's wheels: pip --target keeps what an earlier run left
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir"]
    cmd += ["--upgrade", "--target", str(site), *map(str, wheels)]
    print(f"installing {len(wheels)} carried wheels into {site}: {', '.join(w.name for w in wheels)}", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["?"])[-1][:300]
        os.environ[DROPPED_ENV] = f"the carried wheels did not install, the check ran without them: {why}"
        print(os.environ[DROPPED_ENV], flush=True)
        return
    path = os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, SITE_ENV: str(site), "PYTHONPATH": path}
    # a carried datasets that cannot import here (its own needs: pyarrow, pandas, fsspec of other versions) would
    # break transformers' Trainer too, which imports datasets wherever it is installed: drop it and trl then
    probe = subprocess.run([sys.executable, "-c", "import datasets, trl"], env=env, capture_output=True, text=True)
    if (site / "datasets").exists() and probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["?"])[-1][:300]
        for name in ("datasets", "trl"):
            for folder in [site / name, *site.glob(f"{name}-*.dist-info")]:
                shutil.rmtree(folder, ignore_errors=True)
        env[DROPPED_ENV] = f"the carried trl and datasets were left out: importing them here failed ({why})"
        print(env[DROPPED_ENV], flush=True)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    site = os.environ.get(SITE_ENV)
    path = [p for p in (site, str(ROOT), os.environ.get("PYTHONPATH")) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), **extra}
    # no network there: any hub lookup must fail at once, not wait for a timeout
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["COLUMNS"] = "200"  # pytest's short summary keeps each failure's message at this width
    env.pop("SFTADAPT_GPU_TESTS" if extra.get("SFTADAPT_GPU_TESTS_ON_CPU") else "SFTADAPT_GPU_TESTS_ON_CPU", None)
    return env


def _text(out) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def run_pytest(budget: float, dry: bool) -> dict:
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        return {"status": "skipped: pytest not installed"}
    files = gpu_test_files()
    env = child_env({"SFTADAPT_GPU_TESTS_ON_CPU": "1"} if dry else {"SFTADAPT_GPU_TESTS": "1"})
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rsfE", "-p", "no:cacheprovider", "--durations=5"]
    started = time.perf_counter()
    try:
        done = subprocess.run([*cmd, *files], cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget)
        output, code = done.stdout + done.stderr, done.returncode
        status = {0: "ok", 1: "failed"}.get(code, f"error: pytest exited {code}")
    except subprocess.TimeoutExpired as err:
        output, code = _text(err.stdout) + _text(err.stderr), None
        status = f"stopped: its budget of {budget:.0f} s ran out"
    lines = output.strip().splitlines()
    summary = next(
        (ln.strip("= ") for ln in reversed(lines) if re.search(r"\d+ (passed|failed|error|skipped)", ln)), ""
    )
    notable = [ln for ln in lines if re.match(r"(SKIPPED|FAILED|ERROR) ", ln)][:25]
    return {
        "status": status,
        "command": " ".join(["pytest -m gpu", *files]),
        "env": "SFTADAPT_GPU_TESTS_ON_CPU=1" if dry else "SFTADAPT_GPU_TESTS=1",
        "summary": summary,
        "notable": notable,
        "tail": lines[-60:],
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_worker_process(parts: list[str], budgets: dict, deadline: float, device: str, tiny: bool) -> dict:
    """The measuring parts in one child process (its own CUDA context), stopped at the check's deadline."""
    results = Path(os.environ.get("TMPDIR", "/tmp")) / f"sftadapt-gpu-check-{os.getpid()}.json"
    cmd = [sys.executable, __file__, "--worker", "--results", str(results), "--deadline", str(deadline)]
    cmd += ["--device", device, "--parts", ",".join(parts), "--budgets", json.dumps(budgets)] + (
        ["--tiny"] if tiny else []
    )
    stopped = None
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=child_env({}), timeout=max(deadline - time.time(), 1) + 10)
        if done.returncode != 0:
            stopped = f"the worker exited {done.returncode} (see its output above)"
    except subprocess.TimeoutExpired:
        stopped = "stopped: the check's time ran out during this part"
    record = json.loads(results.read_text()) if results.exists() else {"parts": {}}
    results.unlink(missing_ok=True)
    for name in parts:
        part = record["parts"].setdefault(name, {"status": f"not run: {stopped or 'the worker ended first'}"})
        if part.get("status") == "running":
            part["status"] = stopped or "stopped: the worker ended during this part"
    return record


# ---------------------------------------------------------------- the report
def _row(name: str, part: dict) -> str:
    status = part.get("status", "")
    brief = ""
    if name == "pytest":
        brief = part.get("summary", "")
    elif name == "agreement" and "score_fp32_vs_bf16" in part:
        g, s = part["greedy_fp32_vs_bf16"], part["score_fp32_vs_bf16"]
        brief = (
            f"greedy token agreement {g['token_agreement']}, max abs log-prob diff {s['max_abs_logprob_diff']} "
            f"(mean {s['mean_abs_logprob_diff']})"
        )
    elif name == "train":
        bits = []
        for key in ("sft_float32", "sft_bfloat16", "grpo"):
            sub = part.get(key, {})
            if sub:
                ok = sub.get("status") == "ok"
                what = f"{sub.get('step_seconds', [])} s/step" if key != "grpo" else f"{sub.get('seconds')} s"
                bits.append(f"{key}: {what if ok else sub.get('status')}")
        brief = "; ".join(bits)
    elif name == "throughput":
        bits = []
        for shape, sub in part.get("shapes", {}).items():
            if sub.get("status") == "ok":
                timed = sub.get("sampled_timed", {})
                share = f", forward {timed['forward_share']:.0%} of the loop" if timed else ""
                bits.append(f"{shape}: {sub['sampled']['tokens_per_s']} tok/s sampled{share}")
            else:
                bits.append(f"{shape}: {sub.get('status')}")
        brief = "; ".join(bits)
    return f"| {TITLES[name]} | {status} | {part.get('seconds', '')} | {brief} |"


def render(record: dict) -> str:
    env = record.get("env", {})
    dry = record["mode"] != "gpu"
    head = (
        "**Dry run on the CPU at tiny shapes: these are not GPU results** (the GPU check's numbers are in "
        "benchmarks/gpu.md once `make gpu-check` has run on a GPU)."
        if dry
        else f"Measured on **{env.get('gpu', '?')}** (torch.cuda.get_device_name)."
    )
    lines = [
        "# GPU check",
        "",
        head,
        "",
        f"- run: {record['started']} · `{record['command']}` · {record['seconds']} s in all · "
        f"python {env.get('python', '?')} · CUDA {env.get('torch_cuda')} · "
        f"{env.get('gpu_memory_gib', '?')} GiB · compute capability {env.get('capability', '?')}",
        "- script: `benchmarks/gpu_check.py` (what each part runs: its docstring); raw numbers: "
        + ("the gpu_check.json beside this file" if dry else "`benchmarks/results/gpu_check.json`"),
        f"- carried wheels installed first: {', '.join(record['wheels'])}"
        if record.get("wheels")
        else "- no wheels carried",
        "",
        "| package | here | sftadapt pins |",
        "|---|---|---|",
    ]
    packages, pinned = env.get("packages", {}), env.get("pins", {})
    lines += [f"| {k} | {v or 'not installed'} | {pinned.get(k, '')} |" for k, v in packages.items()]
    lines += ["", *[f"- {n}" for n in env.get("notes", [])], "", "| part | status | s | result |", "|---|---|---|---|"]
    lines += [_row(name, part) for name, part in record["parts"].items()]
    parts = record["parts"]
    if "pytest" in parts:
        p = parts["pytest"]
        lines += ["", f"## {TITLES['pytest']}", "", f"`{p.get('env', '')} {p.get('command', '')}`: {p.get('summary')}"]
        lines += ["", "```", *(p.get("notable") or ["(no skips or failures)"]), "```"]
    if parts.get("agreement", {}).get("score_fp32_vs_bf16"):
        a = parts["agreement"]
        lines += [
            "",
            f"## {TITLES['agreement']}",
            "",
            f"{a['model']}, {a['prompts']} prompts, {a['new_tokens']} new tokens",
            "",
        ]
        lines += ["| measure | value |", "|---|---|"]
        for key, value in a.items():
            if isinstance(value, dict) or key.startswith("sample_vs_score"):
                lines.append(f"| {key} | {json.dumps(value)} |")
    if "train" in parts:
        t = parts["train"]
        lines += [
            "",
            f"## {TITLES['train']}",
            "",
            f"{t.get('model', '')}, {t.get('rows', '')} rows, batch {t.get('batch', '')}",
            "",
        ]
        lines += ["| run | result |", "|---|---|"]
        for key in ("sft_float32", "sft_bfloat16", "grpo"):
            if key in t:
                lines.append(f"| {key} | {json.dumps(t[key])} |")
        if "sft_first_loss_rel_diff_bf16_vs_fp32" in t:
            lines.append(f"| first loss, bf16 vs fp32 (relative) | {t['sft_first_loss_rel_diff_bf16_vs_fp32']} |")
    if parts.get("throughput", {}).get("shapes"):
        t = parts["throughput"]
        lines += [
            "",
            f"## {TITLES['throughput']}",
            "",
            f"batch {t['batch']}, {t['prompt_tokens']}-token prompts, {t['new_tokens']} new tokens, {t['dtype']}, "
            "random weights (no row ends early). Shares: of the instrumented sampled run's time (each forward and "
            "sampler call synchronised); loop = the decode loop's own bookkeeping.",
            "",
            "| shape | params (B) | sampled tok/s | greedy tok/s | forward | of it prefill | sampler | loop | peak GiB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for shape, s in t["shapes"].items():
            if s.get("status") != "ok":
                lines.append(f"| {shape} | {s.get('status')} | | | | | | | |")
                continue
            timed = s.get("sampled_timed", {})
            share = [
                f"{timed[k]:.0%}" if k in timed else ""
                for k in ("forward_share", "prefill_share", "sampler_share", "loop_share")
            ]
            greedy = s.get("greedy", {}).get("tokens_per_s", "")
            lines.append(
                f"| {shape} | {s['params_b']} | {s['sampled']['tokens_per_s']} | {greedy} | {' | '.join(share)} | "
                f"{s.get('peak_memory_gib', '')} |"
            )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (seconds on a CPU)")
    ap.add_argument("--dry-run", action="store_true", help="= --device cpu --tiny: rehearse every part on the CPU")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--out", type=Path, help="folder for gpu.md + gpu_check.json (default: benchmarks/ on a GPU)")
    ap.add_argument("--no-wheels", action="store_true", help="ignore .cache/gpu-wheels")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--budgets", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dry_run:
        args.device, args.tiny = "cpu", True
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"--parts {','.join(unknown)}: choose from {', '.join(PARTS)}")

    if args.worker:
        from gpu_parts import run_worker

        run_worker(parts, json.loads(args.budgets), args.deadline, args.device, args.tiny, args.results, pins())
        return

    import importlib.util

    if importlib.util.find_spec("torch") is None:
        sys.exit(
            f"error: {sys.executable} has no torch: run the check with a python that has it (make gpu-check GPU_PY=...)"
        )
    if not args.no_wheels:
        install_wheels()
    started = float(os.environ.setdefault(START_ENV, str(time.time())))
    col = 1 if args.tiny else 0
    deadline = started + BUDGETS["total"][col]
    budgets = {name: BUDGETS[name][col] for name in PARTS}
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit(
                "error: torch.cuda.is_available() is false here (torch "
                f"{torch.__version__}): run the check on a machine with a CUDA GPU, or rehearse it on the CPU with "
                "python3 benchmarks/gpu_check.py --dry-run"
            )
    dry = args.device == "cpu"
    out_dir = args.out or (DRY_OUT if dry else None)
    md_path, json_path = (out_dir / "gpu.md", out_dir / "gpu_check.json") if out_dir else (MD_OUT, JSON_OUT)

    record: dict = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python3 benchmarks/gpu_check.py " + shlex.join(sys.argv[1:]),
        "mode": "gpu" if not dry else ("dry-run" if args.tiny else "cpu"),
        "device": args.device,
        "tiny": args.tiny,
        "wheels": os.environ.get(SITE_ENV) and sorted(w.name for w in WHEELS.glob("*.whl")),
        "budgets_s": budgets,
        "parts": {},
    }
    if "pytest" in parts:
        print(f"{TITLES['pytest']} ...", flush=True)
        left = deadline - time.time()
        record["parts"]["pytest"] = run_pytest(max(min(budgets["pytest"], left - 30), 10), dry)
        print(f"  {record['parts']['pytest']['status']}: {record['parts']['pytest'].get('summary', '')}", flush=True)
    measuring = [p for p in parts if p != "pytest"]
    if measuring:
        print(f"{', '.join(TITLES[p] for p in measuring)} ...", flush=True)
        worker = run_worker_process(measuring, budgets, deadline, args.device, args.tiny)
        record["env"] = worker.get("env", {})
        record["parts"].update({p: worker["parts"][p] for p in measuring})
    if not record.get("env"):  # the worker did not run (or died first): the versions and the GPU from here
        from gpu_parts import part_env

        record["env"] = part_env(args.device, pins())
    if os.environ.get(DROPPED_ENV):
        record["env"]["notes"].insert(0, os.environ[DROPPED_ENV])
    record["seconds"] = round(time.time() - started, 1)
    record["parts"] = {p: record["parts"][p] for p in PARTS if p in record["parts"]}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    md_path.write_text(render(record))
    for name, part in record["parts"].items():
        print(_row(name, part))
    print(f"wrote {md_path} and {json_path} ({record['seconds']} s)")
    # a failed test or a part that raised or was cut short fails the command (`make gpu-check`); skips do not
    bad = [n for n, p in record["parts"].items() if not str(p.get("status")).startswith(("ok", "skipped"))]
    if bad:
        sys.exit("not all well: " + ", ".join(f"{n} ({record['parts'][n]['status']})" for n in bad))


if __name__ == "__main__":
    main()
