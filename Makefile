# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := chromium redis-server
HOST ?= 127.0.0.1
PORT ?= 8080
WORKERS ?= 2
LINTED := aiohttp_upgrade tests demo benchmarks conformance examples tools docs/conf.py

.PHONY: demo demo-cluster test test-pure build-ext test-uvloop test-aiohttp-next lint typecheck pytest system-deps conformance conformance-quick bench clean docs dist check-dist test-matrix bench-chart

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench,docs,redis,demo]'
	touch $@

# The demo on one process needs the package alone (SQLite is in the standard
# library, the broker in-process); on several, gunicorn and redis-py (the demo
# extra). Their own markers, so neither stands for the install above.
$(VENV)/.installed-demo: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-demo-cluster: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[demo]'
	touch $@

demo: $(VENV)/.installed-demo
	$(PY) -m aiohttp.web -H $(HOST) -P $(PORT) demo.chat:init_app

# WORKERS gunicorn workers on one port, sharing data/chat.sqlite3 and Redis: the
# one in DEMO_REDIS_URL, else a redis-server started (and stopped) for the run;
# with DEMO_REDIS_CLUSTER=1, a Redis Cluster (a private one of 6 nodes without URL).
demo-cluster: $(VENV)/.installed-demo-cluster
	$(PY) -m demo.cluster --workers $(WORKERS) --host $(HOST) --port $(PORT)

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
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# The compiled twins of the hot path, built in place (aiohttp_upgrade/*_c.*.so).
# Here a failure (no compiler, a .pxd that no longer fits its .py) fails the build;
# an install without a compiler falls back to pure Python with one line instead.
build-ext: $(VENV)/.installed
	AIOHTTP_UPGRADE_REQUIRE_EXTENSIONS=1 $(PY) setup.py -q build_ext --inplace

pytest: $(VENV)/.installed system-deps build-ext
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The whole suite again on the pure-Python fallback (the compiled twins ignored).
test-pure: $(VENV)/.installed system-deps
	AIOHTTP_UPGRADE_NO_EXTENSIONS=1 $(PY) -m pytest $(PYTEST_ARGS)

# The tests that drive real sockets (and so the event loop's transports, TCP and
# TLS) again on uvloop's event loop: pytest --loop=uvloop. Left out:
# test_pubsub.py, whose tap replaces transport.write, an attribute uvloop's
# transports do not let anyone set.
UVLOOP_TESTS := tests/test_tls.py tests/test_upgrade.py tests/test_compat.py \
	tests/test_websocket_api.py tests/test_close.py tests/test_hostile_frames.py \
	tests/test_hook_failures.py tests/test_flow_control.py tests/test_compression.py \
	tests/test_idle_timeout.py tests/test_slowloris.py tests/test_lifecycle.py \
	tests/test_dispatch.py tests/test_misuse.py tests/test_hardening.py \
	tests/test_fuzz.py tests/test_connection_flood.py tests/test_broker.py \
	tests/test_redis_broker.py tests/test_smoke.py tests/test_readme.py \
	tests/test_docs_examples.py tests/test_docs_testing_example.py \
	tests/test_backpressure_burst.py tests/test_large_frames.py \
	tests/test_subscription_hook.py tests/test_cluster.py tests/test_close_path.py \
	tests/test_backpressure_bound.py tests/test_close_timer.py tests/test_shutdown_edges.py \
	tests/test_ready_state_closing.py tests/test_subscribers.py tests/test_shutting_down.py \
	tests/test_bun_names.py tests/test_max_lifetime.py tests/test_ping_interval.py tests/test_drain.py \
	tests/test_history.py tests/test_history_redis.py tests/test_tcp.py tests/test_reads.py \
	tests/test_pubsub.py tests/test_sendbatch.py
test-uvloop: $(VENV)/.installed system-deps build-ext
	$(PY) -m pytest --loop=uvloop $(UVLOOP_TESTS) $(PYTEST_ARGS)

conformance: $(VENV)/.installed build-ext
	bash conformance/run.sh full

conformance-quick: $(VENV)/.installed build-ext
	bash conformance/run.sh quick

bench: $(VENV)/.installed build-ext
	$(PY) benchmarks/echo.py
	$(PY) benchmarks/fanout.py
	$(PY) benchmarks/profile_echo.py --messages 20000
	$(PY) benchmarks/backpressure.py
	$(PY) benchmarks/connections.py
	$(PY) benchmarks/cluster.py
	$(PY) benchmarks/redis_cluster.py
	$(PY) benchmarks/drain.py
	$(PY) benchmarks/history.py

# Bun for the comparison, from the npm registry (its binary ships in the package).
BUN_VERSION ?= 1.4.5
BUN := .bench/node_modules/@oven/bun-linux-x64/bin/bun
$(BUN):
	npm install --no-save --no-audit --no-fund --prefix .bench @oven/bun-linux-x64@$(BUN_VERSION)

# The figures and chart of docs/performance.rst: echo and fan-out against plain
# aiohttp and Bun, raw results in docs/performance/*.json.
bench-chart: $(VENV)/.installed $(BUN)
	BUN=$(BUN) $(PY) benchmarks/echo.py --repeat 3 --seconds 2 --json docs/performance/echo.json
	BUN=$(BUN) $(PY) benchmarks/fanout.py --repeat 3 --json docs/performance/fanout.json
	$(PY) benchmarks/chart.py docs/performance/echo.json docs/performance/fanout.json -o docs/performance/chart.png

clean:
	rm -rf $(VENV) .venv-matrix .bench build dist aiohttp_upgrade/*.so aiohttp_upgrade/*.c aiohttp_upgrade/*.html docs/_build *.egg-info .mypy_cache .pytest_cache .ruff_cache

# HTML documentation in docs/_build/html; any Sphinx warning fails the build.
docs: $(VENV)/.installed
	$(VENV)/bin/sphinx-build -E -W --keep-going -n -q -b html docs docs/_build/html

$(VENV)/.installed-dist: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dist]'
	touch $@

# The sdist and this platform's compiled wheel in dist/: the wheel repaired by
# auditwheel to a manylinux tag (it fails on a library it cannot vouch for), both
# checked by twine.
dist: $(VENV)/.installed-dist
	rm -rf dist
	$(PY) -m build --outdir dist . >/dev/null
	# pip unpacks a .tar.gz as a zip if its last 64 KiB happen to hold a zip
	# end-of-directory signature (2 of 3 builds did on 2026-12-03): then the sdist
	# is built again, and its new timestamps change its compressed bytes.
	for attempt in 1 2 3 4 5; do \
	  $(PY) -c 'import glob, sys, zipfile; sys.exit(zipfile.is_zipfile(glob.glob("dist/*.tar.gz")[0]))' && break; \
	  echo "the sdist looks like a zip to pip; building it again"; \
	  rm dist/*.tar.gz; sleep 1; $(PY) -m build --sdist --outdir dist . >/dev/null; \
	done
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/auditwheel repair -w dist dist/*-linux_*.whl
	rm dist/*-linux_*.whl
	$(VENV)/bin/twine check --strict dist/*

# Each into a clean virtualenv: the wheel runs compiled, the sdist built with no C
# compiler (CC=false) installs pure Python with its one line; both serve the quick start.
check-dist: dist
	$(PY) tools/check_dist.py dist/*.whl dist/*.tar.gz

# The support matrix: the oldest and newest aiohttp claimed in setup.cfg, on the
# oldest and newest Python tested. .ci/run runs two corners of it (the main .venv
# covers the newest aiohttp on the default Python).
MATRIX_PYTHONS ?= 3.11 3.13
MATRIX_AIOHTTP ?= 3.14.4 3.14.5
# The browser test is left to `make test`.
MATRIX_MARKERS ?= not browser
MATRIX_PYTEST_ARGS ?= -m "$(MATRIX_MARKERS)"
test-matrix:
	tools/test-matrix.sh "$(MATRIX_PYTHONS)" "$(MATRIX_AIOHTTP)" $(MATRIX_PYTEST_ARGS)

# The next aiohttp minor's newest pre-release, which setup.cfg does not admit yet
# (README: support policy); says so and passes when the index has none.
test-aiohttp-next:
	tools/test-aiohttp-next.sh $(MATRIX_PYTEST_ARGS)
