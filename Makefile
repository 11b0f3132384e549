# Casebook: `make run` to try it, `make test` to check it. Everything lives in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
HOST   ?= 127.0.0.1
PORT   ?= 5000
export FLASK_APP := wsgi.py

.PHONY: run test install db demo serve bench lint browser-deps clean audit lock

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

## serve: production server (gunicorn, 2 x CPUs + 1 workers, gunicorn.conf.py) against DATABASE_URL
serve: install
	$(BIN)/flask db upgrade
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn --config gunicorn.conf.py wsgi:app

## browser-deps: Debian's chromium (no browser download) and axe-core, the version and hash
## pinned in tests/browser-deps/package-lock.json, for the real-browser tests
AXE := tests/browser-deps/node_modules/axe-core/axe.min.js
browser-deps: $(AXE)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

$(AXE): tests/browser-deps/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq npm; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq npm; fi; }
	npm ci --prefix tests/browser-deps --silent --no-audit --no-fund
	touch $@

lint: install
	$(BIN)/ruff check app tests bench migrations

## lock: record the exact installed versions that `make audit` checks (commit requirements.lock)
lock: install
	$(BIN)/pip freeze --exclude-editable > requirements.lock

## audit: pip-audit requirements.lock against PyPI's advisories; skipped (with a message) when
## PyPI's per-version JSON API, pip-audit's advisory source, cannot be reached within 5 seconds
audit: install
	@$(BIN)/pip freeze --exclude-editable | diff -q - requirements.lock >/dev/null || \
	  echo "note: requirements.lock differs from the installed packages; run 'make lock'"
	@probe=$$(grep -m1 '==' requirements.lock | sed 's|==|/|'); \
	if $(BIN)/python -c "import sys, urllib.request; urllib.request.urlopen('https://pypi.org/pypi/' + sys.argv[1] + '/json', timeout=5)" "$$probe" 2>/dev/null; then \
	  $(BIN)/pip-audit --requirement requirements.lock --no-deps --disable-pip --vulnerability-service pypi \
	    --timeout 15 --progress-spinner off; \
	else \
	  echo "pip-audit skipped: PyPI's advisory data (https://pypi.org/pypi/$$probe/json) cannot be reached from here."; \
	fi

## test: install what the tests need and run the whole suite
test: install browser-deps
	$(BIN)/ruff check app tests bench migrations
	$(BIN)/bandit -q -r app --severity-level high
	@$(MAKE) --no-print-directory audit
	$(BIN)/pytest -q -n auto

## bench: the benchmark suite (BENCH_SIZES, BENCH_DATABASES, BENCH_ONLY, DATABASE_URL=...casebook_bench)
bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) instance test-artifacts .pytest_cache tests/browser-deps/node_modules
