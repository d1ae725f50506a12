# Two entry points for a fresh machine (Debian, Python 3.11): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The torch build the test suite is checked against; override to use another (e.g. a CUDA build).
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Modules whose docstring examples run as doctests in `make test` (fast: tiny models, no data).
DOCTEST ?= src/camscope/__init__.py src/camscope/engine src/camscope/targets src/camscope/passes \
	src/camscope/progress.py src/camscope/errors.py src/camscope/io.py src/camscope/locking.py src/camscope/viz/figures.py \
	src/camscope/models/preprocessing.py src/camscope/models/devices.py src/camscope/metrics/imputation.py src/camscope/metrics/road.py \
	src/camscope/viz/overview.py src/camscope/app/jobs.py src/camscope/app/images.py src/camscope/app/workbench.py src/camscope/app/schema.py \
	src/camscope/app/downloads.py src/camscope/cli/serve.py src/camscope/methods/attention.py src/camscope/methods/rollout.py \
	src/camscope/methods/gradrollout.py src/camscope/methods/legrad.py
LINTED := src tests benchmarks scripts

.PHONY: install demo test test-order lint bench chromium

$(BIN)/camscope: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/camscope

install: $(BIN)/camscope

demo: install
	$(BIN)/camscope demo --out camscope-out/demo --overwrite

# The quality gates, in order, then the test suite.
lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest --doctest-modules $(DOCTEST)
	$(BIN)/python -m pytest

# The suite twice in one process, in a shuffled order (SEED=N repeats an order): no test may depend on another.
SEED ?= $(shell date +%s)
test-order: install
	$(BIN)/python -m pytest -p randomly --randomly-seed=$(SEED) --keep-duplicates tests tests

# The browser of the explorer's browser tests (tests/app/test_explorer_browser.py): Debian's chromium,
# installed with apt-get when /usr/bin/chromium is missing. Never fails: without it those tests skip and say why.
chromium:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: /usr/bin/chromium"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=""; if [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi; \
		( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium ) \
			|| echo "chromium could not be installed: the browser tests will be skipped"; \
	else echo "no apt-get: chromium not installed, the browser tests will be skipped"; fi

bench: install
	$(BIN)/python benchmarks/speed.py
