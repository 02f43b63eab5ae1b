#!/usr/bin/env bash
# Builds the web dashboard: type-checks web/src with tsc, then Vite writes web/dist/, which
# web/web.go embeds into the paygate binary. Commit web/dist/ after changing web/src/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh
cd web
echo "web: tsc --noEmit && vite build" >&2
npm run --silent build -- --logLevel warn
