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

.PHONY: all build build-memdebug install deps test unit unit-race race-shim lint integration integration-runc integration-crun matrix proto demo bench bench-quick clean
# The current runc (make deps builds it from the Go module proxy); Debian's runc 1.1.5 is the other lane.
RUNC_CURRENT ?= /opt/runc/v1.5.1/runc
# $(call itest,ENV=...,go test arguments): the integration module's tests against the built shim.
itest = cd integration && SHIM_BINARY=$(BIN_DIR)/$(BINARY) $(1) $(GO) test -count=1 -timeout 40m $(2)

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN_DIR)/$(BINARY) ./cmd/shim

install: build
	install -D -m 0755 $(BIN_DIR)/$(BINARY) $(DESTDIR)$(PREFIX)/bin/$(BINARY)

# Everything `make test` uses (containerd releases, runc, Docker Engine); see scripts/deps.sh.
deps:
	bash scripts/deps.sh

# The one test command (README, .ci/run): unit tests, then real containers: the full suite under
# containerd 1.6 and the newest 2.x with Debian's runc 1.1.5 (plus the smoke set under 1.7-2.3,
# Docker Engine, and the containerd-free harness), then the full suite again with the current runc,
# the 1.6 suite with crun, then the shim itself built with the race detector under a concurrent
# selection (race-shim).
test: deps build unit unit-race integration integration-runc integration-crun race-shim

unit: lint
	$(GO) test -count=1 ./...

# The unit tests again under the race detector (cgo: Debian's gcc, which make deps installs).
unit-race:
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

# The shim binary built with -race, driven by the containerd-free harness and an integration
# selection under containerd 2.x; any race report from a shim process fails (scripts/race-shim.sh).
race-shim:
	BIN_DIR=$(BIN_DIR) bash scripts/race-shim.sh

# go.mod tidy (no direct import marked indirect), go vet and staticcheck (installed by
# `make deps`) over both modules.
lint:
	@unformatted=$$("$$($(GO) env GOROOT)/bin/gofmt" -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt -w these files: $$unformatted"; exit 1; fi
	$(GO) mod tidy -diff
	cd integration && $(GO) mod tidy -diff
	$(GO) vet ./...
	cd integration && $(GO) vet ./...
	$(STATICCHECK) ./...
	cd integration && $(STATICCHECK) ./...

integration: build
	$(call itest,,$(INTEGRATION_FLAGS) ./...)

# The suite under 1.6 and the newest 2.x again, every shim running the current runc. The
# smoke lines and the Docker tests (which always use the current runc) are not repeated.
integration-runc: build
	$(call itest,TEST_RUNC=$(RUNC_CURRENT) TEST_SMOKE_FLAVORS=none,$(INTEGRATION_FLAGS) -skip 'TestDocker' ./...)

# The suite under containerd 1.6 again with crun 1.8 (Debian's) as every shim's runtime; each
# daemon runs in a mount namespace without the cgroup2 mount (crun 1.8 refuses this host's hybrid
# layout). Only 1.6: crun 1.8 refuses the spec version the clients of 2.x write, so every test
# or subtest of a 2.x daemon skips (harness.SkipFlavorUnderCrun).
integration-crun: build
	$(call itest,TEST_RUNC=/usr/bin/crun TEST_LEGACY_CGROUPS=1 TEST_SMOKE_FLAVORS=none,$(INTEGRATION_FLAGS) -skip 'TestDocker' .)

# Only the containerd-free harness (integration/direct): the shim started as a manager starts it,
# its Task API driven over ttrpc, real runc and containers, no containerd; seconds, not minutes.
.PHONY: test-direct
test-direct: build
	cd integration && SHIM_BINARY=$(BIN_DIR)/$(BINARY) $(GO) test -count=1 ./direct/

# The cgroup v2 lane (docs/cgroup2.md): a selection of the suite under containerd 1.6 and the
# newest 2.x in a qemu guest whose only cgroup hierarchy is v2 (this host is v1 hybrid).
# CGROUP2_RUN is the -test.run regex: the cgroup, OOM, stats, update, pause, crun and
# checkpoint tests, a create killed midway, the in-place upgrade tests, rootless containerd in a delegated cgroup, Docker's
# top/pause/update/OOM and the core lifecycle set.
CGROUP2_RUN ?= ^(TestRunStreamsAndExitCode|TestKillRunningTask|TestSigterm|TestWaitExitStatusAndEvents|TestExec|TestTaskListAndPs|TestShimInfo|TestGroupingSharesOneShim|TestHarnessTeardown|TestPauseResume|TestUpdateResources|TestMetrics|TestOOMKill|TestCRIOOMScope|TestCRIPodLifecycle|TestOptionsShimCgroup|TestOptionsCrun|TestOptionsBinaryName|TestCheckpoint|TestShimWritesOnlyItsOwnFiles|TestKillWhilePaused|TestCreateKilledLeavesNoCgroups|TestLargeOutputCtrRun|TestIntrospection|TestUpgrade|TestSandbox|TestIdleShimMemoryBudget|TestRootlessContainerd|TestDockerResources)
.PHONY: test-cgroup2
test-cgroup2: build
	CGROUP2_RUN='$(CGROUP2_RUN)' bash scripts/cgroup2/test.sh

# The same guest with systemd as its init (docs/cgroup2.md): runc's systemd cgroup driver
# (SystemdCgroup = true), as Kubernetes nodes on cgroup v2 run it, for tasks and CRI pods, and
# Docker, whose default driver it is there; then booted again on cgroup v1 (systemd's hybrid
# layout, as older nodes run it) for the driver's tests.
SYSTEMD_RUN ?= ^(TestSystemdCgroupDriver|TestDockerResources)$$
SYSTEMD_V1_RUN ?= ^TestSystemdCgroupDriver$$
.PHONY: test-systemd test-systemd-v2 test-systemd-v1
test-systemd: test-systemd-v2 test-systemd-v1
test-systemd-v2: build
	CGROUP2_SYSTEMD=1 CGROUP2_RUN='$(SYSTEMD_RUN)' CGROUP2_LOG=$(BIN_DIR)/cgroup2/systemd-console.log bash scripts/cgroup2/test.sh
test-systemd-v1: build
	CGROUP2_SYSTEMD=1 CGROUP2_LEGACY=1 CGROUP2_RUN='$(SYSTEMD_V1_RUN)' CGROUP2_LOG=$(BIN_DIR)/cgroup2/systemd-v1-console.log bash scripts/cgroup2/test.sh

# The compatibility smoke set under every containerd line (1.6, 1.7, 2.0 ... 2.4), with each runc.
MATRIX_FLAVORS ?= 1.6 1.7 2.0 2.1 2.2 2.3 2.x
matrix: build
	$(call itest,TEST_SMOKE_FLAVORS="$(MATRIX_FLAVORS)",-run 'TestCompatSmoke' .)
	$(call itest,TEST_SMOKE_FLAVORS="$(MATRIX_FLAVORS)" TEST_RUNC=$(RUNC_CURRENT),-run 'TestCompatSmoke' .)

proto:
	bash scripts/genproto.sh

# Side-by-side benchmark against containerd's stock containerd-shim-runc-v2 (same containerd, same
# runc, alternating runs). Prints a markdown table; the full run also writes docs/bench-latest.md.
# LANES picks containerd releases and runtimes (default: 1.6, the newest 2.x, and 1.6 with crun).
bench: build
	cd integration && SHIM_BINARY=$(BIN_DIR)/$(BINARY) $(GO) run ./cmd/bench $(if $(LANES),-lanes $(LANES)) -out ../docs/bench-latest.md -chart ../docs/bench-latest.svg

# A debug build for memory analysis (cmd/shim/memdebug.go; docs/benchmarks.md says how to use it).
build-memdebug:
	CGO_ENABLED=0 $(GO) build -trimpath -tags memdebug -ldflags '-checklinkname=0' -o $(BIN_DIR)/$(BINARY)-memdebug ./cmd/shim

bench-quick: build
	cd integration && SHIM_BINARY=$(BIN_DIR)/$(BINARY) $(GO) run ./cmd/bench -quick -lanes $(or $(LANES),1.6)

# Sets up a private containerd and runs one container through the shim (README's first command).
demo: build
	bash scripts/deps.sh demo
	bash scripts/demo.sh

# The same through Docker Engine: private containerd 2.4 and dockerd, `docker run --runtime io.example.v2`.
.PHONY: docker-demo
docker-demo: build
	bash scripts/docker-demo.sh

clean:
	rm -rf $(BIN_DIR)
