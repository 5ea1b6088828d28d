# Two commands a new user needs: `make run` (the whole stack) and `make test` (the suite).
# Both install what is missing: Debian packages (apt-get, as root) and the project's venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_STAMP := var/.apt-installed

# Debian packages the stack and its tests use (Kamailio 5.6, SIPp, baresip, PostgreSQL,
# Chromium and its driver for the console's browser test).
APT_PACKAGES := kamailio kamailio-python3-modules kamailio-sqlite-modules \
	kamailio-postgres-modules kamailio-json-modules kamailio-utils-modules \
	sip-tester baresip-core postgresql iproute2 util-linux procps \
	chromium chromium-driver

PYTEST_ARGS ?=

.PHONY: all deps apt venv test test-fast lint run demo bench clean

all: test

deps: apt venv

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

test: deps
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

# The fast subset: everything but the interop tests with real outside peers.
test-fast: venv
	$(PY) -m pytest -n 2 -m "not interop and not slow" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check app tests kamailio
	$(VENV)/bin/ruff format --check app tests kamailio
	$(VENV)/bin/mypy --strict app
	$(VENV)/bin/lint-imports

run: deps
	$(PY) -m app.cli stack

demo: deps
	$(PY) -m app.cli demo

bench: deps
	$(PY) tests/bench/run_all.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
