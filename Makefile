# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Serving needs the project's dependencies only; tests, lint and the bench add their extras.
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP := $(VENV)/.installed-dev
INSTALL_LOG := $(VENV)/install.log
DEV_EXTRAS := .[test,bench]

.PHONY: install run test lint format migrate bench serve-prod chaos soak
# The second `make test` pass: the same code on PostgreSQL and Redis (CI=true requires them).
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15
# Several workers share stop requests, limits and turn logs through Redis only: one
# without REDIS_URL in the environment (a worker refuses to start as one of several
# without it, chat/ops/workers.py).
WORKERS ?= $(if $(REDIS_URL),2,1)
listening = $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', $(1)), 2).close()" 2>/dev/null

# pip's own chatter (and the build backend's banners) goes to $(INSTALL_LOG), shown only
# when the install fails.
pip_install = $(BIN)/python -m pip install --quiet $(1) >$(INSTALL_LOG) 2>&1 \
	|| { cat $(INSTALL_LOG); echo "pip install failed (log: $(INSTALL_LOG))" >&2; exit 1; }

$(BIN)/python:
	@echo "Creating $(VENV) with $(PYTHON)…"
	@$(PYTHON) -m venv $(VENV)
	@$(call pip_install,--upgrade pip)

# Reinstall only when pyproject.toml changed.
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing what serving needs into $(VENV) (a minute or two the first time)…"
	@$(call pip_install,-e .)
	@touch $(SERVE_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing the test, lint and bench tools into $(VENV)…"
	@$(call pip_install,-e '$(DEV_EXTRAS)')
	@touch $(SERVE_STAMP) $(DEV_STAMP)

.env:
	@cp .env.example .env
	@echo "Created .env from .env.example (DEBUG=true, SQLite, offline demo model)."

# Everything: serving, tests, lint, bench.
install: $(DEV_STAMP) .env

migrate: $(SERVE_STAMP) .env
	@$(BIN)/python manage.py migrate --no-input -v 0

run: migrate
	@echo
	@$(BIN)/python manage.py chat_doctor --summary http://$(HOST):$(PORT)/
	@echo "Settings:   .env (see README, Configuration). Stop with Ctrl-C."
	@echo
	@$(BIN)/uvicorn chatsite.asgi:application --host $(HOST) --port $(PORT) \
		$$($(BIN)/python -c "import environ; e = environ.Env(); e.read_env('.env'); print('--reload' if e.bool('DEBUG', default=False) else '')")

test: install
	$(BIN)/python -m pytest
	@if command -v node >/dev/null; then \
		echo "== the page's JavaScript: node --test tests/js/"; node --test tests/js/; \
	elif [ "$$CI" = "true" ]; then \
		echo "Node.js is missing; CI must run the page's JavaScript tests." >&2; exit 1; \
	else \
		echo "== no Node.js: skipped the page's JavaScript tests (tests/js/)"; \
	fi
	@if $(call listening,5432) && $(call listening,6379); then \
		echo "== second pass: PostgreSQL ($(PG_TEST_URL)) and Redis ($(REDIS_TEST_URL))"; \
		DATABASE_URL=$(PG_TEST_URL) REDIS_URL=$(REDIS_TEST_URL) CHAT_CACHE_PREFIX=test-$$(date +%s%N) \
			$(BIN)/python -m pytest -m "not browser"; \
	elif [ "$$CI" = "true" ]; then \
		echo "PostgreSQL (5432) or Redis (6379) is not reachable on 127.0.0.1; CI must test both." >&2; \
		exit 1; \
	else \
		echo "== no PostgreSQL/Redis on 127.0.0.1: skipped their pass"; \
	fi

# Load benchmark against a local fake upstream, side by side with the seeds' FastAPI app
# in alternating pairs, then conversation search at 10,000 conversations (README
# "Performance"). BENCH_ARGS="--only c1,c50 --pairs 5" and the like pass options on.
bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.search

# Runnable proofs (README "Chaos and soak"): each starts a PostgreSQL cluster, a Redis,
# the fake upstream, two workers and nginx of its own (never the machine's shared ones).
# `make chaos`: 500 turns with upstream faults while a worker is killed with kill -9 and
# Redis and PostgreSQL restart; exits 1 listing anything lost or counted twice.
# `make soak MINUTES=10`: the mixed load; exits 1 if a worker's memory, descriptors,
# database connections or asyncio tasks grew by more than 10 %.
MINUTES ?= 30
chaos: install
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

soak: install
	$(BIN)/python -m bench.soak --minutes $(MINUTES) $(SOAK_ARGS)

# Several workers, DEBUG off (needs SECRET_KEY; see README "Deployment"). Static files are
# collected and served by ServeStatic unless the reverse proxy serves /static/ itself.
# /metrics sums the workers' files in METRICS_DIR (prometheus_client multi-process mode):
# emptied at each start, or the previous run's counts would be added in.
METRICS_DIR ?= $(CURDIR)/.metrics
serve-prod: migrate
	@DEBUG=false $(BIN)/python manage.py collectstatic --no-input -v 0
	@rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	@echo
	@DEBUG=false $(BIN)/python manage.py chat_doctor --summary http://$(HOST):$(PORT)/ --workers $(WORKERS)
	@echo
	@DEBUG=false PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) WEB_CONCURRENCY=$(WORKERS) \
		$(BIN)/uvicorn chatsite.asgi:application --host $(HOST) --port $(PORT) --no-access-log \
		--timeout-graceful-shutdown 20

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
