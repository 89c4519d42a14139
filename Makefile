# Envoi — `make run` starts everything on embedded defaults; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install system-deps run demo test lint typecheck unit clean

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

# Debian tools the tests drive for real: Postfix's smtp-sink (a C SMTP sink; the Postfix service is never started)
# and Chromium (the unsubscribe page). Installed when missing and we are root with apt-get; else we say what to install.
system-deps:
	@missing=""; \
	[ -x /usr/sbin/smtp-sink ] || missing="$$missing postfix"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian packages:$$missing"; \
			guard=""; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
				chmod +x /usr/sbin/policy-rc.d; guard=1; }; \
			DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
			status=$$?; [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; exit $$status; \
		else echo "missing system packages:$$missing — install them (apt-get install$$missing)"; exit 1; fi; \
	fi

# The suite runs on SQLite, then on PostgreSQL when ENVOI_TEST_POSTGRES_URL names a server (.ci/run starts one).
test: install system-deps lint typecheck
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
