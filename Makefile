# Two commands on a fresh machine with Python 3.11+ and make:
#   make docs   create .venv, install, serve the site on http://127.0.0.1:8000
#   make test   create .venv if needed, install, run every check
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export NO_MKDOCS_2_WARNING := 1
# Bytecode caches on, even where the environment turns them off: pytest caches
# its assertion rewriting there (seconds of CPU per worker, every run).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install docs site test test-all test-matrix lint format notebooks examples app bench bench-quick lab clean

# Reinstalls only when pyproject.toml changes; a second `make` is a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

docs: $(STAMP)
	$(BIN)/python -m tools.site_hooks
	$(BIN)/mkdocs serve -a 127.0.0.1:8000 --watch snippets

site: $(STAMP)
	$(BIN)/python -m tools.site_hooks
	$(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Three workers on two cores, one test file each at a time: module fixtures
# (the browser) stay in one process, and while one worker waits on a
# subprocess (Chromium, a kernel, a server) the others use the CPU.
test: lint
	$(BIN)/pytest -n 3 --dist loadfile -m "not fresh_env and not heavy"

# Every check: make test's, and the browser, the notebooks run in kernels and
# the quick benchmarks (.ci/run runs this, then the matrix).
test-all: lint
	$(BIN)/pytest -n 3 --dist loadfile -m "not fresh_env"

MATRIX_STAMP := $(VENV)/.installed-matrix-stamp
$(MATRIX_STAMP): $(STAMP)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e ".[test,matrix]"
	touch $(MATRIX_STAMP)

# The suite on Python 3.11, 3.12 and 3.13 with the newest allowed versions,
# and on 3.11 with the lowest (noxfile.py); then docs/versions.json and the
# index page's table from what ran. Minutes; NOX_ARGS="-s lowest" for one.
test-matrix: $(MATRIX_STAMP)
	rm -rf .nox/records
	$(BIN)/nox $(NOX_ARGS)
	$(BIN)/python -m tools.versions write

notebooks: $(STAMP)
	$(BIN)/python -m tools.notebooks

# Rewrite the #> output lines of snippets and pages from a real run.
examples: $(STAMP)
	$(BIN)/pytest tests/test_pipeline.py -k "snippet_runs or written_in_a_page" --update-examples
	$(BIN)/python -m tools.notebooks

BENCH_STAMP := $(VENV)/.installed-bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e ".[bench]"
	touch $(BENCH_STAMP)

# Every benchmark (SQLite; PostgreSQL too with COOKBOOK_BENCH_POSTGRES_URL),
# then docs/performance.md and its plots from the results.
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

APP_PORT ?= 8001
app: $(STAMP)
	$(BIN)/uvicorn snippets.inventory:app --host 127.0.0.1 --port $(APP_PORT)
# make app WORKERS=4: uvicorn reads its --workers default from WEB_CONCURRENCY.
WORKERS ?= 1
app: export WEB_CONCURRENCY = $(WORKERS)

lab: $(STAMP)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e ".[test,notebooks]"
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) site docs/notebooks .mypy_cache .ruff_cache .nox
