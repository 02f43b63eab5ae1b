#!/usr/bin/env bash
# Static checks: buf lint and format, generated code up to date, gofmt, go vet.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh
export PATH="$PWD/bin:$PATH"
buf=web/node_modules/.bin/buf

echo "check: buf lint" >&2
$buf lint
echo "check: buf format" >&2
$buf format --diff --exit-code

echo "check: generated code is up to date" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r gen "$tmp/gen.before"
mkdir -p "$tmp/web.before" && cp -r web/src/gen "$tmp/web.before/gen"
scripts/generate.sh
if ! diff -r "$tmp/gen.before" gen >/dev/null || ! diff -r "$tmp/web.before/gen" web/src/gen >/dev/null; then
	diff -ru "$tmp/gen.before" gen | head -40 >&2 || true
	diff -ru "$tmp/web.before/gen" web/src/gen | head -40 >&2 || true
	echo "check: FAILED: generated code was stale; run scripts/generate.sh and commit the result" >&2
	exit 1
fi

echo "check: gofmt" >&2
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '^gen/') 2>/dev/null || true)
if [[ -n "$unformatted" ]]; then
	echo "check: FAILED: not gofmt-formatted: $unformatted" >&2
	exit 1
fi

echo "check: go vet" >&2
go vet ./...
go vet -tags crashpoints ./...
