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

.PHONY: install data repro test lint cross screenshot clean-quick

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
	$(BIN)/python -m deepfake check-params
	$(BIN)/dvc repro

# ruff (lint and format) and mypy, as CI runs them
lint: install
	$(BIN)/ruff check deepfake tests benchmarks
	$(BIN)/ruff format --check deepfake tests benchmarks
	$(BIN)/mypy

test: install clean-quick lint
	$(BIN)/python -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks $(PYTEST_ARGS)

# The browser test of the demo notebook, keeping its screenshot of the widget (needs Chromium)
screenshot: install clean-quick
	DEEPFAKE_SCREENSHOT=reports/figures/demo_widget.png $(BIN)/python -m pytest tests/test_browser.py -q

# Cross-dataset test of the trained model on another dataset folder, without retraining:
#   make cross CROSS_DATA=../shared/real-faces/yonsei-rffd CROSS_NAME=yonsei   -> reports/cross/yonsei/
# (or name it under cross_dataset in params.yaml and run dvc repro: stage cross@NAME)
CROSS_NAME ?= other
cross: install
	test -n "$(CROSS_DATA)" || { echo "set CROSS_DATA=<folder with real/ and fake/ or a manifest.csv>"; exit 2; }
	mkdir -p reports/notebooks
	$(BIN)/papermill notebooks/03b_cross_dataset.ipynb "reports/notebooks/cross_$(CROSS_NAME).ipynb" --no-progress-bar \
		-p params_file params.yaml -p quick False -p name "$(CROSS_NAME)" -p data_dir "$(CROSS_DATA)"

clean-quick:
	rm -rf build/quick
