# The README's two commands: `make demo` and `make test`. Everything else is for developers.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test test-all bench clean server worker deploy ray-head ray-worker

setup: $(STAMP)

# Idempotent: re-runs only when pyproject.toml or this file changed. torch==2.13.0 first (CPU wheel on
# local disk); an unpinned torch would pull a multi-GB CUDA build. resemblyzer without its dependencies:
# only its speaker-encoder weights (pretrained.pt, in the wheel) are used, not its librosa / webrtcvad code.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
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
RAY_OBJECT_STORE ?= 536870912
RAY_ARGS ?=
# Clusters from `make ray-head` use token authentication; nodes and drivers (workers, `imagineid ...
# --ray-address`) need RAY_AUTH_MODE=token and the head's ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH).
export RAY_AUTH_MODE ?= token

server:
	$(PREFECT) server start --host 127.0.0.1 --port $(PREFECT_PORT)

worker deploy: export PREFECT_API_URL := $(API_URL)

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
	$(BIN)/ray get-auth-token --generate >/dev/null
	$(BIN)/ray start --head --block --port $(RAY_PORT) --ray-client-server-port $(RAY_CLIENT_PORT) \
		--dashboard-agent-listen-port $(RAY_AGENT_PORT) --include-dashboard false --disable-usage-stats \
		--object-store-memory $(RAY_OBJECT_STORE) $(RAY_ARGS)

ray-worker:
	@test -n "$(RAY_ADDRESS)" || { echo "make ray-worker needs RAY_ADDRESS=<head-host>:$(RAY_PORT)"; exit 2; }
	$(BIN)/ray start --address $(RAY_ADDRESS) --block --dashboard-agent-listen-port $(RAY_AGENT_PORT) \
		--disable-usage-stats --object-store-memory $(RAY_OBJECT_STORE) $(RAY_ARGS)
