# Every target sets itself up: a fresh machine needs only Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := .demo

.PHONY: install run test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the sample batch, against the built-in sandbox.
run: $(STAMP)
	$(BIN)/bulk-topup run sample_batches/reseller-batch.csv --sandbox \
		--skip-invalid --yes --rate 50 --journal $(DEMO)/journal.sqlite \
		--settle-timeout 60 --report $(DEMO)/report-$$(date +%Y%m%dT%H%M%S).csv

test: $(STAMP)
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check bulk_topup tests scripts
	$(BIN)/ruff format --check bulk_topup tests scripts
	$(BIN)/mypy bulk_topup

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache
