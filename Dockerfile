# syntax=docker/dockerfile:1
# One Dockerfile, two images:
#   docker build --target sidecar -t radiology-sidecar:0.1.0 .       every sidecar service, OHIF
#   docker build --target triton  -t radiology-sidecar-triton:0.1.0-25.07 . Triton 25.07 + models
# Here (no registry reachable): `make image` builds the sidecar target with buildah FROM a
# Debian base made by mmdebstrap (BASE=localhost/debian-base:bookworm; docs/deployment.md).
#
# Entry points of the sidecar image (its command; see deploy/compose.yaml, deploy/k8s/):
#   sidecar migrate                          the schema (a job, before the services)
#   python -m ingest_svc.main                DICOM (TLS) + Ingest RPC
#   python -m imaging_svc.main               preprocess
#   python -m normalizer_svc.main            model calls to Triton
#   python -m workflow_svc.main              the pipeline's state machine
#   python -m workflow_svc.report_loop.hl7.main   HL7 MLLP (TLS)
#   python -m review_gateway.main            the review API and app
#   python -m sidecar_app.runtime.viewer     the OHIF viewer (bundle in /opt/ohif)
#   sidecar up                               all-in-one, against SIDECAR_DATABASE_URL,
#                                            SIDECAR_NATS_URL and SIDECAR_TRITON_URL (or, built
#                                            with --build-arg EXTRAS=embedded, its own servers)

# A Debian bookworm with python3.11 and its venv module; python:3.11-slim for everyone else.
ARG BASE=python:3.11-slim
# 25.07 or later: NVIDIA's Triton security bulletin of August 2025 (CVE-2025-23319, -23320,
# -23334: the Python backend, which the reference models use, could be driven by a remote
# unauthenticated request to disclose or corrupt memory and run code) is fixed from r25.07 on.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.07-py3

# ---- frontend: the review app from its lock file; the pinned OHIF tarball ------------------
FROM ${BASE} AS frontend
# The machine's registry settings, when make image passes them (paths only, never secrets).
ARG NPM_CONFIG_REGISTRY
ARG NPM_CONFIG_CAFILE
ARG HTTP_PROXY
ARG HTTPS_PROXY
ARG NO_PROXY
ENV DEBIAN_FRONTEND=noninteractive NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false \
    NPM_CONFIG_UPDATE_NOTIFIER=false
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src/review_gateway/frontend
COPY review_gateway/frontend/package.json review_gateway/frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY review_gateway/frontend ./
RUN npm run build
# OHIF as `make install` fetches it: `npm pack` the version the lock file pins; the build stage
# checks the tarball's sha512 against the lock before unpacking (sidecar_app.runtime.ohif_fetch).
COPY deploy/ohif/ohif.lock.json /src/deploy/ohif/ohif.lock.json
RUN mkdir /ohif-pack && cd /ohif-pack \
 && npm pack "$(node -p "const l=require('/src/deploy/ohif/ohif.lock.json'); l.package+'@'+l.version")" \
      --silent >/dev/null \
 && ls /ohif-pack/*.tgz

# ---- requirements: the project's dependencies, read from pyproject.toml -------------------
# (a file whose content, not pyproject.toml's, keys the cached dependency layer below)
FROM ${BASE} AS requirements
ARG EXTRAS=""
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c "import tomllib; d = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = [e for e in '${EXTRAS}'.split(',') if e]; \
print('\n'.join(d['dependencies'] + [r for e in extras for r in d['optional-dependencies'][e]]))" \
      > /requirements.txt

# ---- build: the project and its dependencies in a virtualenv --------------------------------
FROM ${BASE} AS build
ARG EXTRAS=""
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT
ARG HTTP_PROXY
ARG HTTPS_PROXY
ARG NO_PROXY
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install -q --upgrade pip wheel
WORKDIR /src
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -q -r /tmp/requirements.txt
COPY pyproject.toml ./
COPY README.md ./
COPY protos ./protos
COPY sidecar_core ./sidecar_core
COPY sidecar_app ./sidecar_app
COPY sidecar_synth ./sidecar_synth
COPY ingest_svc ./ingest_svc
COPY imaging_svc ./imaging_svc
COPY normalizer_svc ./normalizer_svc
COPY workflow_svc ./workflow_svc
COPY review_gateway ./review_gateway
COPY deploy/ohif/ohif.lock.json ./deploy/ohif/ohif.lock.json
COPY --from=frontend /src/review_gateway/static/app ./review_gateway/static/app
RUN /opt/venv/bin/pip install -q --no-deps ".${EXTRAS:+[${EXTRAS}]}" \
 && test -f /opt/venv/lib/python3.11/site-packages/review_gateway/static/app/index.html \
 && ls /opt/venv/lib/python3.11/site-packages/review_gateway/static/app/assets/*.js.br \
      /opt/venv/lib/python3.11/site-packages/review_gateway/static/app/assets/*.js.gz >/dev/null
COPY --from=frontend /ohif-pack /ohif-pack
RUN /opt/venv/bin/python -m sidecar_app.runtime.ohif_fetch --target /opt/ohif \
      --tarball "$(ls /ohif-pack/*.tgz)"

# ---- sidecar: every service, the review app, OHIF; `sidecar up` all-in-one -----------------
FROM ${BASE} AS sidecar
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    SIDECAR_DATA_DIR=/var/lib/sidecar \
    SIDECAR_VIEWER_DIR=/opt/ohif \
    SIDECAR_MODEL_REGISTRY_PATH=/etc/sidecar/models.yaml
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/ohif /opt/ohif
COPY deploy/models.yaml /etc/sidecar/models.yaml
RUN (getent group 10001 >/dev/null || groupadd --system --gid 10001 sidecar) \
 && (getent passwd 10001 >/dev/null || useradd --system --uid 10001 --gid 10001 \
      --home-dir /var/lib/sidecar --shell /usr/sbin/nologin sidecar) \
 && mkdir -p /var/lib/sidecar /etc/sidecar && chown 10001:10001 /var/lib/sidecar \
 && sidecar --help >/dev/null
USER 10001:10001
WORKDIR /var/lib/sidecar
# 50051 Ingest RPC, 11112 DICOM, 2762 DICOM TLS, 50052 workflow, 50053 normalizer,
# 8080 review gateway, 8081 OHIF viewer, 2575 MLLP, 2576 MLLP TLS, 9464 metrics
EXPOSE 50051 11112 2762 50052 50053 8080 8081 2575 2576 9464
CMD ["python", "-m", "workflow_svc.main"]

# ---- triton: NVIDIA Triton with the reference models (python backend, numpy < 2) ----------
FROM ${TRITON_IMAGE} AS triton
# 25.x images are Ubuntu 24.04: should its Python be marked externally managed (PEP 668),
# pip needs this; harmless otherwise.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 pip install --no-cache-dir "numpy>=1.24,<2"
COPY deploy/triton/models /models
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models", "--allow-gpu-metrics=true"]
