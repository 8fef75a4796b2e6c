# Gateway Lab. `make up` to run it, `make test` to test everything.
# Every target that needs Python tools installs them first (into .venv); every
# target that needs system tools (nginx, wrk, chromium, fcgiwrap, curl) installs
# the missing ones first with apt-get (scripts/system-deps.sh), or says how.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LAB := $(VENV)/bin/lab
MODE ?=
export LAB_PORT ?= 8080

.PHONY: install up down status switch split scale server logs test test-unit test-integration \
	test-native test-docker test-swarm check fmt bench timeline claims clean docker-engine base-image \
	system-deps

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

up: install            ## start the lab (docker if an engine answers, else native; LAB_TARGET forces one)
	$(LAB) up

down:                  ## stop what `make up` started
	@if [ -x $(LAB) ]; then $(LAB) down; else echo "nothing to stop (no $(VENV))"; fi

status: install
	$(LAB) status

switch: install        ## make switch MODE=asgi
	$(LAB) switch "$(MODE)"

split: install         ## make split WEIGHTS="wsgi=90,asgi=10"; WEIGHTS= goes back to one mode
	$(LAB) split "$(WEIGHTS)"

logs: install
	$(LAB) logs --follow

scale: install         ## make scale MODE=wsgi N=3: N replicas of one gateway behind nginx
	$(LAB) scale "$(MODE)" "$(N)"

server: install        ## make server MODE=wsgi SERVER=gthread: another server behind one mode
	$(LAB) server "$(MODE)" "$(SERVER)"

system-deps:           ## the system tools the tests and workshop commands use (apt-get, as root)
	bash scripts/system-deps.sh

docker-engine:         ## install and start a Docker engine and the Compose plugin (root)
	bash scripts/docker-engine.sh

base-image:            ## build lab-base:bookworm from Debian's packages, for machines with no registry
	bash scripts/base-image.sh

check: install         ## lint and type-check, change nothing
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test-unit: install system-deps
	$(PY) -m pytest tests/unit

# The integration suite through nginx; starts a stack (and stops it after) when none runs.
test-integration: install system-deps
	$(PY) -m pytest tests/integration

# Every suite that needs a running lab, against one target: the integration suite,
# the dashboard in headless Chromium, and the workshop tools on a tiny matrix.
STACK_SUITES := tests/integration tests/browser tests/tools

test-native: install system-deps
	LAB_TARGET=native $(PY) -m pytest $(STACK_SUITES)

test-docker: install system-deps
	LAB_TARGET=docker $(PY) -m pytest $(STACK_SUITES)

# The contract, switching, concurrency and fault suites on the swarm stack (docs/swarm.md):
# a single-node swarm when the engine is in none, left again when the suite stops the lab.
SWARM_SUITES := tests/integration/test_contract.py tests/integration/test_switching.py \
	tests/integration/test_process_model.py tests/integration/test_scale.py \
	tests/integration/test_routing.py tests/integration/test_faults.py \
	tests/integration/test_reload.py

# The default servers only: the server matrix is the compose and native runs' (a
# swap on swarm is a rolling service update, 15-25 s each).
DEFAULT_SERVERS := --server cgi/runner --server wsgi/sync --server asgi/gunicorn

test-swarm: install system-deps
	LAB_TARGET=swarm $(PY) -m pytest $(SWARM_SUITES) $(DEFAULT_SERVERS)

# Everything: lint, unit tests, then the integration suite on the native stack and,
# when a Docker engine answers, on the compose stack and on a single-node swarm too.
test: system-deps check test-unit test-native
	@if docker info >/dev/null 2>&1; then $(MAKE) test-docker && $(MAKE) test-swarm; \
	else echo "No Docker engine answers: the compose stack was not tested (scripts/docker-engine.sh starts one)."; \
	     if [ -n "$$CI" ]; then exit 1; fi; fi

# The workshop experiments, through nginx on the running lab (`make up` first).
# Extra options: make bench ARGS="--modes wsgi,asgi --levels 1,50"
bench: install system-deps
	$(LAB) bench $(ARGS)

# Without ARGS: the workshop's figures (docs/results/timeline-*.png and their JSON).
timeline: install system-deps
	$(LAB) timeline $(or $(ARGS),--workshop)

claims: install system-deps
	$(LAB) claims $(ARGS)

# Also the lab's local CA, which `make down` keeps: natively in .lab/tls, under
# Docker in the nginx-tls volume (the next `make up` makes a new CA to trust).
clean: down
	rm -rf .lab results .pytest_cache .mypy_cache .ruff_cache
	@if docker info >/dev/null 2>&1; then docker volume rm --force gateway-lab_nginx-tls \
		$${LAB_STACK:-gateway-lab-swarm}_nginx-tls >/dev/null; fi
