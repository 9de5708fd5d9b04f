# Developer entry points. The venv logic lives in scripts/bootstrap.sh.
VENV := .venv

.PHONY: install lock run test lint format openapi bench bench-quick screenshots

install:  ## create/refresh .venv (requirements/test.lock, then the project, editable)
	bash scripts/bootstrap.sh

lock:  ## regenerate requirements/*.lock from pyproject.toml (after changing a dependency)
	bash scripts/lock.sh

run: install  ## run the service, in development (fixed secrets, loopback only)
	DELETION_ENVIRONMENT=development $(VENV)/bin/soundops-deletion serve

test:  ## the full test command (what CI runs); pass pytest args with ARGS="..."
	bash scripts/test.sh $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

openapi: install  ## write the OpenAPI document
	$(VENV)/bin/python -m app.openapi_export

screenshots: install  ## the console's screenshots in docs/console (headless Chromium)
	CONSOLE_SCREENSHOTS=docs/console FERRETDB_BIN=$${FERRETDB_BIN:-.cache/bin/ferretdb} \
		$(VENV)/bin/pytest tests/routers/test_admin_browser.py -q -p no:cacheprovider

bench: install  ## benchmarks of docs/benchmarks.md (~25 min; starts its own test servers)
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	[ -x .cache/bin/ferretdb ] || bash scripts/build_ferretdb.sh
	FERRETDB_BIN=$${FERRETDB_BIN:-.cache/bin/ferretdb} $(VENV)/bin/python -m bench $(BENCH_ARGS)

BENCH_ARGS ?= --profile
bench-quick: BENCH_ARGS = --quick
bench-quick: bench  ## every benchmark at small sizes (~3 min) into bench/results/quick.md; before and after a hot-path change
