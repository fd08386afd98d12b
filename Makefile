# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format clean demo bench bench-quick

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/imagesync serve

demo: install
	$(BIN)/imagesync demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmark suite (bench/README.md): the 1x and 10x catalogs in both modes; long.
bench: install
	$(BIN)/python bench/run.py

# A smoke run of the same suite for CI: every answer 2xx, every job done; no speed asserted.
bench-quick: install
	$(BIN)/python bench/run.py --quick

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
