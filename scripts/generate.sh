#!/usr/bin/env bash
# Regenerates gen/ (Go) and web/src/gen/ (TypeScript) from proto/ with buf.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh
export PATH="$PWD/bin:$PATH"
rm -rf gen web/src/gen
web/node_modules/.bin/buf generate
