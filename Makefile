# containerd-shim-example-v2 — build, install, test.
BINARY      := containerd-shim-example-v2
BIN_DIR     := $(CURDIR)/bin
PREFIX      ?= /usr/local
GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION    ?= $(shell git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
MODULE      := github.com/example/containerd-shim-example-v2
LDFLAGS     := -s -w -X $(MODULE)/launch.Version=$(VERSION) -X $(MODULE)/launch.Revision=$(REVISION)
# Integration tests start real containerd daemons; they need the shim binary built first.
INTEGRATION_FLAGS ?=
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck

.PHONY: all build install deps test unit lint integration proto demo bench bench-quick clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN_DIR)/$(BINARY) ./cmd/shim

install: build
	install -D -m 0755 $(BIN_DIR)/$(BINARY) $(DESTDIR)$(PREFIX)/bin/$(BINARY)

deps:
	bash scripts/deps.sh

# The one test command (README, .ci/run): unit tests, then real containers under containerd 1.6 and 2.x.
test: build unit integration

unit: lint
	$(GO) test -count=1 ./...

# go.mod tidy (no direct import marked indirect), go vet and staticcheck (installed by
# `make deps`) over both modules.
lint:
	$(GO) mod tidy -diff
	cd integration && $(GO) mod tidy -diff
	$(GO) vet ./...
	cd integration && $(GO) vet ./...
	$(STATICCHECK) ./...
	cd integration && $(STATICCHECK) ./...

integration: build
	cd integration && SHIM_BINARY=$(BIN_DIR)/$(BINARY) $(GO) test -count=1 -timeout 40m $(INTEGRATION_FLAGS) ./...

proto:
	bash scripts/genproto.sh

# Side-by-side benchmark against containerd's stock containerd-shim-runc-v2 (same containerd, same
# runc, alternating runs). Prints a markdown table; the full run also writes docs/bench-latest.md.
bench: build
	cd integration && SHIM_BINARY=$(BIN_DIR)/$(BINARY) $(GO) run ./cmd/bench -flavor $(or $(FLAVOR),1.6) -out ../docs/bench-latest.md

bench-quick: build
	cd integration && SHIM_BINARY=$(BIN_DIR)/$(BINARY) $(GO) run ./cmd/bench -quick -flavor $(or $(FLAVOR),1.6)

# Sets up a private containerd and runs one container through the shim (README's first command).
demo: deps build
	bash scripts/demo.sh

clean:
	rm -rf $(BIN_DIR)
