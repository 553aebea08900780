# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: install run test lint format migrate

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when pyproject.toml changed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

.env:
	cp .env.example .env
	@echo "Created .env from .env.example (DEBUG=true, SQLite, offline demo model)."

install: $(STAMP) .env

migrate: install
	$(BIN)/python manage.py migrate --no-input

run: migrate
	@$(BIN)/python manage.py shell -c "from chat.provider import backend; print('Model backend:', backend().label)"
	@echo "Chat page:  http://$(HOST):$(PORT)/"
	@echo "Admin:      http://$(HOST):$(PORT)/admin/  (first create a user: $(BIN)/python manage.py createsuperuser)"
	$(BIN)/uvicorn chatsite.asgi:application --host $(HOST) --port $(PORT) \
		$$($(BIN)/python -c "import environ; e = environ.Env(); e.read_env('.env'); print('--reload' if e.bool('DEBUG', default=False) else '')")

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
