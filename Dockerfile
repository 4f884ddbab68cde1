# syntax=docker/dockerfile:1
# One Dockerfile, two images:
#   docker build --target sidecar -t radiology-sidecar:0.1.0 .       every sidecar service
#   docker build --target triton  -t radiology-sidecar-triton:0.1.0-25.07 . Triton 25.07 + models
# The service an image runs is its command (see deploy/compose.yaml, deploy/k8s/).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# 25.07 or later: NVIDIA's Triton security bulletin of August 2025 (CVE-2025-23319, -23320,
# -23334: the Python backend, which the reference models use, could be driven by a remote
# unauthenticated request to disclose or corrupt memory and run code) is fixed from r25.07 on.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.07-py3

# ---- build: wheels of the project and its dependencies ------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY sidecar_core ./sidecar_core
COPY sidecar_app ./sidecar_app
COPY sidecar_synth ./sidecar_synth
COPY ingest_svc ./ingest_svc
COPY imaging_svc ./imaging_svc
COPY normalizer_svc ./normalizer_svc
COPY workflow_svc ./workflow_svc
COPY review_gateway ./review_gateway
RUN pip wheel --wheel-dir /wheels .

# ---- sidecar: ingest, preprocess (imaging_svc), workflow, normalizer, gateway (one each) ---
FROM ${PYTHON_IMAGE} AS sidecar
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    SIDECAR_DATA_DIR=/var/lib/sidecar \
    SIDECAR_MODEL_REGISTRY_PATH=/etc/sidecar/models.yaml \
    SIDECAR_INGEST_HOST=0.0.0.0 SIDECAR_DICOM_HOST=0.0.0.0 SIDECAR_WORKFLOW_HOST=0.0.0.0 \
    SIDECAR_NORMALIZER_HOST=0.0.0.0 SIDECAR_GATEWAY_HOST=0.0.0.0
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels radiology-ai-sidecar \
 && groupadd --system --gid 10001 sidecar \
 && useradd --system --uid 10001 --gid sidecar --home-dir /var/lib/sidecar sidecar \
 && mkdir -p /var/lib/sidecar /etc/sidecar && chown sidecar:sidecar /var/lib/sidecar
COPY deploy/models.yaml /etc/sidecar/models.yaml
USER 10001:10001
WORKDIR /var/lib/sidecar
# 50051 Ingest RPC, 11112 DICOM, 50052 workflow, 50053 normalizer, 8080 review gateway
EXPOSE 50051 11112 50052 50053 8080
CMD ["python", "-m", "workflow_svc.main"]

# ---- triton: NVIDIA Triton with the reference models (python backend, numpy < 2) ----------
FROM ${TRITON_IMAGE} AS triton
# 25.x images are Ubuntu 24.04: should its Python be marked externally managed (PEP 668),
# pip needs this; harmless otherwise.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 pip install --no-cache-dir "numpy>=1.24,<2"
COPY deploy/triton/models /models
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models", "--allow-gpu-metrics=true"]
