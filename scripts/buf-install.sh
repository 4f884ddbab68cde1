#!/usr/bin/env bash
# Installs Buf VERSION from the npm registry into .tools/buf (once); prints the binary's path.
set -euo pipefail
version="$1"
tools=".tools/buf"
if [ ! -x "$tools/node_modules/.bin/buf" ]; then
  command -v npm >/dev/null 2>&1 || bash scripts/system-deps.sh npm >&2
  mkdir -p "$tools"
  npm install --silent --prefix "$tools" "@bufbuild/buf@${version}" >/dev/null
fi
echo "$PWD/$tools/node_modules/.bin/buf"
