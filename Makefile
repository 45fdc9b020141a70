# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Offline by construction: the definition is built without network or real credentials.
export AWS_DEFAULT_REGION ?= us-east-1
export SAGEMAKER_VALIDATE_ROLE := false
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test lint venv clean system recording-check

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/robocar demo

# System packages (system-packages.txt): installed here, where the user sees it, never by a test.
SYSTEM_PACKAGES := $(shell sed 's/\#.*//' system-packages.txt)
system:
	@missing=""; for package in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing system packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; }; \
	else \
	  echo "missing system packages:$$missing; install them with: sudo apt-get install$$missing" >&2; \
	  exit 1; \
	fi

# Two workers, one per core of the 2-core CI machine: 1.4x on the whole suite (benchmarks/README.md
# "The test suite"). A test file runs whole on one worker (module fixtures train once); a plain
# `python -m pytest tests/...` stays one process. `make test TEST_WORKERS=0` runs without workers.
TEST_WORKERS ?= 2
test: $(STAMP) system
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .robocar build *.egg-info

# donkeycar 5.3.0's own Tub reads a tub recorded by `robocar-edge record` (makes .bench/ on first use).
recording-check: $(STAMP)
	$(BIN)/python benchmarks/record.py --donkeycar-only
