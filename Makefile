# Two commands for a newcomer: `make run` and `make test`. Needs Python 3.11, make and a C compiler.
PYTHON ?= python3.11
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
DEV := $(PY) -m taskengine_site.devservices run --
UV_VERSION := 0.13.9
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Installed packages get their bytecode at install time: a process that starts (a web or Celery worker, a
# test's subprocess) then reads it instead of compiling every module again, even where the environment
# sets PYTHONDONTWRITEBYTECODE.
export UV_COMPILE_BYTECODE := 1
# Procfile commands (gunicorn, celery) come from the project virtualenv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run manage test check audit lint typecheck fmt venv venv-run clean-data bench-venv bench bench-quick chaos mutation

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

# Two stamps: running needs the project's dependencies only; testing and checking add the `dev` group
# (pytest, mypy, bandit, moto, selenium, …), so a newcomer's first `make run` installs and compiles only
# what runs. --inexact keeps the dev tools of an environment `make test` already completed.
$(VENV)/.synced-run: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --no-dev --inexact --python $(PYTHON)
	touch $@

# Once `make bench-venv` has run, a later sync (after a change of uv.lock or pyproject.toml) keeps the
# bench group instead of removing the peers a benchmark compares against.
$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen $(if $(wildcard $(VENV)/.bench),--group bench) --python $(PYTHON)
	touch $@ $(VENV)/.synced-run

venv-run: $(VENV)/.synced-run

venv: $(VENV)/.synced

# honcho kills whatever is still running 5 s after Ctrl-C: a shorter shutdown grace lets a worker hand
# its steps back before that (they run again within seconds of the next `make run`).
run: venv-run
	$(DEV) sh -c '$(PY) manage.py migrate --noinput && $(PY) manage.py collectstatic --noinput -v0 && \
	  $(PY) manage.py ensure_demo_client && \
	  TASKENGINE_SHUTDOWN_GRACE_SECONDS=$${TASKENGINE_SHUTDOWN_GRACE_SECONDS:-2} \
	  WEB_HOST=$${WEB_HOST:-127.0.0.1} exec $(VENV)/bin/honcho -f Procfile start -p $${PORT:-8000} web worker control beat'

# Any manage.py command with the embedded services (started, or reused while `make run` is running):
#   make manage ARGS="create_client acme"
manage: venv-run
	@$(DEV) $(PY) manage.py $(ARGS)

# Two xdist workers (one per core); each gets its own test database and Redis key prefix. worksteal: an
# idle worker takes tests queued for the other, so the slow end-to-end and chaos tests do not pile up on one.
PYTEST_ARGS ?= -n 2 --dist worksteal
test: venv
	$(DEV) $(PY) -m pytest $(PYTEST_ARGS)

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DATABASE_URL=postgres://typecheck@localhost/typecheck REDIS_URL=redis://localhost:6379/0 SECRET_KEY=typecheck $(VENV)/bin/mypy .
	DEBUG=false SECRET_KEY=deploy-check-3f9b1c7e5a2d8f4b6c0e9a1d7b3f5c8e2a4d6f8b0c TASKENGINE_HTTPS=true \
	  ALLOWED_HOSTS=taskengine.example.com DATABASE_URL=postgres://check@localhost/check \
	  REDIS_URL=redis://localhost:6379/0 $(PY) manage.py check --deploy --fail-level WARNING
	$(VENV)/bin/bandit -c pyproject.toml -r . -ll -q
	$(VENV)/bin/lint-imports --no-cache
	$(DEV) $(PY) manage.py lint_migrations

# Known vulnerabilities in the locked dependencies (PyPI's advisory data: needs https://pypi.org/pypi/).
# --strict fails on any package it could not look up, so no answer is never taken for a clean one.
# Not part of `make check`: CI runs where PyPI's JSON API is not reachable (see README).
audit: venv
	@mkdir -p .data
	$(UV) export --frozen --no-hashes --no-dev --no-emit-project -q -o .data/audit-requirements.txt
	$(VENV)/bin/pip-audit --strict --disable-pip --no-deps -r .data/audit-requirements.txt

# Mutation testing of the engine's rules (README): mutmut over the five modules of [tool.mutmut] in
# pyproject.toml, each mutant against the focused tests that reach it, one worker (the machine's other core
# is the database's). A fresh run every time (mutmut would otherwise keep the verdicts of the last one),
# then the score table; it fails when a module scores under 90 %. Not part of `make test`. LOG_LEVEL:
# mutmut's own INFO lines would otherwise reach the project's console handler, whose stream pytest has
# closed by then (a harmless but noisy traceback).
mutation: venv
	rm -rf mutants
	LOG_LEVEL=WARNING $(DEV) sh -c '$(VENV)/bin/mutmut run --max-children 1 && $(VENV)/bin/mutmut results && \
	  $(PY) -m tests.mutation_score'

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-data:
	rm -rf .data

# Benchmarks (bench/README.md) need the peers they compare against: the `bench` dependency group.
bench-venv: | $(UV)
	$(UV) sync --frozen --group bench --python $(PYTHON)
	touch $(VENV)/.bench

# Every benchmark of bench/README.md (run `make bench-venv` once; bench.submit needs Debian's wrk).
bench:
	$(PY) -m bench.run_all

bench-quick:
	$(PY) -m bench.run_all --quick

# The full-size fault scenarios (tests/chaos), on their own embedded PostgreSQL and Redis.
chaos: venv
	$(PY) -m tests.chaos.run
