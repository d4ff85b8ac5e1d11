# The README's two commands: `make demo` and `make test`. Everything else is for developers.
# Any Python >= 3.11 on PATH (newest first); PY=/path/to/python chooses one.
PY ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test test-all lint bench clean server worker deploy ray-head ray-worker

setup: $(STAMP)

# Idempotent: re-runs only when pyproject.toml or this file changed. torch==2.13.0 first (CPU wheel on
# local disk); an unpinned torch would pull a multi-GB CUDA build. resemblyzer without its dependencies:
# only its speaker-encoder weights (pretrained.pt, in the wheel) are used, not its librosa / webrtcvad code.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || { test -n "$(PY)" || { echo "make setup needs Python >= 3.11 (none on PATH; PY=/path/to/python)"; exit 2; }; $(PY) -m venv $(VENV); }
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps "resemblyzer==0.1.4"
	@touch $(STAMP)

demo: setup
	$(BIN)/imagineid demo --workdir work/demo

test: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: setup
	$(BIN)/python -m pytest -q tests

# ruff lint + format check (pyproject.toml: line length 120); `ruff format` fixes the format.
lint: setup
	$(BIN)/ruff check imagineid tasks flows tests benchmarks
	$(BIN)/ruff format --check imagineid tasks flows tests benchmarks

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Only what `make demo` and the tests leave: work/ also holds the deployments' data, runs and videos.
clean:
	rm -rf work/demo .pytest_cache

# --- Operations (docs/operations.md): Prefect server, process worker, deployments, Ray cluster ---------
# Without PREFECT_API_URL, flows run on Prefect's embedded ephemeral API; these targets talk to a server.
PREFECT := $(BIN)/prefect
PREFECT_PORT ?= 4200
API_URL := $(or $(PREFECT_API_URL),http://127.0.0.1:$(PREFECT_PORT)/api)
IMAGINEID_WORK ?= work
POOL := process
GPU_SLOTS ?= 1
WORKER_LIMIT ?= 2
DEPLOY ?= --all
RAY_PORT ?= 6379
RAY_CLIENT_PORT ?= 10001
RAY_AGENT_PORT ?= 52365
# The head's dashboard (jobs, actors, logs) listens on this machine only: reach it through an SSH tunnel.
RAY_DASHBOARD_PORT ?= 8265
RAY_OBJECT_STORE ?= 536870912
RAY_ARGS ?=
# The interface Ray's head binds to and advertises: a private address, never a public one (default: the
# host's primary address, as Ray picks it). Workers use RAY_NODE_IP for their own address the same way.
RAY_NODE_IP ?=
RAY_IP_ARG := $(if $(RAY_NODE_IP),--node-ip-address $(RAY_NODE_IP))
# The Prefect server's basic-auth string ("user:password"), kept in a private file (mode 600) that
# `make server` creates on first use; `make worker` / `make deploy` and every client read the same one.
PREFECT_AUTH_FILE ?= $(HOME)/.imagineid/prefect_auth
# Clusters from `make ray-head` use token authentication; nodes and drivers (workers, `imagineid ...
# --ray-address`) need RAY_AUTH_MODE=token and the head's ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH).
export RAY_AUTH_MODE ?= token

server:
	@test -s $(PREFECT_AUTH_FILE) || { mkdir -p -m 700 $(dir $(PREFECT_AUTH_FILE)) && (umask 077; \
		echo "imagineid:$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))')" > $(PREFECT_AUTH_FILE)) \
		&& echo "created $(PREFECT_AUTH_FILE) (the server's auth string; clients need it too)"; }
	@chmod 600 $(PREFECT_AUTH_FILE)
	PREFECT_SERVER_API_AUTH_STRING="$$(cat $(PREFECT_AUTH_FILE))" $(PREFECT) server start --host 127.0.0.1 --port $(PREFECT_PORT)

worker deploy: export PREFECT_API_URL := $(API_URL)
worker deploy: export PREFECT_API_AUTH_STRING := $(or $(PREFECT_API_AUTH_STRING),$(shell cat $(PREFECT_AUTH_FILE) 2>/dev/null))

worker:
	$(PREFECT) worker start --pool $(POOL) --type process --limit $(WORKER_LIMIT)

# Idempotent: re-run after editing prefect.yaml. DEPLOY="--name nightly" deploys one.
deploy:
	$(PREFECT) work-pool inspect $(POOL) >/dev/null 2>&1 || $(PREFECT) work-pool create $(POOL) --type process
	$(PREFECT) concurrency-limit create gpu $(GPU_SLOTS) >/dev/null
	IMAGINEID_WORK=$(IMAGINEID_WORK) $(PREFECT) --no-prompt deploy $(DEPLOY)

# Foreground (--block): SIGTERM to `ray start` (systemd stop, kill PID) stops this node's Ray processes
# only; `ray stop` would stop every Ray instance on the machine.
ray-head:
	@(umask 077; $(BIN)/ray get-auth-token --generate >/dev/null)
	@chmod 600 "$${RAY_AUTH_TOKEN_PATH:-$$HOME/.ray/auth_token}"
	$(BIN)/ray start --head --block --port $(RAY_PORT) --ray-client-server-port $(RAY_CLIENT_PORT) \
		--dashboard-agent-listen-port $(RAY_AGENT_PORT) --include-dashboard true --dashboard-host 127.0.0.1 \
		--dashboard-port $(RAY_DASHBOARD_PORT) --disable-usage-stats \
		--object-store-memory $(RAY_OBJECT_STORE) $(RAY_IP_ARG) $(RAY_ARGS)

ray-worker:
	@test -n "$(RAY_ADDRESS)" || { echo "make ray-worker needs RAY_ADDRESS=<head-host>:$(RAY_PORT)"; exit 2; }
	$(BIN)/ray start --address $(RAY_ADDRESS) --block --dashboard-agent-listen-port $(RAY_AGENT_PORT) \
		--disable-usage-stats --object-store-memory $(RAY_OBJECT_STORE) $(RAY_IP_ARG) $(RAY_ARGS)
