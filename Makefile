# Thin wrappers over scripts/; each script works on its own too.
.PHONY: all generate checkgenerate lint test dev tools

all: test

tools:          ## install protoc plugins, grpcurl and buf (idempotent)
	scripts/tools.sh

generate:       ## regenerate gen/ and web/src/gen/ from proto/
	scripts/generate.sh

checkgenerate lint: ## buf lint and format, generated code up to date, gofmt, go vet
	scripts/check.sh

test:           ## the whole suite: checks, then go test -race ./...
	scripts/test.sh

dev:            ## run the whole system in one process
	go run ./cmd/paygate dev
