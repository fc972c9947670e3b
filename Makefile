# relaydesk — two commands on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
HOST    ?= 127.0.0.1
PORT    ?= 8420
DATA    ?= var

JSDEPS  := tests/web/js/node_modules/.installed

.PHONY: install run test lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

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
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache
