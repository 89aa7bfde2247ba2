# Two entry points for a fresh machine: `make run` and `make test`. Both are idempotent:
# the virtualenv is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REPOSITORY ?= model_repository
DEFAULT_MODEL ?= electricity
# Real components the tests start: redis-server, nginx (scale-out topology), podman + runc +
# debootstrap (builds and runs the serving image against a local stand-in base), nsenter, curl,
# wrk (benchmark smoke test).
SYSTEM_PACKAGES := redis-server nginx podman runc debootstrap util-linux curl wrk
SYSTEM_COMMANDS := redis-server nginx podman runc debootstrap nsenter curl wrk

.PHONY: run test lint install system-deps train-default serve clean bench

install: $(STAMP)

# torch==2.13.0 first: the CPU wheel on disk satisfies the [train] extra's range, so pip
# never resolves torch to a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $@

# Real components the end-to-end tests start: installed from Debian when missing.
system-deps:
	@missing=""; \
	for cmd in $(SYSTEM_COMMANDS); do \
		command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$cmd"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi

train-default: $(STAMP)
	@if [ -z "$$(ls -A $(REPOSITORY) 2>/dev/null)" ]; then \
		$(VENV)/bin/seqserve train --preset $(DEFAULT_MODEL) --repository $(REPOSITORY); \
	else echo "model repository $(REPOSITORY) already holds models; not training"; fi

run: train-default
	$(VENV)/bin/seqserve serve --model-repository $(REPOSITORY)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench.run --rounds 2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
