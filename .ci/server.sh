#!/usr/bin/env bash
# The real OpenAI-compatible server the `openai` engine is tested against: llama-cpp-python[server], in its own
# virtual environment (.venv-server) so its pins never touch ours. The PyPI sdist compiles llama.cpp; this
# builds only what the server needs (no llava/mtmd, tools, examples or tests; the native CPU variant only) and
# keeps the wheel and the unpacked sources (whose convert_hf_to_gguf.py writes the F32 GGUF the tests serve)
# under .cache/, so a second run installs in seconds. Usage: .ci/server.sh [VENV]   (default .venv-server)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-server}
VERSION=0.3.36   # pinned: the tests rely on its echo + logprobs (logits_all) and per-request seed
CACHE=$PWD/.cache/llama-cpp-python
mkdir -p "$CACHE/wheels"
start=$(date +%s)
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp.server, llama_cpp; assert llama_cpp.__version__ == '$VERSION'" 2>/dev/null; then
  echo "server venv $VENV: llama-cpp-python $VERSION already installed"
else
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -U pip
  if ! ls "$CACHE/wheels"/llama_cpp_python-$VERSION-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $VERSION from its sdist (one time, cached in $CACHE/wheels)"
    # GGML_NATIVE: -march=native for this CPU only (the wheel is cached per machine, not shipped);
    # LLAVA_BUILD off skips the multimodal library, the largest part of the build after ggml.
    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release" \
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
      "$VENV/bin/python" -m pip wheel -q --no-deps --no-binary llama-cpp-python \
        -w "$CACHE/wheels" "llama-cpp-python==$VERSION"
    echo "built in $(( $(date +%s) - start )) s"
  fi
  "$VENV/bin/python" -m pip install -q "$CACHE/wheels"/llama_cpp_python-$VERSION-*.whl "llama-cpp-python[server]==$VERSION"
fi
# the unpacked sdist: its vendored llama.cpp holds convert_hf_to_gguf.py and gguf-py (run from here, not copied)
SRC=$CACHE/src/llama_cpp_python-$VERSION
if [ ! -f "$SRC/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
  mkdir -p "$CACHE/src"
  "$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: -d "$CACHE/src" "llama-cpp-python==$VERSION"
  tar xzf "$CACHE/src/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE/src"
fi
# convert_hf_to_gguf.py imports sentencepiece even for BPE tokenizers: a --target folder the converter alone
# gets on its PYTHONPATH (tests/servers/local_server.py), so neither venv gains a package
DEPS=$CACHE/src/convert-deps
if [ ! -d "$DEPS/sentencepiece" ]; then
  "$VENV/bin/python" -m pip install -q --no-deps --target "$DEPS" "sentencepiece==0.2.1"
fi
echo "llama-cpp-python[server] $VERSION ready in $VENV ($(( $(date +%s) - start )) s); sources in $SRC"
