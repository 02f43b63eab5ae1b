#!/usr/bin/env bash
# Installs the tools the repository's checks and tests need, idempotently, into ./bin and
# web/node_modules. Safe to run again: it only installs what is missing or at another version.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export GOBIN="$root/bin"
mkdir -p "$GOBIN"

# Go plugins for buf generate, at the versions go.mod pins for the runtime libraries.
protobuf_version=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
connect_version=$(go list -m -f '{{.Version}}' connectrpc.com/connect)
want_go_tool() { # name module version
	local stamp="$GOBIN/.$1.version"
	if [[ -x "$GOBIN/$1" && -f "$stamp" && "$(cat "$stamp")" == "$3" ]]; then
		return
	fi
	echo "tools: installing $1 $3" >&2
	go install "$2@$3"
	echo "$3" >"$stamp"
}
want_go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$protobuf_version"
want_go_tool protoc-gen-connect-go connectrpc.com/connect/cmd/protoc-gen-connect-go "$connect_version"
# grpcurl, for the README's transcripts and their test.
want_go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl v1.9.4
# staticcheck, for scripts/check.sh.
want_go_tool staticcheck honnef.co/go/tools/cmd/staticcheck v0.8.2

# buf and protoc-gen-es come from web/package-lock.json.
if [[ ! -x web/node_modules/.bin/buf || web/package-lock.json -nt web/node_modules/.package-lock.json ]]; then
	echo "tools: npm ci in web/" >&2
	(cd web && npm ci --no-audit --no-fund --loglevel=error)
fi

# Debian's Chromium, for the dashboard's browser test (web/dashboard_test.go; it skips without
# one). Installed only where apt-get is and we are root; otherwise say how.
if [[ ! -x /usr/bin/chromium ]]; then
	if command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
		echo "tools: apt-get install chromium" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
	else
		echo "tools: no /usr/bin/chromium: the browser test will be skipped (install Debian's chromium package, or set PAYGATE_CHROMIUM)" >&2
	fi
fi

# promtool, from Debian's prometheus package, lints the metrics scrape of the end-to-end test
# (cmd/paygate/e2e_metrics_test.go; it skips the lint without one). Installed like Chromium.
if ! command -v promtool >/dev/null; then
	if command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
		echo "tools: apt-get install prometheus (for promtool)" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	else
		echo "tools: no promtool: the metrics lint will be skipped (install Debian's prometheus package)" >&2
	fi
fi
