# One-command set-up: `make demo` (the main job) and `make test` (the whole suite) both create
# .venv, install torch==2.13.0 first when the venv has no torch (the CPU wheel; a CUDA torch you
# installed yourself is kept), then the package with its dev extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.diffeoprobe-installed
OUT ?= out/demo

.PHONY: setup data demo test lint bench clean

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

demo: setup data
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
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: setup data lint
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .hypothesis
