# Two entry points for a fresh machine (Debian, Python 3.11): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# On these machines torch 2.14.1 / torchvision 0.29.1 lie on disk; elsewhere pip gets them from PyPI.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench

$(BIN)/camscope: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/camscope

install: $(BIN)/camscope

demo: install
	$(BIN)/camscope demo --out camscope-out

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/speed.py
