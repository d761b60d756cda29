# Two commands set everything up on a fresh machine:
#   make repro   - create .venv if missing, install, run the whole study (dvc repro)
#   make test    - the same set-up, then the test suite
# `make help` lists every target.
VENV ?= .venv
PYTHON ?= python3
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

# Every transitive pin of `.[test]` for Linux x86_64 and Python 3.11 (pip-compile; `make lock`).
# Elsewhere, `make LOCK= install` installs from pyproject.toml's ranges instead.
LOCK ?= requirements.lock
PIP_TOOLS := pip-tools==7.6.2
LOCK_TOOLS := .venv-lock-tools

# `make test BROWSER_TESTS=0` deselects the browser tests instead of installing Chromium.
BROWSER_TESTS ?= 1
# Test processes (pytest-xdist). The end-to-end tests spend most of their time in
# single-threaded stage processes and in waits (Ray start-up, MLflow's sqlite writes, the
# shared study's lock): with two workers the suite kept 1.04 of 2 cores busy on the AVX2 kind
# (user+sys CPU over wall time, `time bash .ci/run`), so a third fills the gaps. Whole files
# go to one worker (--dist loadfile): a module's workspace is built once. A fourth was measured
# no faster (AMD EPYC with AVX-512, fresh clone: pytest 1,036 s against 1,047 s with three, CPU
# 151% against 145% of 2 cores). TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 3
# --no-loadscope-reorder: keep tests/conftest.py's file order (pytest-xdist would otherwise hand
# out the files with the most tests first, and a long end-to-end file could start last).
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
UI_PORT ?= 5000
# One browser on this machine needs one server process; MLflow's default of four starts four
# processes that each import MLflow first (UI_WORKERS=4 for a server shared by a team).
UI_WORKERS ?= 1

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

RAY_ADDRESS ?=
# More `cxrprune repro --ray` options, e.g. RAY_ARGS="--cpus 8 --targets studies/pie-treatment/dvc.yaml".
RAY_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install repro repro-ray test test-fast browser exp-show metrics plots ui bench lock readme-numbers clean

help: ## list the targets
	@echo "usage: make TARGET   (then, for dvc/mlflow/cxrprune commands: source $(VENV)/bin/activate)"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# pip's output without the "Location ... is ignored" lines of unused local indexes; its status kept.
pip = out=$$($(BIN)/python -m pip install --quiet --no-input $(1) 2>&1) || { echo "$$out"; echo "pip install $(1) failed"; exit 1; }; \
	printf '%s\n' "$$out" | grep -v -e "^WARNING: Location" -e "^$$" || true

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(call pip,$(if $(LOCK),-r $(LOCK),-e '.[test]'))
	@$(if $(LOCK),$(call pip,--no-deps -e .))
	@$(BIN)/python -c "import cxrprune, torch, dvc, mlflow" || { echo "install failed"; exit 1; }
	@touch $@

install: $(STAMP) ## create .venv if missing and install the pinned dependencies and cxrprune

repro: install ## run the whole study (dvc repro)
	dvc repro

# Per-seed stages as parallel Ray tasks (empty RAY_ADDRESS: a local runtime), then dvc repro.
repro-ray: install ## train@s/prune@s as Ray tasks, then dvc repro (RAY_ADDRESS=host:port joins a cluster; RAY_ARGS=more options)
	cxrprune repro --ray $(RAY_ADDRESS) $(RAY_ARGS)

# A browser test that skips would pass silently: under `make test` a missing Chromium is
# installed (root or password-less sudo with apt-get) or the run stops with the command to run.
test: install $(if $(filter 0,$(BROWSER_TESTS)),,browser) ## the test suite, browser tests included (BROWSER_TESTS=0: without them)
	CXRPRUNE_REQUIRE_BROWSER=$(BROWSER_TESTS) $(BIN)/python -m pytest $(XDIST) $(if $(filter 0,$(BROWSER_TESTS)),-m "not browser")

test-fast: install ## the tests without the end-to-end dvc repro and browser tests
	$(BIN)/python -m pytest $(XDIST) -m "not slow"

APT_CHROMIUM := apt-get install -y chromium chromium-driver
browser: ## install Debian's chromium and chromium-driver for the browser tests, if missing
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=no; fi; \
	if [ "$$SUDO" = no ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "The browser tests need Chromium and chromedriver, which are not installed. Run:"; \
	  echo "    sudo $(APT_CHROMIUM)"; \
	  echo "(or your system's equivalent), or skip them: make test BROWSER_TESTS=0"; exit 1; \
	fi; \
	echo "installing chromium and chromium-driver for the browser tests (BROWSER_TESTS=0 skips them)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	{ $$SUDO apt-get update -qq && $$SUDO $(APT_CHROMIUM) -qq; } </dev/null >/dev/null || \
	  { echo "installing Chromium failed; run: sudo $(APT_CHROMIUM)  (or: make test BROWSER_TESTS=0)"; exit 1; }

exp-show: install ## the experiments table (dvc exp show --only-changed)
	dvc exp show --only-changed

metrics: install ## the headline metrics (dvc metrics show)
	dvc metrics show

# .dvc/config points plots.html_template at plots/templates/offline.html (Vega bundled), so
# the page renders without network; a plain `dvc plots show` writes the same page.
plots: install ## interactive plots page dvc_plots/index.html that works offline
	dvc plots show

# MLflow 3 opens an experiment in its GenAI (traces) view; workflowType=machine_learning opens
# the runs table. The id is read from the local store, without starting MLflow.
ui: install ## MLflow UI of the local store (mlflow.db); prints the address of the runs table
	@$(BIN)/python -c 'import os, sqlite3, yaml; \
	name = (yaml.safe_load(open("params.yaml")).get("mlflow") or {}).get("experiment", "cxrprune"); \
	row = os.path.exists("mlflow.db") and sqlite3.connect("file:mlflow.db?mode=ro", uri=True).execute( \
	    "SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchone(); \
	base = "http://127.0.0.1:$(UI_PORT)"; \
	print(f"runs of experiment {name!r}: {base}/#/experiments/{row[0]}?workflowType=machine_learning" if row \
	      else f"no experiment {name!r} in mlflow.db yet (run make repro); MLflow: {base}")'
	mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(UI_PORT) --workers $(UI_WORKERS)

bench: install ## the evaluation benchmark (benchmarks/bench_evaluate.py)
	$(BIN)/python benchmarks/bench_evaluate.py --blocks 60

# pip-compile keeps the pins already in $(LOCK) and adds what pyproject.toml newly needs;
# UPGRADE=1 moves every pin to the newest release, UPGRADE_PACKAGE=name only that one.
# Its own venv, so the project's venv holds exactly the lock.
lock: ## regenerate requirements.lock from pyproject.toml (UPGRADE=1: newest of everything)
	@test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) && \
	  $(LOCK_TOOLS)/bin/python -m pip install --quiet --no-input $(PIP_TOOLS); }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --extra test --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
	  $(if $(UPGRADE),--upgrade) $(if $(UPGRADE_PACKAGE),--upgrade-package $(UPGRADE_PACKAGE)) \
	  --output-file $(LOCK) pyproject.toml
	@# pip-compile pins what this machine resolves; say for which platform, on top.
	@sed -i '1i # For Linux x86_64 and Python 3.11 (torch wheels pull in nvidia-* there). `make lock` regenerates it.' $(LOCK)

# Every number in README.md, benchmarks/README.md and docs/SCALEOUT.md that comes from an
# output: the operating-point table and the <!-- numbers:NAME --> blocks (after make repro).
readme-numbers: install ## refresh every README number from the committed outputs
	$(BIN)/python benchmarks/readme_numbers.py --write

clean: ## remove .venv and the test caches
	rm -rf $(VENV) $(LOCK_TOOLS) .pytest_cache
