# The two quick-start commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# libpython3.11: Triton's python backend stub links the system libpython (PLATFORM.md).
# chromium: the browser tests (Playwright drives Debian's Chromium, PLATFORM.md); orthanc: the
# PACS that receives exported results in the report-loop tests, and with orthanc-dicomweb the
# baseline of the DICOMweb bench (its smoke run is part of the suite).
SYSTEM_PACKAGES := dcmtk libpython3.11 chromium orthanc orthanc-dicomweb
RUNTIME_PACKAGES := libpython3.11
BUF_VERSION := 1.75.0

.PHONY: frontend install demo up test test-fast lint proto proto-check buf-lint system-deps bench \
	bench-smoke clean

# A fresh Debian has python3.11 but not its venv module: install it when venv creation fails.
$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || bash scripts/system-deps.sh python3 python3-venv
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); bash scripts/system-deps.sh python3-venv python3.11-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip wheel

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

# The review web app (review_gateway/frontend, TypeScript + vite) builds into the git-ignored
# review_gateway/static/app, served by the gateway at /; node and npm come from Debian's apt.
FRONTEND := review_gateway/frontend
FRONTEND_BUILT := review_gateway/static/app/index.html
FRONTEND_SOURCES := $(FRONTEND)/package.json $(FRONTEND)/package-lock.json $(FRONTEND)/index.html \
	$(FRONTEND)/vite.config.ts $(FRONTEND)/tsconfig.json $(shell find $(FRONTEND)/src -type f 2>/dev/null)

$(FRONTEND_BUILT): $(FRONTEND_SOURCES)
	@command -v npm >/dev/null 2>&1 || bash scripts/system-deps.sh nodejs npm
	cd $(FRONTEND) && npm ci --no-audit --no-fund && npm run build

frontend: $(FRONTEND_BUILT)

# The OHIF viewer (`sidecar up --viewer-port`): @ohif/app as pinned and integrity-checked in
# deploy/ohif/ohif.lock.json, unpacked into .ohif/ (npm comes with the front end's build).
OHIF_STAMP := .ohif/VERSION
$(OHIF_STAMP): deploy/ohif/ohif.lock.json | $(STAMP) $(FRONTEND_BUILT)
	$(BIN)/python -m sidecar_app.runtime.ohif_fetch

install: $(STAMP) $(FRONTEND_BUILT) $(OHIF_STAMP)

demo: install
	@bash scripts/system-deps.sh $(RUNTIME_PACKAGES)
	$(BIN)/sidecar demo

up: install
	@bash scripts/system-deps.sh $(RUNTIME_PACKAGES)
	$(BIN)/sidecar up

system-deps:
	@bash scripts/system-deps.sh $(SYSTEM_PACKAGES)

proto: install
	$(BIN)/python -m protos.generate

# CI fails when the generated code is stale: regenerate, then compare with what is committed.
proto-check: install
	$(BIN)/python -m protos.generate
	@git diff --exit-code -- protos || { echo "generated protobuf code is stale: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- protos)" || { echo "untracked generated files under protos/: run 'make proto' and commit"; git status --porcelain -- protos; exit 1; }

buf-lint:
	@bash scripts/buf-lint.sh $(BUF_VERSION)

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy sidecar_core sidecar_app ingest_svc normalizer_svc workflow_svc review_gateway

test: install system-deps proto-check buf-lint lint
	$(BIN)/python -m pytest -p no:cacheprovider

test-fast: install
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow"

# Every bench at full size, one after another (each starts its own `sidecar up` where it
# measures one; README.md, "Benchmarks"); bench/gpu.sh needs a GPU.
BENCHES := parse_header preprocess critical_path ingest_vs_orthanc dicomweb hl7_mllp \
	review_worklist inference accuracy end_to_end load review
bench: install system-deps
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

# The benches at their smallest size (`--smoke`), as `make test` runs them.
bench-smoke: install system-deps
	$(BIN)/python -m pytest -p no:cacheprovider tests/bench

clean:
	rm -rf $(VENV) .data .demo-data .ohif test-artifacts review_gateway/static/app \
		$(FRONTEND)/node_modules
