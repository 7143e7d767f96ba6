# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/dagster_home
export ROADWORK_PROFILE ?= demo
export MPLBACKEND := Agg
DAGSTER := $(BIN)/dagster asset materialize -m roadwork_assets.definitions
SOURCES := natix roadwork mapillary

.PHONY: install peers mmd-fixtures lint demo test bench ui clean-demo serve-platform stop-platform platform-status

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# constraints.txt holds the exact versions (pip freeze of a fresh install); pyproject.toml the ranges.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/activate
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Peers and oracles that must not set the runtime's versions (alibi-detect 0.13 needs numpy < 2)
# get their own venv; the tests use their recorded values (tests/fixtures/), never the package.
PEERS_VENV ?= .venv-peers
$(PEERS_VENV)/.installed: bench/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --upgrade pip
	$(PEERS_VENV)/bin/pip install -r bench/peers/requirements.txt
	touch $@

peers: $(PEERS_VENV)/.installed

# Re-record the alibi-detect reference values the MMD test compares against.
mmd-fixtures: peers
	$(PEERS_VENV)/bin/python bench/peers/record_mmd_fixtures.py

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# The README's build sequence: each source partition, then every unpartitioned asset downstream
# (the daily drift partitions cannot share a CLI run with them), then simulated production days.
# The selection (roadwork_assets/selection.py) also leaves out explora_checkpoint, hard_negatives
# and hpo_study unless the profile feeds their output to phase 1 (they would not fit in 10 min).
TAIL_SELECTION := $(BIN)/python -m roadwork_assets.selection $(ROADWORK_PROFILE)
DRIFT_DAYS ?= 12

demo: install
	@start=$$(date +%s); \
	for p in $(SOURCES); do $(DAGSTER) --select source_images --partition $$p || exit 1; done; \
	tail=$$($(TAIL_SELECTION)) || exit 1; \
	$(DAGSTER) --select "$$tail" || exit 1; \
	$(BIN)/python -m roadwork_assets.drift_demo --days $(DRIFT_DAYS) || exit 1; \
	echo; echo "demo finished in $$(( $$(date +%s) - start )) s (profile $(ROADWORK_PROFILE))"; \
	echo "artifacts:       $(DAGSTER_HOME)/artifacts"; \
	echo "MLflow store:    sqlite:///$(DAGSTER_HOME)/mlflow.db  ($(BIN)/mlflow ui --backend-store-uri sqlite:///$(DAGSTER_HOME)/mlflow.db)"; \
	echo "Dagster UI:      DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev -w workspace.yaml   (then open http://127.0.0.1:3000)"

# --dist loadfile: a test module's expensive fixture (the whole graph on a real instance) is
# built once, on one worker.
# ruff first: an unformatted or lint-failing tree fails the test command (and so CI) in seconds.
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

bench: install peers
	$(BIN)/python bench/bench_synthetic.py
	$(BIN)/python bench/bench_mmd.py --peers-python $(PEERS_VENV)/bin/python
	$(BIN)/python bench/bench_inference.py

ui: install
	$(BIN)/dagster dev -w workspace.yaml

clean-demo:
	find $(DAGSTER_HOME) -mindepth 1 -maxdepth 1 ! -name dagster.yaml -exec rm -rf {} +

# Local production mode (deploy/README.md): PostgreSQL 15, the gRPC code server, dagster-daemon,
# the webserver (:3000) and a read-only one (:3001), all on 127.0.0.1, state under platform_home/.
PLATFORM_HOME ?= $(CURDIR)/platform_home

serve-platform: install
	DAGSTER_HOME=$(PLATFORM_HOME) $(BIN)/python -m roadwork_assets.platform up --home $(PLATFORM_HOME)

stop-platform:
	$(BIN)/python -m roadwork_assets.platform down --home $(PLATFORM_HOME)

platform-status:
	$(BIN)/python -m roadwork_assets.platform status --home $(PLATFORM_HOME)
