#!/usr/bin/env bash
# `make image`: the sidecar image built here with buildah (no registry is reachable): FROM a Debian
# bookworm base made by mmdebstrap from the machine's own Debian mirror, cached under .image-cache/
# (git-ignored) and keyed by the mirror and the snapshot date of its sources, imported with
# `podman import`. The machine's package-registry settings (pip, npm, apt, CA certificates) are
# mounted into the build, never written into the Dockerfile or the image.
# Elsewhere: `docker build --target sidecar .` (BASE defaults to python:3.11-slim).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${IMAGE_TAG:-localhost/radiology-sidecar:dev}
EXTRAS=${IMAGE_EXTRAS:-}
CACHE=.image-cache
SOURCES=/etc/apt/sources.list.d/debian.sources
MIRROR=$(awk '/^URIs:/{print $2; exit}' "$SOURCES" 2>/dev/null || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SNAPSHOT=$(grep -o 'snapshot.debian.org/archive/debian/[0-9TZ]*' "$SOURCES" 2>/dev/null | head -1 | sed 's#.*/##' || true)
KEY=$(printf '%s %s bookworm minbase python3 python3-venv ca-certificates' "$MIRROR" "${SNAPSHOT:-$(date +%Y%m)}" \
      | sha256sum | cut -c1-12)
BASE=localhost/radiology-sidecar-base:bookworm-$KEY
mkdir -p "$CACHE"
if ! podman image exists "$BASE"; then
  if [ ! -s "$CACHE/base-$KEY.tar" ]; then
    echo "image: making the Debian base with mmdebstrap from $MIRROR"
    mmdebstrap --quiet --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$CACHE/base-$KEY.tar.part" "$MIRROR"
    mv "$CACHE/base-$KEY.tar.part" "$CACHE/base-$KEY.tar"
  fi
  podman import --quiet "$CACHE/base-$KEY.tar" "$BASE" >/dev/null
fi
# Read-only mounts of what the registries need on this machine (those present).
mounts=()
for path in /root/.config/pip /etc/pip.conf /root/.npmrc /etc/npmrc /usr/etc/npmrc \
            /etc/apt /opt/wheels /opt/pypi /opt/pypi-more; do
  [ -e "$path" ] && mounts+=(-v "$path:$path:ro")
done
envs=()
for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_DEFAULT_TIMEOUT \
            NPM_CONFIG_REGISTRY HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -n "${!name:-}" ] && envs+=(--build-arg "$name=${!name}")
done
# The machine's CA bundle (what its TLS path to the registries needs) beside the image's own
# /etc/ssl/certs, which apt inside the build must be free to update; pip and npm use it.
HOST_CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$HOST_CA" ]; then
  mounts+=(-v "$HOST_CA:/run/registry-ca.crt:ro")
  envs+=(--build-arg PIP_CERT=/run/registry-ca.crt --build-arg NPM_CONFIG_CAFILE=/run/registry-ca.crt)
fi
# IMAGE_NO_CACHE=1: every layer rebuilt (a cold build from the cached base).
cache=(--layers)
[ -n "${IMAGE_NO_CACHE:-}" ] && cache=(--no-cache)
start=$(date +%s)
buildah bud --isolation chroot "${cache[@]}" "${mounts[@]}" \
  --build-arg "BASE=$BASE" --build-arg "EXTRAS=$EXTRAS" "${envs[@]}" \
  --target sidecar -t "$TAG" -f Dockerfile . 2>&1 | grep -v "level=warning msg=\"missing"
echo "image: built $TAG in $(( $(date +%s) - start )) s from $BASE"
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$TAG"
