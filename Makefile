# avian-workers: common tasks. Every target installs what it needs first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := source scripts/env.sh &&

.PHONY: install test test-fast lint format typecheck run db-upgrade db-check bench clean demo

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on CI), every Python
# process (pytest, the Prefect and moto servers, the workers tests start) would otherwise compile
# Prefect and its dependencies from source again, about 6 s of CPU each on a 2-core machine.
install: ## Create .venv from the lock file
	$(ENV) uv sync --frozen --compile-bytecode

test: install ## Run the whole test suite against real services (installs Dovecot when missing)
	bash scripts/ensure-dovecot.sh
	$(ENV) uv run --frozen pytest $(PYTEST_ARGS)

lint: install ## ruff (lint + format check), mypy --strict, hadolint on the Dockerfile
	$(ENV) uv run --frozen ruff check .
	$(ENV) uv run --frozen ruff format --check .
	$(ENV) uv run --frozen mypy
	$(ENV) bash scripts/lint-dockerfile.sh

format: install
	$(ENV) uv run --frozen ruff format .
	$(ENV) uv run --frozen ruff check --fix .

demo: install ## All three workers through Prefect on services started for the occasion (docs/demo.md) [ARGS="--days 7"]
	$(ENV) uv run --frozen python -m avian_workers.demo $(ARGS)

run: install ## Run one worker in this process: make run WORKER=edr-polling [ARGS="start_date=2026-11-01"]
	$(ENV) uv run --frozen avian-workers run $(WORKER) $(ARGS)

db-upgrade: install
	$(ENV) uv run --frozen avian-workers db upgrade

db-check: install
	$(ENV) uv run --frozen avian-workers db check

bench: install ## Benchmarks (see bench/README.md)
	$(ENV) for b in bench/*.py; do echo "== $$b"; uv run --frozen python "$$b"; done

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis
