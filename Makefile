# Two commands set everything up on a fresh machine:
#   make repro   - create .venv if missing, install, run the whole study (dvc repro)
#   make test    - the same set-up, then the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

RAY_ADDRESS ?=

.PHONY: install repro repro-ray test test-fast ui plots bench readme-numbers clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-input -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import cxrprune, torch, dvc, mlflow" || { echo "install failed"; exit 1; }
	@touch $@

install: $(STAMP)

repro: install
	dvc repro

# Per-seed stages as parallel Ray tasks (empty RAY_ADDRESS: a local runtime), then dvc repro.
repro-ray: install
	cxrprune repro --ray $(RAY_ADDRESS)

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

ui: install
	mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

plots: install
	dvc plots show --open 2>/dev/null || dvc plots show

bench: install
	$(BIN)/python benchmarks/bench_evaluate.py --blocks 60

readme-numbers: install  # refresh every README result/benchmark number from the committed outputs
	$(BIN)/python benchmarks/readme_numbers.py --write

clean:
	rm -rf $(VENV) .pytest_cache
