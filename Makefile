# linli: `make demo` runs the whole pipeline locally, `make test` runs lint and every test.
# Each target runs scripts/setup first (idempotent: installs only what is missing).
.PHONY: setup lint test demo clean

VENV := .venv
PY := $(VENV)/bin/python

setup:
	@scripts/setup

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)
	@scripts/check-no-strays

demo: setup
	$(VENV)/bin/linli demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis
