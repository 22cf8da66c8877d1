# The two commands: `make demo` and `make test`. Each installs what it needs into .venv/
# (re-installing only when pyproject.toml changes). `make lint` and `make bench` are extra.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The demo needs only the connector and the sandbox server (the `sandbox` extra), not the dev tools.
$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[sandbox]"
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/ciklek demo

# PostgreSQL: scripts/postgres.sh starts a private cluster (installing the Debian package when
# missing and root); the PostgreSQL test is skipped only outside CI when that is impossible.
# The tests' temporary files (~250 MB of dlt working dirs and DuckDB files per run) go to a
# directory of this checkout's own in RAM (/dev/shm) when there is one: pytest empties it at the
# next start, where deleting the numbered dirs in /tmp took tens of seconds on a busy disk.
# `--durations=15` prints the slowest tests after every run. Four workers on two cores: a
# worker spends part of its time waiting (sandbox latency, rate-limit windows, processes
# starting, signals), and the extra workers fill it (297 s -> 264 s from two workers to three;
# 195 s -> 187 s from three to four, back to back on this machine).
# Python may cache what it compiles (`__pycache__/`, ignored by git) even where the environment
# says PYTHONDONTWRITEBYTECODE: a run starts ~200 processes (`ciklek`, sandboxes, scripts), each
# of which compiled every connector module it imported again, and pytest keeps the test modules
# it rewrote for its asserts (~3 s per worker) for the next run.
# `--no-loadscope-reorder`: files go out in collection order (tests/e2e, then integration, then
# the many small unit files), not most-tests-first, which left single-test e2e files of 10-16 s
# for the end while the other workers sat idle (~20 worker-seconds a run).
PYTEST_TMP ?= $(if $(wildcard /dev/shm/.),/dev/shm/ciklek-tests-$(shell id -u)-$(shell printf %s "$(CURDIR)" | cksum | cut -d' ' -f1))
test: install
	@dsn=$$(bash scripts/postgres.sh start) || dsn=""; \
	CIKLEK_TEST_PG_DSN="$$dsn" env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q -n 4 --dist loadfile --no-loadscope-reorder -p no:cacheprovider \
		--durations=15 $(if $(PYTEST_TMP),--basetemp=$(PYTEST_TMP)) tests

# Layers and cycles (import-linter, contracts in pyproject.toml) and the one rule it cannot
# express (no connector import inside a function outside connector/cli/).
lint: install
	$(VENV)/bin/ruff check connector tests bench pipelines scripts
	$(VENV)/bin/ruff format --check connector tests bench pipelines scripts
	$(VENV)/bin/mypy connector pipelines
	$(VENV)/bin/lint-imports
	$(PY) scripts/check_function_imports.py

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
