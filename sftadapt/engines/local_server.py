"""A real OpenAI-compatible server on this machine, for the `openai` backend's tests and benchmarks.

The server is llama-cpp-python's `llama_cpp.server` (llama.cpp under a FastAPI app), installed by
`make server` (.ci/server.sh) in its own virtual environment, `.venv-server` (or `$SFTADAPT_SERVER_VENV`), so
its pins never meet ours. It serves an **F32 GGUF written from our converted HF folder** (llama.cpp's
`convert_hf_to_gguf.py`, run from the unpacked sdist that server.sh keeps in `.cache/llama-cpp-python/src`):
the hf backend dequantises the embedded Q4_1 GGUF to fp32, and converting that folder back to an F32 GGUF
gives the server the very same fp32 weights, so hf and server outputs can be compared token for token.

    from sftadapt.engines.local_server import LlamaCppServer
    with LlamaCppServer("smollm2-135m", n_ctx=2048) as server:
        engine = make_engine("smollm2-135m", EngineConfig("openai", server.engine_options()))

    python -m sftadapt.engines.local_server --model smollm2-135m --port 8000   # serve until Ctrl-C
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

VERSION = "0.3.36"  # .ci/server.sh pins the same
REPO = Path(__file__).resolve().parents[2]


class ServerMissing(RuntimeError):
    """llama-cpp-python[server] (or the sources its GGUF converter comes from) is not installed."""


def server_python() -> Path:
    venv = Path(os.environ.get("SFTADAPT_SERVER_VENV", REPO / ".venv-server"))
    python = venv / "bin" / "python"
    if not python.exists():
        raise ServerMissing(
            f"no server venv at {venv}: run `make server` (builds llama-cpp-python[server] "
            f"{VERSION} there, ~10 min once, then cached)"
        )
    probe = subprocess.run([str(python), "-c", "import llama_cpp.server"], capture_output=True, text=True)
    if probe.returncode:
        raise ServerMissing(
            f"{python} cannot import llama_cpp.server: run `make server` "
            f"({probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else ''})"
        )
    return python


def llama_cpp_tree() -> Path:
    root = Path(
        os.environ.get(
            "SFTADAPT_LLAMA_CPP_SRC", REPO / ".cache" / "llama-cpp-python" / "src" / f"llama_cpp_python-{VERSION}"
        )
    )
    tree = root / "vendor" / "llama.cpp"
    if not (tree / "convert_hf_to_gguf.py").exists():
        raise ServerMissing(f"no llama.cpp sources at {tree}: run `make server` (unpacks the sdist there)")
    return tree


def f32_gguf(spec: str = "smollm2-135m") -> Path:
    """The F32 GGUF of `spec`'s HF folder, written once into the sftadapt cache."""
    from sftadapt.runtime.models import cache_dir, resolve_model

    folder = Path(resolve_model(spec))
    out = cache_dir() / "gguf" / f"{folder.name}-f32.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tree = llama_cpp_tree()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    # the sdist's own gguf-py goes first on the path: its converter is written against that version
    deps = tree.parents[2] / "convert-deps"  # sentencepiece, which the converter imports (.ci/server.sh)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (tree / "gguf-py", tree, deps))), "NO_LOCAL_GGUF": ""}
    done = subprocess.run(
        [sys.executable, str(tree / "convert_hf_to_gguf.py"), str(folder), "--outtype", "f32", "--outfile", str(tmp)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode or not tmp.exists():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"convert_hf_to_gguf.py failed on {folder}:\n{tail}")
    os.replace(tmp, out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """`python -m llama_cpp.server` on 127.0.0.1 serving `spec` as F32; `stop()`/`start()` keep the port."""

    def __init__(
        self,
        spec: str = "smollm2-135m",
        n_ctx: int = 2048,
        port: int | None = None,
        threads: int | None = None,
        api_key: str | None = None,
        alias: str | None = None,
        log: str | os.PathLike | None = None,
        startup_timeout: float = 300.0,
    ):
        self.spec, self.n_ctx, self.port = spec, n_ctx, port or free_port()
        self.threads = threads or max(1, len(os.sched_getaffinity(0)))
        self.api_key, self.alias = api_key, alias or spec
        self.log = Path(log) if log else None
        self.startup_timeout = startup_timeout
        self.python, self.gguf = server_python(), f32_gguf(spec)
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def engine_options(self, **more) -> dict:
        return {
            "base_urls": [self.base_url],
            "model": self.alias,
            "server": "llama-cpp-python",
            "served_dtype": "float32",
            **more,
        }

    def start(self) -> LlamaCppServer:
        cmd = [
            str(self.python),
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.gguf),
            "--model_alias",
            self.alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.threads),
            "--n_threads_batch",
            str(self.threads),
            "--logits_all",
            "true",
            "--n_batch",
            str(min(self.n_ctx, 512)),
        ]
        if self.api_key:
            cmd += ["--api_key", self.api_key]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        while time.perf_counter() - start < self.startup_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {self.proc.returncode} at start-up"
                    + (f" (log: {self.log})" if self.log else "")
                )
            if self.ready():
                self.startup_seconds = time.perf_counter() - start
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama_cpp.server not ready after {self.startup_timeout:.0f} s")

    def ready(self) -> bool:
        req = urllib.request.Request(
            self.base_url + "/models", headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status == 200 and bool(json.loads(resp.read()).get("data"))
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crashed server: in-flight requests see a reset connection."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="serve a model's F32 GGUF with llama_cpp.server on 127.0.0.1")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args(argv)
    server = LlamaCppServer(args.model, n_ctx=args.n_ctx, port=args.port).start()
    print(
        f"serving {args.model} at {server.base_url} (ready in {server.startup_seconds:.1f} s); Ctrl-C stops", flush=True
    )
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
