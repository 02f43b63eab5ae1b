#!/usr/bin/env bash
# Static checks: buf lint and format, generated code up to date, the built web dashboard up to
# date (tsc type-checks it on the way), gofmt, go vet, staticcheck.
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

echo "check: web/dist is what web/src builds" >&2
cp -r web/dist "$tmp/dist.before"
scripts/web.sh
if ! diff -r "$tmp/dist.before" web/dist >/dev/null; then
	diff -r "$tmp/dist.before" web/dist | head -20 >&2 || true
	echo "check: FAILED: the built dashboard was stale; run scripts/web.sh and commit web/dist" >&2
	exit 1
fi
if [[ $(grep -c '"resolved"' web/package-lock.json || true) != 0 ]]; then
	echo "check: FAILED: web/package-lock.json names registry URLs (\"resolved\"); regenerate it with omit-lockfile-registry-resolved" >&2
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

echo "check: staticcheck" >&2
staticcheck ./...
staticcheck -tags crashpoints ./...
