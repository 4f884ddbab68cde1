# The two quick-start commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# libpython3.11: Triton's python backend stub links the system libpython (deploy/triton/README.md).
# chromium: the browser tests (Playwright drives Debian's Chromium, docs/acceptance.md); orthanc: the
# PACS that receives exported results in the report-loop tests, and with orthanc-dicomweb the
# baseline of the DICOMweb bench (its smoke run is part of the suite).
# mmdebstrap buildah podman uidmap: `make image` / `make image-test` (docs/deployment.md, The image).
SYSTEM_PACKAGES := dcmtk libpython3.11 chromium orthanc orthanc-dicomweb rsyslog rsyslog-gnutls \
	mmdebstrap buildah podman uidmap
RUNTIME_PACKAGES := libpython3.11
BUF_VERSION := 1.75.0

.PHONY: frontend install demo up test test-fast lint proto proto-check api-types api-check buf-lint \
	buf-release system-deps bench bench-smoke clean \
	nats-permissions image image-test

# A fresh Debian has python3.11 but not its venv module: install it when venv creation fails.
$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || bash scripts/system-deps.sh python3 python3-venv
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); bash scripts/system-deps.sh python3-venv python3.11-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip wheel

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev,embedded]'
	@touch $(STAMP)

# The review web app (review_gateway/frontend, TypeScript + vite) builds into the git-ignored
# review_gateway/static/app, served by the gateway at /; node and npm come from Debian's apt.
FRONTEND := review_gateway/frontend
FRONTEND_BUILT := review_gateway/static/app/index.html
FRONTEND_SOURCES := $(FRONTEND)/package.json $(FRONTEND)/package-lock.json $(FRONTEND)/index.html \
	$(FRONTEND)/vite.config.ts $(FRONTEND)/tsconfig.json $(FRONTEND)/compress.mjs $(shell find $(FRONTEND)/src -type f 2>/dev/null)

$(FRONTEND_BUILT): $(FRONTEND_SOURCES)
	@command -v npm >/dev/null 2>&1 || bash scripts/system-deps.sh nodejs npm
	cd $(FRONTEND) && npm ci --no-audit --no-fund && npm run build

frontend: $(FRONTEND_BUILT)

# The OHIF viewer (`sidecar up --viewer-port`): @ohif/app as pinned and integrity-checked in
# deploy/ohif/ohif.lock.json, unpacked into .ohif/ (npm comes with the front end's build).
OHIF_STAMP := .ohif/VERSION
$(OHIF_STAMP): deploy/ohif/ohif.lock.json | $(STAMP) $(FRONTEND_BUILT)
	$(BIN)/python -m sidecar_app.runtime.ohif_fetch

# The OpenID provider the SSO tests start (tests/oidc_peer.py): oidc-provider from npm, locked in
# tests/oidc_provider/package-lock.json, installed into its git-ignored node_modules.
OIDC_PEER := tests/oidc_provider/node_modules/.package-lock.json
$(OIDC_PEER): tests/oidc_provider/package.json tests/oidc_provider/package-lock.json | $(FRONTEND_BUILT)
	cd tests/oidc_provider && npm ci --no-audit --no-fund

install: $(STAMP) $(FRONTEND_BUILT) $(OHIF_STAMP) $(OIDC_PEER)

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

# The front end's API types (src/api-schema.ts) are generated from the gateway's OpenAPI
# document (python -m review_gateway.openapi_export, no server started) by openapi-typescript.
# The file is replaced only when its text changes (an unchanged one keeps the build current).
API_TYPES := $(FRONTEND)/src/api-schema.ts
API_CACHE := $(FRONTEND)/node_modules/.cache

api-types: install
	@mkdir -p $(API_CACHE)
	$(BIN)/python -m review_gateway.openapi_export $(API_CACHE)/openapi.json
	cd $(FRONTEND) && npm run --silent api-types
	@cmp -s $(API_CACHE)/api-schema.ts $(API_TYPES) || cp $(API_CACHE)/api-schema.ts $(API_TYPES)

# Like proto-check: fails when the committed types are not what the gateway's API declares.
api-check: api-types
	@git diff --exit-code -- $(API_TYPES) || { echo "$(API_TYPES) is stale: run 'make api-types' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- $(API_TYPES))" || { echo "$(API_TYPES) is not committed: run 'make api-types' and commit"; exit 1; }

# Lint, then `buf breaking` against the latest released contracts (protos/releases/N.binpb).
buf-lint:
	@bash scripts/buf-lint.sh $(BUF_VERSION)

# After a documented breaking change (CHANGELOG.md): the next release image (docs/contracts.md).
buf-release:
	@bash scripts/buf-release.sh $(BUF_VERSION)

# The bus's users and permissions for an external NATS (deploy/nats, deploy/k8s/nats-users.yaml),
# written from sidecar_core/messaging/permissions.py; a unit test checks they are current.
nats-permissions: $(STAMP)
	$(BIN)/python -m sidecar_core.messaging.nats_auth deploy

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy sidecar_core sidecar_app sidecar_synth ingest_svc imaging_svc normalizer_svc workflow_svc \
		review_gateway

test: install system-deps proto-check api-check buf-lint lint
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

# The sidecar image, built here with buildah FROM a cached mmdebstrap Debian base (scripts/image.sh),
# tagged localhost/radiology-sidecar:dev; image-test runs its `sidecar up` on this machine's
# loopback against PostgreSQL, NATS and Triton processes (`make test` runs it too).
image: system-deps
	bash scripts/image.sh

image-test: install system-deps
	$(BIN)/python -m pytest -p no:cacheprovider -q tests/image

clean:
	rm -rf $(VENV) .data .demo-data .ohif test-artifacts review_gateway/static/app \
		$(FRONTEND)/node_modules
