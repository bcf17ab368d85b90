# One-command set-up: `make reproduce` (the main job: every figure of the paper, `reproduce quick`)
# and `make test` (the whole suite) both create .venv, install torch==2.13.0 first when the venv has
# no torch (the CPU wheel; a CUDA torch you installed yourself is kept), then the package with its
# dev extras (pytest, ruff, mypy, pre-commit). `make demo` is the seconds-long measurement tour;
# `make lint` runs ruff and mypy, `make test-fast` the suite without the slow scientific checks.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.diffeoprobe-installed
OUT ?= out/demo
REPRO ?= out/quick

.PHONY: setup data browser compiler reproduce demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST from Debian, when this is a Debian machine and we are root; optional everywhere.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "note: could not install dataset-fashion-mnist; its tests will be skipped"; \
	fi

# Headless Chromium, which the report's browser test uses; as root on Debian only, optional.
browser:
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "note: could not install chromium; the browser test of the report will be skipped"; \
	fi

# A C compiler, which builds the native Gaussian remap on first use (without one, the slower
# PyTorch formulation runs); as root on Debian only, optional.
compiler:
	@if ! command -v cc >/dev/null && ! command -v gcc >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null) \
		|| echo "note: could not install gcc; the Gaussian remap will use its PyTorch formulation"; \
	fi

# The paper end to end on 2 CPU cores (about 20 minutes): figures, results.parquet, report.html.
# Interrupted? Run it again: finished runs and figures are kept.
reproduce: setup data compiler
	$(VENV)/bin/diffeoprobe reproduce quick --out $(REPRO)
	@echo "open $(REPRO)/report.html"

demo: setup data compiler
	mkdir -p $(OUT)
	$(VENV)/bin/diffeoprobe measure --dataset scale-detection --probe-size 500 --out $(OUT)/scale-detection.parquet
	@if [ -d /usr/share/datasets/fashion-mnist ]; then \
		$(VENV)/bin/diffeoprobe measure --dataset fashionmnist --probe-size 500 --out $(OUT)/fashionmnist.parquet && \
		$(VENV)/bin/diffeoprobe deform --dataset fashionmnist --out $(OUT)/deform.png; \
	else \
		$(VENV)/bin/diffeoprobe deform --dataset scale-detection -d dim=2 -d d=28 -d xi=14 --out $(OUT)/deform.png; \
	fi
	@echo "results in $(OUT)/"

# ruff (rules and format) on all the Python, mypy on the package (configured in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/mypy

# What CI runs (.ci/run): set-up, lint, the whole suite.
test: setup data browser compiler lint
	$(PY) -m pytest

# The suite without the tests marked slow (the scientific checks of tens of seconds each).
test-fast: setup data browser compiler
	$(PY) -m pytest -m "not slow"

# Every benchmark, with kornia (the `bench` extra: one row compares against it).
bench: setup compiler
	$(PY) -c "import kornia" 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .mypy_cache .hypothesis
