# tcplab — one command to try it, one to test it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint unit integration bench clean-lab clean compose-smoke

$(BIN)/tcplab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	@touch $@

## demo: a short tour in slow motion: the handshake and teardown, then a lost last ACK
demo: $(BIN)/tcplab
	$(BIN)/tcplab run handshake-and-teardown
	$(BIN)/tcplab run lost-last-ack --pace 100ms

## test: lint (ruff, mypy, the import layers) and the whole test suite
test: lint
	$(BIN)/pytest

lint: $(BIN)/tcplab
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(BIN)/tcplab
	$(BIN)/pytest tests/unit

integration: $(BIN)/tcplab
	$(BIN)/pytest tests/integration

bench: $(BIN)/tcplab
	$(BIN)/python benchmarks/observer_dump.py

## compose-smoke: build the image, run the compose demo, inject a fault, tear down
compose-smoke:
	bash tests/compose/smoke.sh

clean-lab: $(BIN)/tcplab
	$(BIN)/tcplab clean

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
