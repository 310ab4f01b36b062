# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine:
# they create .venv, install Python and npm dependencies, and clean up what they start.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test ui lint format bench setup clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(PY) -m azexport_assets.demo

test: setup
	$(PY) -m pytest

ui: setup
	$(PY) -m azexport_assets.demo.ui

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# `make bench BENCH_ARGS="--only run --quick"`: options as in docs/benchmarks.md.
bench: setup
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf .azexport
