# The two commands of the README (make repro, make test):
#   make repro   install, create the default dataset when absent, rebuild every result (dvc repro)
#   make test    install, lint, run the unit tests and the notebooks (nbval); make test-slow: the slow tests
# VENV=... points at an existing environment instead of ./.venv (e.g. VENV=$CONDA_PREFIX).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
# the interpreter dvc.yaml's commands use (bin/python): this environment
export DEEPFAKE_PYTHON := $(abspath $(BIN))/python
export MPLBACKEND := Agg
export DVC_NO_ANALYTICS := 1
PYTEST_ARGS ?=
# A CPU-only machine can take PyTorch's CPU wheels (under 1 GB) instead of PyPI's CUDA builds (the
# environment is 6.8 GB with their CUDA libraries; both run on a CPU):
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Empty (the default, and what CI uses: CI reaches PyPI only): torch and torchvision come from PyPI.
# Either way at the versions constraints.txt names (the CPU index's build of the same release).
TORCH_INDEX ?=
# The tested set of versions every install takes (pip -c); make lock renews it.
CONSTRAINTS := constraints.txt
LOCK_ARGS ?=

.PHONY: install lock data repro test test-slow test-all lint cross screenshot clean-quick remote-s3 remote-ssh remote-dir push pull

install: $(VENV)/.deepfake-installed

$(VENV)/.deepfake-installed: pyproject.toml $(CONSTRAINTS)
	@echo "==> [1/3] Python environment $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --progress-bar on --index-url $(TORCH_INDEX) $$(grep -E '^(torch|torchvision)==' $(CONSTRAINTS)))
	@echo "==> [2/3] the package and its dependencies at the versions of $(CONSTRAINTS) (PyTorch is large: a few minutes; pip lists each package)"
	$(BIN)/python -m pip install --progress-bar on -c $(CONSTRAINTS) -e ".[dev]"
	@echo "==> [3/3] check: the package and its main dependencies import"
	$(BIN)/python -c "import deepfake, torch, torchvision, cv2, dlib, dvclive; print('deepfake', deepfake.__version__, '| torch', torch.__version__, '| torchvision', torchvision.__version__, '| opencv', cv2.__version__)"
	touch $@

# Renews constraints.txt: pip resolves pyproject.toml's ".[dev]" afresh (newest versions allowed, the
# installed ones ignored) for this Python and platform and the file is written only when that succeeds.
# LOCK_ARGS adds requirements to the resolution, e.g. make lock LOCK_ARGS='"boto3<1.43.118"' where two
# upstream packages disagree. Then make test, and commit constraints.txt with what it changed.
lock: install
	$(BIN)/python .ci/lock.py $(CONSTRAINTS) $(LOCK_ARGS)

# Renders the embedded dataset when data/raw is absent, then takes the inventory of data.raw_dir (each file's
# SHA-256, read once; reports/inventory/inventory.csv) and says whether it is the dataset of the committed
# results. DVC does not track the dataset folder: it would read every byte of it and hang on a FIFO there.
data: install
	$(BIN)/python -m deepfake synth --if-missing
	$(BIN)/python -m deepfake inventory
	@if git diff --quiet -- reports/inventory/inventory.csv 2>/dev/null; then \
		echo "the dataset matches reports/inventory/inventory.csv: the one the committed results were made from"; \
	else \
		echo "note: the dataset differs from the committed reports/inventory/inventory.csv (see git diff): results will differ from the committed reports"; \
	fi

repro: data
	$(BIN)/python -m deepfake check-params
	$(BIN)/dvc repro

# ruff (lint and format) and mypy, as CI runs them
lint: install
	$(BIN)/ruff check deepfake tests benchmarks .ci
	$(BIN)/ruff format --check deepfake tests benchmarks .ci
	$(BIN)/mypy

# make test: lint, then every test but the slow ones, and the notebooks (about 5 minutes on 2 cores).
# make test-slow: the slow ones, the user's commands end to end (dvc repro, the CLI, torchrun on two
# "nodes", queued experiments, the S3 remote, the demo in a browser; about 25 minutes). CI runs both;
# make test-all runs everything in one pytest session. TESTS: a pytest -m expression (empty: all).
TESTS ?= not slow
test: install clean-quick lint
	$(BIN)/python -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg $(if $(TESTS),-m "$(TESTS)") \
		tests notebooks $(PYTEST_ARGS)

test-slow: install clean-quick
	$(BIN)/python -m pytest -m slow tests $(PYTEST_ARGS)

test-all:
	$(MAKE) test TESTS=

# The browser test of the demo notebook, keeping its screenshot of the widget for the README (needs
# Chromium); docs/, not reports/: it pictures the demo, not a result of the pipeline
screenshot: install clean-quick
	DEEPFAKE_SCREENSHOT=docs/demo_widget.png $(BIN)/python -m pytest tests/test_browser.py -q

# Cross-dataset test of the trained model on another dataset folder, without retraining:
#   make cross CROSS_DATA=../shared/real-faces/yonsei-rffd CROSS_NAME=yonsei   -> reports/cross/yonsei/
# (or name it under cross_dataset in params.yaml and run dvc repro: stage cross@NAME)
CROSS_NAME ?= other
cross: install
	test -n "$(CROSS_DATA)" || { echo "set CROSS_DATA=<folder with real/ and fake/ or a manifest.csv>"; exit 2; }
	mkdir -p reports/notebooks
	$(BIN)/python -m deepfake stage notebooks/03b_cross_dataset.ipynb "reports/notebooks/cross_$(CROSS_NAME).ipynb" \
		-p params_file params.yaml -p quick False -p name "$(CROSS_NAME)" -p data_dir "$(CROSS_DATA)"

clean-quick:
	rm -rf build/quick

# A shared DVC remote (docs/remote.md): one clone pushes the face cache and the models, every other pulls them.
#   make remote-s3 URL=s3://BUCKET/PATH [ENDPOINT=http://HOST:9000]   AWS S3; MinIO or Ceph through ENDPOINT
#   make remote-ssh URL=ssh://USER@HOST/PATH                           a server reached by SSH
#   make remote-dir DIR=/shared/deepfake-dvc                           a folder every machine mounts (NFS, SMB)
#   make push      dvc push: cache/faces and models as dvc.lock names them
#   make pull      dvc pull, then make data (the default dataset rendered when absent, its inventory):
#                  the demo works, and dvc repro runs the inventory and nothing else
# Each remote-* target makes its remote the default, named shared, in the committed .dvc/config (URL and
# endpoint only); credentials go to the git-ignored .dvc/config.local: dvc remote modify --local shared ...
# The plugin of an s3:// or ssh:// remote is installed when missing, through the package's extra.
URL ?=
ENDPOINT ?=
DIR ?=

remote-s3: install
	@test -n "$(URL)" || { echo "set URL=s3://BUCKET/PATH (and ENDPOINT=http://HOST:PORT for MinIO or Ceph)"; exit 2; }
	$(BIN)/python -c "import dvc_s3" 2>/dev/null || $(BIN)/python -m pip install -c $(CONSTRAINTS) -e ".[s3]"
	$(BIN)/python -m deepfake remote add "$(URL)" $(if $(ENDPOINT),--endpoint "$(ENDPOINT)")

remote-ssh: install
	@test -n "$(URL)" || { echo "set URL=ssh://USER@HOST/PATH"; exit 2; }
	$(BIN)/python -c "import dvc_ssh" 2>/dev/null || $(BIN)/python -m pip install -c $(CONSTRAINTS) -e ".[ssh]"
	$(BIN)/python -m deepfake remote add "$(URL)"

remote-dir: install
	@test -n "$(DIR)" || { echo "set DIR=/a/folder/every/machine/mounts"; exit 2; }
	$(BIN)/python -m deepfake remote add "$(DIR)"

push: install
	$(BIN)/python -m deepfake remote push

pull: install
	$(BIN)/python -m deepfake remote pull
	@$(MAKE) --no-print-directory data
