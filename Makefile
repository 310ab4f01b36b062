# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine:
# they create .venv, install Python and npm dependencies, and clean up what they start.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test ui lint check format bench setup browser clean test-lake bench-lake \
	test-readers test-containers

# The project's own modules are compiled to bytecode here: where PYTHONDONTWRITEBYTECODE is set
# (CI images, containers) Python would otherwise compile them again in every process.
setup: $(VENV)/.installed node_modules/.installed
	@$(PY) -m compileall -q azexport_assets benchmarks

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The lake environment: DuckDB 1.5.5 with the DuckLake/postgres/azure extension wheels,
# dagster-postgres and the run launchers (docs/deploy.md). Its tests start their own Postgres
# and Azurite.
LAKE_VENV := .venv-lake
LAKE_PY := $(LAKE_VENV)/bin/python

$(LAKE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LAKE_VENV)
	$(LAKE_PY) -m pip install --quiet --upgrade pip
	$(LAKE_PY) -m pip install --quiet -e '.[dev,lake,deploy]'
	touch $@

# The readers environment: the exported files read back by Spark (pyspark 3.5, Java 17 from
# apt), Polars and pandas with the options of docs/readers.md. Its tests are marked `readers`.
READERS_VENV := .venv-readers
READERS_PY := $(READERS_VENV)/bin/python

$(READERS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(READERS_VENV)
	$(READERS_PY) -m pip install --quiet --upgrade pip
	$(READERS_PY) -m pip install --quiet -e '.[dev,readers]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Runs every demo activation through Dagster (dg dev / dagster dev, GraphQL) and lists the
# blobs written; the runs stay in the run history that `make ui` shows.
demo: setup
	$(PY) -m azexport_assets.demo

test: setup browser
	$(PY) -m pytest

# Chromium and its driver for the browser test (apt-get as root or with passwordless sudo);
# without them the test is skipped with a line saying what to install.
browser:
	@.ci/install-browser

test-lake: $(LAKE_VENV)/.installed node_modules/.installed
	$(LAKE_PY) -m pytest -m lake

test-readers: $(READERS_VENV)/.installed node_modules/.installed
	$(READERS_PY) -m pytest -m readers

# The deploy image on a Docker host (rootful podman): builds deploy/Dockerfile and runs every
# activation in a container of its own (docs/deploy.md). Where podman cannot start
# containers, the suite is skipped with one line saying why.
test-containers: $(LAKE_VENV)/.installed node_modules/.installed
	$(LAKE_PY) -m pytest -m containers

# The Dagster UI on the demo's setup: `dg dev` when installed, else `dagster dev -w
# workspace.yaml`, on $(DAGSTER_PORT) (default 3000). Ctrl-C stops everything it started.
ui: setup
	$(PY) -m azexport_assets.demo.ui

# dg runs with the project's venv as the active one and a Dagster home without telemetry.
DG_HOME := .azexport/dagster_home

lint: check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every defs.yaml folder with `dg check yaml <folder>` (the whole-project `dg check yaml`
# validates one file per component type), then `dg check defs` (SQL, names, references).
check: setup $(DG_HOME)/dagster.yaml
	VIRTUAL_ENV=$(CURDIR)/$(VENV) DAGSTER_HOME=$(CURDIR)/$(DG_HOME) $(PY) -m azexport_assets.dg_check

$(DG_HOME)/dagster.yaml:
	mkdir -p $(@D)
	printf 'telemetry:\n  enabled: false\n' > $@

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# `make bench BENCH_ARGS="--only run --quick"`: options as in docs/benchmarks.md.
bench: setup
	$(PY) -m benchmarks $(BENCH_ARGS)

bench-lake: $(LAKE_VENV)/.installed node_modules/.installed
	$(LAKE_PY) -m benchmarks.lake

clean:
	rm -rf .azexport
