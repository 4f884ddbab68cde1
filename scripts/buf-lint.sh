#!/usr/bin/env bash
# Lints the protobuf contracts with Buf (STANDARD rules) and checks them against the latest
# released contracts (protos/releases/N.binpb, Buf's FILE breaking rules), so an accidental
# breaking change fails `make test` (docs/contracts.md).
set -euo pipefail
buf="$(bash scripts/buf-install.sh "$1")"
latest="$(ls protos/releases/*.binpb | sed 's#.*/##; s#\.binpb$##' | sort -n | tail -1)"
cd protos
"$buf" lint && echo "buf lint: ok"
"$buf" breaking --against "releases/${latest}.binpb" \
  && echo "buf breaking: ok against contracts release ${latest}"
