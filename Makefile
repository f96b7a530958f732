# gd-node — every target sets itself up: a fresh clone needs only `make run` or `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SEEDS ?= 10000
# What mypy checks (the exact command the pre-stop hook runs; ADR 0009).
TYPED := genome crdt ledger motors protocol node cli testnet
# Coverage data of the test run and of every daemon it starts (absolute: daemons run
# in temporary directories).
export GD_COVERAGE_DIR := $(CURDIR)/.coverage-data
# The real-process and long suites, left out of `make check` (they run in `make test`).
SLOW_SUITES := tests/chaos tests/testnet tests/sync_net tests/ledger_net tests/sovereignty_net \
	tests/adversarial tests/sim tests/fuzz tests/node tests/cortex/test_crash_safety.py

.PHONY: help venv run test check lint types coverage measure bench sim validate clean

help:
	@echo "make run       local 4-node testnet with a live dashboard (creates .venv, installs)"
	@echo "make test      ruff, mypy, the whole suite under coverage, per-package coverage floors"
	@echo "make check     ruff, mypy and the fast tests (under 2 minutes; before each commit)"
	@echo "make coverage  the whole suite under coverage; HTML in bench/results/coverage"
	@echo "make bench     every benchmark (tables on screen; bench/results.json, bench/RESULTS.md)"
	@echo "make sim       deterministic simulation with SEEDS=$(SEEDS) seeds"
	@echo "make validate  motors on the real NASA C-MAPSS data in ../shared/data/cmapss"

# fastecdsa (pulled in by libp2p) compiles against GMP: make sure its header exists.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || \
	  { echo "gd-node needs Python 3.11 (found $$($(PYTHON) --version)); set PYTHON=..."; exit 1; }
	@if ! echo '#include <gmp.h>' | cc -E - >/dev/null 2>&1; then \
	  echo "installing libgmp-dev (needed to build fastecdsa for libp2p)"; \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq libgmp-dev) || exit 1; \
	  else echo "run: sudo apt-get install -y libgmp-dev   then make again"; exit 1; fi; \
	fi
	@# The web console's browser test (tests/api/test_console_browser.py) drives Debian's
	@# chromium through chromedriver; without them that one test skips and says why.
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver (the console's browser test)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver) || echo "could not install chromium: the browser test skips"; \
	  else echo "for the console's browser test run: sudo apt-get install -y chromium chromium-driver"; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[torch,dev]'
	@touch $(STAMP)

# Our modules' bytecode, as `pip install` of a wheel writes it. This machine sets
# PYTHONDONTWRITEBYTECODE, so an editable checkout would otherwise compile ~250 modules
# at every process start: 0.4-0.6 s of each `gd-node run` (ADR 0063). Up-to-date files
# are skipped, so this costs well under a second when little changed.
venv: $(STAMP)
	@$(BIN)/python -m compileall -q $(TYPED) >/dev/null

# A 4-org, 2-region federation of real node processes on 127.0.0.1 with demo genes and a
# live dashboard; Ctrl-C stops every node (data stays in .gd/testnet for the next run).
run: venv
	$(BIN)/gd-node testnet up --orgs 4 --regions 2 --dir .gd/testnet --dashboard

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy $(TYPED)

types: venv
	$(BIN)/mypy $(TYPED)

# Every test, under branch coverage; fails if a package drops below its floor.
test: venv lint measure
	$(BIN)/python tools/coverage_floor.py $(GD_COVERAGE_DIR)/coverage.json

check: venv lint
	$(BIN)/pytest -q $(PARALLEL) $(addprefix --ignore=,$(SLOW_SUITES)) -m "not slow"

coverage: venv measure
	$(BIN)/coverage html -q
	@echo "coverage report: bench/results/coverage/index.html"
	$(BIN)/python tools/coverage_floor.py $(GD_COVERAGE_DIR)/coverage.json

# The Raft simulation (hundreds of seeded clusters, pure CPU) runs outside coverage: the
# tracer made it 4x slower and the Raft core is covered by tests/ledger's scenarios.
UNTRACED := tests/sim/test_raft_sim.py
# pytest-xdist workers (ADR 0051): one per core, at most 4 (each real-process test starts
# daemons of its own); a test file stays on one worker, so module fixtures start once.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')
PARALLEL := -n $(TEST_WORKERS) --dist loadfile
measure: venv
	rm -rf $(GD_COVERAGE_DIR) && mkdir -p $(GD_COVERAGE_DIR)
	$(BIN)/coverage run -m pytest $(PARALLEL) $(addprefix --ignore=,$(UNTRACED))
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) $(UNTRACED)
	$(BIN)/coverage combine -q
	$(BIN)/coverage json -q -o $(GD_COVERAGE_DIR)/coverage.json

# bench/ledger_vs_etcd.py runs a 3-member etcd beside our ledger: install it like GMP.
bench: venv
	@if ! command -v etcd >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq etcd-server) \
	    || echo "could not install etcd-server: the etcd comparison is skipped"; \
	  else echo "run: sudo apt-get install -y etcd-server   for the etcd comparison"; fi; \
	fi
	$(BIN)/python bench/run_all.py

# Up to 200 seeds: pytest runs every simulation. More: tests/sim/sweep.py runs the
# federation (the real services under every kind of rule), Raft, sync-, sovereign-,
# fed- and ledger-service seeds on a process pool (progress, replay commands, a summary
# in bench/results/sim_sweep.json), then pytest runs the named regression seeds and the
# default sweep of each simulation.
sim: venv
	@if [ "$(SEEDS)" -le 200 ]; then \
	  SEEDS=$(SEEDS) SERVICE_SEEDS=$(SEEDS) SERVICE_FED_SEEDS=$(SEEDS) \
	    $(BIN)/pytest tests/sim -q; \
	else \
	  nice -n 10 $(BIN)/python tests/sim/sweep.py --seeds $(SEEDS) && \
	  $(BIN)/pytest tests/sim -q; \
	fi

validate: venv
	$(BIN)/python bench/validate_cmapss.py ../shared/data/cmapss

clean:
	rm -rf $(VENV) .gd bench/results .pytest_cache .hypothesis .mypy_cache .coverage-data
