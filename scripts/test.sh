#!/usr/bin/env bash
# The whole test suite: installs what it needs, runs the static checks, then every Go test with
# the race detector (unit, in-process integration, and end-to-end tests against real processes).
#
#   scripts/test.sh              everything
#   scripts/test.sh -run Crash   extra arguments go to `go test`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/check.sh
# The PostgreSQL tests (the bank ledger's PostgreSQL backend) use a local server at 127.0.0.1:5432
# (or PAYGATE_TEST_DATABASE_URL) and skip, saying so, when none answers. Start the local
# clusters if they are installed but stopped.
if command -v pg_lsclusters >/dev/null 2>&1; then
	pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _ status _; do
		if [[ $status != online* ]]; then
			echo "test: starting PostgreSQL $version/$cluster" >&2
			pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || echo "test: could not start PostgreSQL $version/$cluster; its tests will skip" >&2
		fi
	done
fi
export PATH="$PWD/bin:$PATH"
echo "test: go test -race ./..." >&2
go test -race -count=1 -timeout 20m "$@" ./...
