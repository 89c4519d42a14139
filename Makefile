# Envoi — `make run` starts everything on embedded defaults; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run demo test lint typecheck unit clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/envoi run

demo: install
	$(BIN)/envoi demo --contacts $${CONTACTS:-10000}

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# The suite runs on SQLite, then on PostgreSQL when ENVOI_TEST_POSTGRES_URL names a server (.ci/run starts one).
test: install lint typecheck
	$(BIN)/pytest
	@if [ -n "$$ENVOI_TEST_POSTGRES_URL" ]; then \
		echo "== the suite again on PostgreSQL =="; \
		ENVOI_TEST_DB=postgresql $(BIN)/pytest tests/integration; \
	else \
		echo "NOTE: ENVOI_TEST_POSTGRES_URL is not set: the PostgreSQL pass was not run (see .ci/run)"; \
	fi

unit: install
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
