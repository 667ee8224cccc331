#!/usr/bin/env bash
# Puts solc-v<version> where py-solc-x looks for it: a native solc of that exact version
# when one is on PATH, otherwise a shim that runs solc-js in-process through node.
set -euo pipefail
version=$1
target=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$(dirname "$target")"

native=$(command -v solc || true)
if [ -n "$native" ] && "$native" --version 2>/dev/null | grep -q "Version: $version+"; then
  ln -sf "$native" "$target"
  echo "solc $version: native $native"
  exit 0
fi

installed=$(node -p "require('solc/package.json').version")
if [ "$installed" != "$version" ]; then
  echo "node_modules has solc-js $installed, but $version is pinned: run npm ci" >&2
  exit 1
fi
printf '#!/bin/sh\nexec node "%s/solc.cjs" "$@"\n' "$here" > "$target"
chmod +x "$target"
echo "solc $version: solc-js through $target"
