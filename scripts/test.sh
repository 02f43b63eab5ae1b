#!/usr/bin/env bash
# The whole test suite: installs what it needs, runs the static checks, then every Go test with
# the race detector (unit, in-process integration, and end-to-end tests against real processes).
#
#   scripts/test.sh              everything
#   scripts/test.sh -run Crash   extra arguments go to `go test`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/check.sh
export PATH="$PWD/bin:$PATH"
echo "test: go test -race ./..." >&2
go test -race -count=1 -timeout 20m "$@" ./...
