# tokenwire: `make run` serves the demo, `make test` runs everything CI runs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint typecheck pytest pytest-versions jstest install install-dev system-deps node-deps express-deps bench bench-overhead bench-peers bench-chaos bench-chaos-cluster bench-stuck bench-net bench-soak bench-cluster autobahn clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The light install: the server with the synthetic and openai sources (no torch).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Everything the tests use: dev tools, torch (CPU build, pinned), transformers.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0  # the CPU build the tests use (the hf extra says torch>=2.4)
	$(BIN)/pip install -q -e ".[dev,hf,bench,peers]"
	touch $@ $(VENV)/.installed

# The other Pythons the core is tested on: `make test` runs the contract subset
# (`pytest -m contract`, tests/conftest.py) on each, in its own .venv-X.Y with the core and
# the dev extra only (no torch). An interpreter is found on PATH (pythonX.Y) or in pyenv's
# versions; a missing one stops `make test` with how to get it.
EXTRA_PYTHONS := 3.12 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
find-python = $(firstword $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)) \
	$(shell command -v python$(1) 2>/dev/null))

.venv-%/.installed-dev: pyproject.toml
	@py="$(call find-python,$*)"; \
	if [ -z "$$py" ] || ! "$$py" -c 'import sys' 2>/dev/null; then \
		echo "make: Python $* is not installed, and make test runs the contract tests on it:" \
			"install it (pyenv install $*, or your system's python$*)," \
			"or leave it out with make test EXTRA_PYTHONS=" >&2; \
		exit 1; \
	fi; \
	"$$py" -m venv .venv-$* && .venv-$*/bin/pip install -q --upgrade pip && \
		.venv-$*/bin/pip install -q -e ".[dev]"
	touch $@

# (Not intermediate files: without this, make deletes them after each run and reinstalls.)
.PRECIOUS: .venv-%/.installed-dev

pytest-%: .venv-%/.installed-dev
	.venv-$*/bin/pytest -m contract

pytest-versions: $(addprefix pytest-,$(EXTRA_PYTHONS))

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# System packages the tests drive, each checked by the binary it installs: Debian's
# Chromium, which Playwright starts from /usr/bin/chromium (Playwright never downloads a
# browser here); the network lab's intermediaries (nginx, haproxy, caddy: bench/net/, started
# on free ports from the repo's configs, never as services), openssl (the lab's certificates)
# and curl (a client of the lab); redis-server (the tests start their own on free ports for
# the Redis store; redis-cli joins the tests' Redis Cluster), iproute2 (`ip` and `tc`: the
# lab's network namespace with a tbf bandwidth limit), gcc (`cc`: bench/floor.py's C sender,
# the kernel's floor without Python). Each entry is a package, or `package:binary` when the binary it installs
# has another name; the binary is what is checked.
SYSTEM_PACKAGES := chromium redis-server redis-tools:redis-cli nginx haproxy caddy openssl curl iproute2:tc gcc:cc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@missing=""; export PATH="$$PATH:/usr/sbin:/sbin"; for p in $(SYSTEM_PACKAGES); do \
		command -v $${p##*:} >/dev/null || missing="$$missing $${p%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
		{ $(SUDO) apt-get update -qq || true; } && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# JS packages the conformance tests drive (the npm `eventsource` client), pinned by
# package-lock.json. The tokenwire JS client itself has no dependencies.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
node-deps: node_modules/.package-lock.json

# The Express peer of the race (bench/peers/express: express and ws), pinned by its own
# package-lock.json, in its own node_modules.
EXPRESS := bench/peers/express
$(EXPRESS)/node_modules/.package-lock.json: $(EXPRESS)/package.json $(EXPRESS)/package-lock.json
	npm ci --prefix $(EXPRESS) --no-audit --no-fund --loglevel=error
express-deps: $(EXPRESS)/node_modules/.package-lock.json

run: install
	$(BIN)/tokenwire serve --host $(HOST) --port $(PORT)

lint: install-dev
	$(BIN)/ruff check server clients tests bench wire tokenwire
	$(BIN)/ruff format --check server clients tests bench wire tokenwire

typecheck: install-dev
	$(BIN)/mypy

pytest: install-dev system-deps node-deps express-deps
	$(BIN)/pytest

# JS decoders on the shared vectors, and the JS client against a live server (it starts
# .venv/bin/python -m tokenwire serve itself). Node 20 needs the flags for WebSocket/EventSource.
jstest: install-dev
	node --test --experimental-websocket --experimental-eventsource clients/js/test/

test: lint typecheck pytest pytest-versions jstest

bench-overhead: install-dev
	$(BIN)/python -m bench.overhead --repeat 3

# Many streams on every transport and /v1 (openai), Python and JS clients, through random cuts: the
# counts table (tests/faults/ runs a small plan of it). Stuck readers vs everyone's gaps.
bench-chaos: install-dev node-deps
	$(BIN)/python -m bench.chaos

# The same through three processes on one Redis (its own redis-server on a free port):
# created on one process, read and resumed through cuts on others (docs/scaling.md).
bench-chaos-cluster: install-dev node-deps system-deps
	$(BIN)/python -m bench.chaos --cluster 3

bench-stuck: install-dev
	$(BIN)/python -m bench.stuck

# One client at every cap for SOAK_ARGS (default --minutes 3): RSS over time, and whether
# it levels off under the bounds on retained memory (docs/bench.md, "Memory soak").
bench-soak: install-dev
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# The Redis store beside the memory store, and Redis commands per event of a fan-out over
# two processes (docs/scaling.md); starts its own redis-server.
bench-cluster: install-dev system-deps
	$(BIN)/python -m bench.cluster $(CLUSTER_ARGS)

# Every Autobahn case against the test-only echo route, with kosoku's reports in
# test-output/autobahn/ (make test runs them too; docs/autobahn.md lists the results).
autobahn: install-dev
	$(BIN)/python -m bench.autobahn

# The transports under Locust, one after another, into bench/results/<time>/ (report.html):
# `make bench` (the default preset, ~10 min), `make bench BENCH_ARGS=--quick`,
# `make bench BENCH_ARGS="--stress"`; see docs/bench.md.
BENCH_ARGS ?=
bench: install-dev
	$(BIN)/tokenwire bench $(BENCH_ARGS)

# The peer race: tokenwire against minimal aiohttp, FastAPI + sse-starlette, Flask on
# gunicorn + gevent and Express, the same load on each in turn, into
# bench/results/<time>-race/ (docs/bench.md, "The peer race"); RACE_ARGS=--quick for a taste.
RACE_ARGS ?=
bench-peers: install-dev express-deps
	$(BIN)/tokenwire bench --peers $(RACE_ARGS)

# The network lab: every transport through every intermediary (nginx, haproxy, caddy) and
# link profile, with the Python/JS clients, curl, Chromium and the openai SDK, into
# bench/results/<time>-net/ (docs/network.md); NET_ARGS=--quick for the small plan,
# NET_ARGS="--samples 3" for medians per cell, NET_ARGS="--tbf-kbit 8000" (root, iproute2)
# for the lab inside a network namespace whose loopback the kernel's tbf caps.
NET_ARGS ?=
bench-net: install-dev system-deps node-deps
	$(BIN)/tokenwire bench --net $(NET_ARGS)

clean:
	rm -rf $(VENV) $(addprefix .venv-,$(EXTRA_PYTHONS)) .mypy_cache .ruff_cache .pytest_cache
