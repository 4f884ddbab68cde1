#!/usr/bin/env bash
# Cuts the next contracts release: a Buf image of protos/ as they are now, written to
# protos/releases/N+1.binpb; `scripts/buf-lint.sh` checks the working tree against the latest.
# Only after a breaking change is documented in CHANGELOG.md (docs/contracts.md).
set -euo pipefail
buf="$(bash scripts/buf-install.sh "${1:-1.75.0}")"
latest="$(ls protos/releases/*.binpb 2>/dev/null | sed 's#.*/##; s#\.binpb$##' | sort -n | tail -1)"
next=$(( ${latest:-0} + 1 ))
cd protos
"$buf" lint
"$buf" build -o "releases/${next}.binpb"
echo "contracts release ${next}: protos/releases/${next}.binpb"
