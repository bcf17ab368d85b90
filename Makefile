# One-command set-up: `make reproduce` (the main job: every figure of the paper, `reproduce quick`)
# and `make test` (the whole suite) both create .venv, install torch==2.13.0 first when the venv has
# no torch (the CPU wheel; a CUDA torch you installed yourself is kept), then the package with its
# dev extras. `make demo` is the seconds-long measurement tour.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.diffeoprobe-installed
OUT ?= out/demo
REPRO ?= out/quick

.PHONY: setup data browser compiler reproduce demo test lint bench clean

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

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

test: setup data browser compiler lint
	$(PY) -m pytest

# Every benchmark, with kornia (the `bench` extra: one row compares against it).
bench: setup compiler
	$(PY) -c "import kornia" 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .hypothesis
