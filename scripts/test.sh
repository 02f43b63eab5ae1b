#!/usr/bin/env bash
# The whole test suite: installs what it needs, runs the static checks, then every Go test with
# the race detector (unit, in-process integration, and end-to-end tests against real processes),
# and then the end-to-end suite a second time with every store on PostgreSQL.
#
#   scripts/test.sh              everything
#   scripts/test.sh -run Crash   extra arguments go to `go test` (both passes)
#
# PAYGATE_TEST_BACKENDS=sqlite skips the PostgreSQL pass (=postgres runs only that pass).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/check.sh
# The PostgreSQL tests (the stores' contract tests, the end-to-end tests of gateway replicas, and
# the PostgreSQL pass below) use a local server at 127.0.0.1:5432 (or PAYGATE_TEST_DATABASE_URL)
# and skip, saying so, when none answers. Start the local clusters if they are installed but
# stopped.
if command -v pg_lsclusters >/dev/null 2>&1; then
	pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _ status _; do
		if [[ $status != online* ]]; then
			echo "test: starting PostgreSQL $version/$cluster" >&2
			pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || echo "test: could not start PostgreSQL $version/$cluster; its tests will skip" >&2
		fi
	done
fi
export PATH="$PWD/bin:$PATH"
backends=${PAYGATE_TEST_BACKENDS:-sqlite,postgres}
start=$SECONDS

if [[ ,$backends, == *,sqlite,* ]]; then
	echo "test: go test -race ./..." >&2
	go test -race -count=1 -timeout 20m "$@" ./...
	echo "test: first pass took $((SECONDS - start))s" >&2
fi

# The PostgreSQL pass: the end-to-end tests again, their cluster harness putting the gateway and
# every bank on fresh PostgreSQL databases of their own (PAYGATE_TEST_BACKEND, see
# internal/cluster). Left out, because this pass would only repeat them:
#   - TestDiskFull*: a full disk under a data directory is a fault of the SQLite stores (the
#     harness keeps clusters with data disks on SQLite whatever the backend);
#   - TestChaosShort, TestBench*, TestDev*, TestReadme*: they start systems of their own, not
#     the harness's (their PostgreSQL variants, TestChaosReplicas and the replica tests, ran in
#     the first pass);
#   - TestPostgres*, TestReplica*, TestChaosReplicas, TestWebhooksEndToEndReplicas: on
#     PostgreSQL already, in the first pass;
#   - TestTrace*, TestCLIVerbose*: what they check (spans, request ids) does not depend on
#     where the stores are.
if [[ ,$backends, == *,postgres,* ]]; then
	pgstart=$SECONDS
	# Without a reachable server every test of this pass skips, saying why.
	skip='^(TestDiskFull.*|TestChaosShort|TestChaosReplicas|TestBench.*|TestDev.*|TestReadme.*|TestPostgres.*|TestReplica.*|TestWebhooksEndToEndReplicas|TestTrace.*|TestCLIVerbose.*)$'
	echo "test: PAYGATE_TEST_BACKEND=postgres go test -race ./cmd/paygate ./internal/cluster (skipping $skip)" >&2
	PAYGATE_TEST_BACKEND=postgres go test -race -count=1 -timeout 20m -skip "$skip" "$@" ./cmd/paygate ./internal/cluster
	echo "test: PostgreSQL pass took $((SECONDS - pgstart))s" >&2
fi
echo "test: done in $((SECONDS - start))s" >&2
