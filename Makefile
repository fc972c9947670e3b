# relaydesk — two commands on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
HOST    ?= 127.0.0.1
PORT    ?= 8420
DATA    ?= var
# Test workers: the suite mostly waits on the nodes it starts, so three share two cores well.
TEST_WORKERS ?= 3

JSDEPS  := tests/web/js/node_modules/.installed

.PHONY: install run test lint typecheck bench clean

# pip prints one line per package it collects or installs, so a first `make run`
# (about 30 s) shows where it is instead of sitting silent.
$(STAMP): pyproject.toml
	@echo "== relaydesk: installing into $(VENV) (first run or pyproject.toml changed)"
	@test -x $(BIN)/python || { echo "== creating $(VENV)"; $(PY) -m venv $(VENV); }
	@echo "== upgrading pip"
	@$(BIN)/python -m pip install -q --upgrade pip
	@echo "== installing relaydesk and its dependencies"
	@$(BIN)/python -m pip install --progress-bar off -e '.[test,bench]'
	@touch $(STAMP)
	@echo "== installed"

# playwright-core for the browser tests (drives Debian's /usr/bin/chromium).
$(JSDEPS): tests/web/js/package-lock.json
	cd tests/web/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JSDEPS)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/relaydesk serve --host $(HOST) --port $(PORT) --data-dir $(DATA) --demo

test: $(STAMP) $(JSDEPS)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=30

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache
