# Two entry points for a fresh machine: `make run` and `make test`. Both are idempotent:
# the virtualenv is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REPOSITORY ?= model_repository
DEFAULT_MODEL ?= electricity
# Real components the tests start, named explicitly (also what apt would only "recommend": some
# machines install no recommends): redis-server + redis-cli, nginx (scale-out topology);
# podman with conmon and runc, its netavark network (needs iptables) with aardvark-dns for the
# compose service names, catatonit, and what rootless podman needs (uidmap, slirp4netns,
# fuse-overlayfs); debootstrap (the local stand-in base image, from a Debian mirror over
# https: ca-certificates), nsenter (util-linux), pgrep (procps), curl (docs/api.md's examples),
# git (the benchmark baseline), wrk (benchmark smoke test), chromium + fonts-liberation (the
# dashboard's browser tests, driven by Playwright with the system chromium).
# podman-compose and hadolint come with the dev extra (pip). tests/test_system_deps.py checks
# that every command a test requires is listed here.
SYSTEM_PACKAGES := iptables redis-server redis-tools nginx podman conmon runc netavark aardvark-dns catatonit \
	uidmap slirp4netns fuse-overlayfs debootstrap ca-certificates util-linux procps curl git wrk chromium fonts-liberation
SYSTEM_COMMANDS := iptables redis-server redis-cli nginx podman conmon runc netavark aardvark-dns catatonit \
	newuidmap slirp4netns fuse-overlayfs debootstrap nsenter pgrep curl git wrk chromium
SECRETS ?= secrets

.PHONY: run test test-fast lint install system-deps train-default serve clean bench bench-publish capacity grpc-stubs quality secrets

install: $(STAMP)

# torch==2.13.0 first: the CPU wheel on disk satisfies the [train] extra's range, so pip
# never resolves torch to a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $@

# Real components the end-to-end tests start: every package not installed yet comes from Debian
# (a package, not a command, is checked: fonts have no command); then every command must be there.
system-deps:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	fi; \
	for cmd in $(SYSTEM_COMMANDS); do \
		command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || [ -x /usr/lib/podman/$$cmd ] \
			|| { echo "system-deps: $$cmd is still missing" >&2; exit 1; }; \
	done

train-default: $(STAMP)
	@if [ -z "$$(ls -A $(REPOSITORY) 2>/dev/null)" ]; then \
		$(VENV)/bin/seqserve train --preset $(DEFAULT_MODEL) --repository $(REPOSITORY) \
			|| { code=$$?; [ $$code -eq 3 ] && echo "serving it anyway: the only version (see the gate warning)"; \
			     [ $$code -eq 3 ]; }; \
	else echo "model repository $(REPOSITORY) already holds models; not training"; fi

run: train-default
	$(VENV)/bin/seqserve serve --model-repository $(REPOSITORY)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy service models training seqserve

# The whole suite (CI runs it): lint, types, and every test, real servers, containers and
# clusters included (with CI=true a missing component fails instead of skipping).
test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy service models training seqserve
	$(PY) -m pytest -q

# For development: unit and in-process tests only, no server processes, containers, clusters,
# torchrun or trainings to quality (those are marked slow or e2e; tests/support/tier.py keeps
# an unmarked one out). A few minutes at most on 2 cores; needs no system packages.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not e2e" --durations=10

# Compose secrets (docker-compose.yml): random keys, written once, never overwritten. Mode 0644
# because compose bind-mounts the files as they are and the containers run as other users;
# keep the directory itself private (0700). Two data-plane keys, so a second client can have its own.
secrets:
	@mkdir -p $(SECRETS) && chmod 700 $(SECRETS)
	@for name in api_keys admin_key redis_password; do \
		if [ ! -s $(SECRETS)/$$name ]; then \
			if [ $$name = api_keys ]; then \
				{ $(PYTHON) -c 'import secrets; print(secrets.token_hex(32))'; \
				  $(PYTHON) -c 'import secrets; print(secrets.token_hex(32))'; } > $(SECRETS)/$$name; \
			else $(PYTHON) -c 'import secrets; print(secrets.token_hex(32))' > $(SECRETS)/$$name; fi; \
			chmod 644 $(SECRETS)/$$name; echo "wrote $(SECRETS)/$$name"; \
		else echo "$(SECRETS)/$$name exists; kept"; fi; \
	done

# One side-by-side run (current code, the baseline commit, raw Triton, naive, floors; ~10 min on
# 2 cores), then `make bench-publish` copies it into docs/benchmarks.md.
bench: $(STAMP)
	$(PY) -m bench.run --rounds 2

bench-publish:
	$(PY) -m bench.publish

# The capacity model's measured inputs and projections (docs/scaling.md): bench/results/capacity.{json,md}.
capacity: $(STAMP)
	$(PY) -m bench.capacity

# docs/quality.md: every bundled dataset trained as a user would, against every baseline (minutes).
quality: $(STAMP)
	$(PY) -m bench.quality --output docs/quality.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# The committed KServe V2 gRPC stubs, regenerated from service/grpc/protos in a throwaway
# virtualenv (grpcio-tools is not a dependency: its protobuf range differs from tritonclient's).
GRPC_GEN := .grpc-gen
grpc-stubs:
	$(PYTHON) -m venv $(GRPC_GEN)
	$(GRPC_GEN)/bin/pip install -q 'grpcio-tools>=1.75,<1.76' 'protobuf>=6.31,<7'
	cd service/grpc && ../../$(GRPC_GEN)/bin/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. \
		--grpc_python_out=. protos/grpc_service.proto protos/model_config.proto
	rm -f service/grpc/model_config_pb2_grpc.py
	sed -i 's/^import \(model_config_pb2\|grpc_service_pb2\) as/from service.grpc import \1 as/' service/grpc/*_pb2*.py*
	rm -rf $(GRPC_GEN)
