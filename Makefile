# Set-up, main job and tests. `make search` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of this version is what CI installs; on a GPU machine the same pin pulls the
# CUDA build from PyPI. Override with e.g. `make setup TORCH_SPEC='torch>=2.3'`.
TORCH_SPEC ?= torch==2.13.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: setup search test lint bench gpu-bundle clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v gfortran >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq gfortran; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

search: setup
	$(BIN)/eqcvt-search

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/models.py
	$(BIN)/python bench/data.py
	$(BIN)/python bench/search.py

# The offline wheels for the GPU machine (scripts/gpu_bundle.py; README "GPU speed"); needs a
# Python 3.12 here (PY312=...) to build py3nj and lie_learn's extension for cp312.
PY312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
	$$p -c '' 2>/dev/null && echo $$p && break; done)
gpu-bundle: setup
	@test -n "$(PY312)" || { echo "no python3.12 on PATH: make gpu-bundle PY312=/path/to/python3.12"; exit 1; }
	rm -rf gpu_bundle
	$(BIN)/python scripts/gpu_bundle.py --out gpu_bundle --python312 $(PY312)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
