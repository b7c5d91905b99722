# Quick start: `make demo` (install + run the pipeline on generated samples), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install system-deps demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/egocurate demo --out demo_output

test: $(STAMP) system-deps
	$(BIN)/ruff check egocurate tests benchmarks
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not gpu" -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check egocurate tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format egocurate tests benchmarks
	$(BIN)/ruff check --fix egocurate tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf demo_output .pytest_cache .ruff_cache build *.egg-info
