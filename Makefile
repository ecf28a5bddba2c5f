# fusionrank developer commands. `make help` lists them.

PYTHON   ?= python
PIP      ?= $(PYTHON) -m pip
DATA_DIR ?= .fusionrank
HOST     ?= 127.0.0.1
PORT     ?= 8000
CATALOG  ?= demo/catalog.csv
# The exact pin matters: a looser one pulls a multi-GB CUDA build. A no-op when already installed.
TORCH    ?= torch==2.13.0

.DEFAULT_GOAL := help
.PHONY: help install install-dev run ingest test bench lint demo

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: DATA_DIR=$(DATA_DIR) HOST=$(HOST) PORT=$(PORT) CATALOG=$(CATALOG) PYTHON=$(PYTHON)"

install: ## Install fusionrank (CPU torch first)
	$(PIP) install $(TORCH)
	$(PIP) install -e .

install-dev: ## Install fusionrank with the dev tools (pytest, httpx, ruff, mypy)
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[dev]'

ingest: ## Ingest CATALOG into DATA_DIR (always; replaces the catalog)
	fusionrank ingest $(CATALOG) --data-dir $(DATA_DIR)

run: install ## Install, ingest the demo catalog if DATA_DIR has no index yet, serve on HOST:PORT
	@if [ -f "$(DATA_DIR)/index/CURRENT" ]; then \
		echo "index found in $(DATA_DIR); skipping ingest (make ingest to rebuild)"; \
	else \
		fusionrank ingest $(CATALOG) --data-dir $(DATA_DIR); \
	fi
	fusionrank serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: install-dev ## Install with dev tools and run the test suite (needs PostgreSQL on CI)
	$(PYTHON) -m pytest -q

bench: ## Run every benchmark on the full catalog (results in benchmarks/results/)
	$(PYTHON) -m benchmarks.quality
	$(PYTHON) -m benchmarks.latency
	$(PYTHON) -m benchmarks.encoder_warmth
	$(PYTHON) -m benchmarks.feedback
	$(PYTHON) -m benchmarks.hot_swap
	$(PYTHON) -m benchmarks.refresh_under_load
	$(PYTHON) -m benchmarks.learning_curve

lint: ## ruff lint + format check
	ruff check . && ruff format --check .

demo: ## Regenerate demo/ from ../shared/data/fashion (seeded, 1,900 products)
	$(PYTHON) scripts/make_demo_catalog.py
