# The two commands a newcomer runs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SANDBOX_PROFILES ?= gaudi2,ascend910b,h100,cpu
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test test-all lint unit integration bench deps test-tools venv sandbox-up sandbox-down clean

deps:  ## Debian packages the sandbox and the tests need (as root); src/inferfleet/sandbox/hostenv.py checks the same
	@command -v dockerd >/dev/null && command -v mmdebstrap >/dev/null && command -v docker-registry >/dev/null \
	  && command -v fusermount3 >/dev/null && command -v ssh >/dev/null && command -v rsync >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io \
	  mmdebstrap docker-registry fuse3 openssh-client rsync python3-venv >/dev/null; }

# chromium opens the bench report, promtool checks the scrape configuration, openssl makes a front door certificate
test-tools:  ## What the tests check our output with (as root)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v promtool >/dev/null \
	  && command -v openssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y \
	  -qq --no-install-recommends chromium chromium-driver prometheus openssl >/dev/null; }

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: deps venv  ## Bring up the sandbox fleet (SIMULATED accelerators) and run the pipeline on it
	$(BIN)/inferfleet sandbox up --profiles $(SANDBOX_PROFILES)
	$(BIN)/inferfleet up -i inventories/sandbox/hosts.yml

sandbox-down: venv
	$(BIN)/inferfleet sandbox down

test: lint unit integration  ## Lint, unit and integration tests (the integration tests marked slow left out)

test-all: lint unit  ## As test, with the slow integration tests too (about 45 minutes more on 2 cores)
	$(MAKE) integration INTEGRATION_MARK=integration

lint: venv
	$(BIN)/ruff check src tests plugins benchmarks
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --offline -q

unit: venv
	$(BIN)/pytest -q -m "not integration" tests

# CI runs `make test` and must stay under an hour on 2 cores: the slowest integration tests are marked slow.
INTEGRATION_MARK ?= integration and not slow
integration: deps test-tools venv
	$(BIN)/pytest -q -m "$(INTEGRATION_MARK)" tests

bench: deps venv demo  ## Print the benchmark figures (not pass/fail)
	$(BIN)/python benchmarks/sandbox_up.py
	$(BIN)/python benchmarks/task_overhead.py
	$(BIN)/python benchmarks/tune_docker.py
	$(BIN)/python benchmarks/plan_scale.py
	$(BIN)/python benchmarks/registry_mirror.py
	$(BIN)/python benchmarks/fabric.py
	$(BIN)/python benchmarks/models.py
	$(BIN)/python benchmarks/bench_overhead.py
	$(BIN)/python benchmarks/front_door.py
	$(BIN)/python benchmarks/serve_ready.py
	$(BIN)/python benchmarks/noop_profile.py --mitogen
	$(BIN)/python benchmarks/controller_scale.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
