# Casebook: `make run` to try it, `make test` to check it. Everything lives in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
HOST   ?= 127.0.0.1
PORT   ?= 5000
export FLASK_APP := wsgi.py

.PHONY: run test install db demo serve bench lint browser-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

db: install
	$(BIN)/flask db upgrade

demo: db
	$(BIN)/flask demo

## run: install, migrate the SQLite database, load the demo, serve on http://127.0.0.1:5000
run: demo
	@echo ""
	@echo "Casebook is starting on http://$(HOST):$(PORT)/  (Ctrl-C to stop)"
	$(BIN)/flask run --host $(HOST) --port $(PORT)

## serve: production server (gunicorn) against DATABASE_URL
serve: install
	$(BIN)/gunicorn --workers $$(( $$(nproc) * 2 + 1 )) --bind $(HOST):$(PORT) wsgi:app

## browser-deps: Debian's chromium for the real-browser tests (no browser download)
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

lint: install
	$(BIN)/ruff check app tests bench

## test: install what the tests need and run the whole suite
test: install browser-deps
	$(BIN)/ruff check app tests
	$(BIN)/bandit -q -r app --severity-level high
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) instance test-artifacts .pytest_cache
