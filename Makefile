# fusionrank developer commands. `make help` lists them.
#
# Everything runs in a virtual environment: the active one if there is one ($VIRTUAL_ENV), else
# .venv here, created with python3 on first use.

VENV     ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PYTHON   := $(VENV)/bin/python
PIP      := $(PYTHON) -m pip
BIN      := $(VENV)/bin
DATA_DIR ?= .fusionrank
HOST     ?= 127.0.0.1
PORT     ?= 8000
CATALOG  ?= demo/catalog.csv
# The exact pin matters: a looser one pulls a multi-GB CUDA build. A no-op when already installed.
TORCH    ?= torch==2.13.0

.DEFAULT_GOAL := help
.PHONY: help install install-dev run ingest test test-fast bench lint demo

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: VENV=$(VENV) DATA_DIR=$(DATA_DIR) HOST=$(HOST) PORT=$(PORT) CATALOG=$(CATALOG)"

$(PYTHON):
	python3 -m venv $(VENV)

install: $(PYTHON) ## Install fusionrank into the virtual environment (CPU torch first)
	$(PIP) install $(TORCH)
	$(PIP) install -e .

install-dev: $(PYTHON) ## Install fusionrank with the dev tools (pytest, ruff, mypy)
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[dev]'

ingest: ## Ingest CATALOG into DATA_DIR (always; replaces the catalog, updating the index in place)
	$(BIN)/fusionrank ingest $(CATALOG) --data-dir $(DATA_DIR)

run: install ## Install, ingest the demo catalog if DATA_DIR has no index yet, serve on HOST:PORT
	@if [ -f "$(DATA_DIR)/index/CURRENT" ]; then \
		echo "index found in $(DATA_DIR); skipping ingest (make ingest to update it)"; \
	else \
		$(BIN)/fusionrank ingest $(CATALOG) --data-dir $(DATA_DIR); \
	fi
	$(BIN)/fusionrank serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: install-dev ## Install with dev tools and run the whole test suite (needs PostgreSQL on CI)
	$(PYTHON) -m pytest -q

test-fast: ## The inner loop: tests not marked slow, stopping at the first failure
	$(PYTHON) -m pytest -q -x -m "not slow"

bench: ## Run every benchmark on the full catalog (results in benchmarks/results/)
	$(PYTHON) -m benchmarks.quality
	$(PYTHON) -m benchmarks.latency
	$(PYTHON) -m benchmarks.encoders
	$(PYTHON) -m benchmarks.encode_threads
	$(PYTHON) -m benchmarks.encoder_warmth
	$(PYTHON) -m benchmarks.feedback
	$(PYTHON) -m benchmarks.hot_swap
	$(PYTHON) -m benchmarks.load
	$(PYTHON) -m benchmarks.refresh_under_load
	$(PYTHON) -m benchmarks.learning_curve
	$(PYTHON) -m benchmarks.ablations
	$(PYTHON) -m benchmarks.hybrid
	$(PYTHON) -m benchmarks.lexical_engines
	$(PYTHON) -m benchmarks.titles_ingest
	$(PYTHON) -m benchmarks.query_memory --catalog fashion
	$(PYTHON) -m benchmarks.query_memory --catalog titles
	$(PYTHON) -m benchmarks.memory_scale
	$(PYTHON) -m benchmarks.million
	$(PYTHON) -m benchmarks.vector_backends

lint: ## ruff lint + format check, mypy
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

demo: ## Regenerate demo/ from ../shared/data/fashion (seeded, 1,900 products)
	$(PYTHON) scripts/make_demo_catalog.py
