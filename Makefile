# The two commands of the README:
#   make repro   install, create the default dataset when absent, rebuild every result (dvc repro)
#   make test    install, run the unit tests and the notebooks (nbval)
# VENV=... points at an existing environment instead of ./.venv (e.g. VENV=$CONDA_PREFIX).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export MPLBACKEND := Agg
export DVC_NO_ANALYTICS := 1
PYTEST_ARGS ?=

.PHONY: install data repro test clean-quick

install: $(VENV)/.deepfake-installed

$(VENV)/.deepfake-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

data: install
	$(BIN)/python -m deepfake synth --if-missing
	$(BIN)/dvc status data.dvc

repro: data
	$(BIN)/dvc repro

test: install clean-quick
	$(BIN)/python -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks $(PYTEST_ARGS)

clean-quick:
	rm -rf build/quick
