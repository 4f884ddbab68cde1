#!/usr/bin/env bash
# Lints the protobuf contracts with Buf (STANDARD rules), installed from the npm registry.
set -euo pipefail
version="$1"
tools=".tools/buf"
if [ ! -x "$tools/node_modules/.bin/buf" ]; then
  command -v npm >/dev/null 2>&1 || bash scripts/system-deps.sh npm
  mkdir -p "$tools"
  npm install --silent --prefix "$tools" "@bufbuild/buf@${version}" >/dev/null
fi
cd protos && "../$tools/node_modules/.bin/buf" lint && echo "buf lint: ok"
