# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := chromium redis-server
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: demo test lint typecheck pytest system-deps conformance conformance-quick bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench,redis]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m aiohttp.web -H $(HOST) -P $(PORT) demo.chat:init_app

# Installs Debian's chromium and redis-server when run as root (as CI does); otherwise
# says what to run. The tests start redis-server themselves, on a free port.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "Missing system packages. Run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check aiohttp_upgrade tests demo benchmarks conformance
	$(VENV)/bin/ruff format --check aiohttp_upgrade tests demo benchmarks conformance

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

pytest: $(VENV)/.installed system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

conformance: $(VENV)/.installed
	bash conformance/run.sh full

conformance-quick: $(VENV)/.installed
	bash conformance/run.sh quick

bench: $(VENV)/.installed
	$(PY) benchmarks/echo.py
	$(PY) benchmarks/fanout.py
	$(PY) benchmarks/backpressure.py
	$(PY) benchmarks/connections.py
	$(PY) benchmarks/cluster.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
