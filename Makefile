# Lodge: see README.md. `make demo` and `make test` work on a fresh Debian 12 machine.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
AGENT_TAGS := netgo osusergo seccomp
BIN := bin

.PHONY: all build kernel setup setup-run deps deps-run demo test unit fuzz integration conformance-oci conformance-oci-quick conformance-cri bench bench-cri bench-churn generate fmt vet clean

all: build

build: $(BIN)/lodge $(BIN)/lodge-runtime $(BIN)/containerd-shim-lodge-v2 $(BIN)/lodge-agent $(BIN)/lodge-init $(BIN)/lodge-qemu-rofile.so

$(BIN)/lodge $(BIN)/lodge-runtime $(BIN)/containerd-shim-lodge-v2: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/$(@F)

# The agent is PID 1 in the guest: static, with libcontainer's nsenter (cgo)
# and libseccomp.
$(BIN)/lodge-agent: FORCE
	CGO_ENABLED=1 $(GO) build -tags '$(AGENT_TAGS)' -trimpath \
		-ldflags '$(LDFLAGS) -s -w -extldflags -static' -o $@ ./cmd/lodge-agent

# A direct container's first step in the guest, beside the agent in the
# initrd: static, without cgo (it loads seccomp programs the agent
# compiled) and none of the agent's RPC code.
$(BIN)/lodge-init: FORCE
	CGO_ENABLED=0 $(GO) build -tags 'netgo osusergo' -trimpath \
		-ldflags '-s -w' -o $@ ./cmd/lodge-init

# Preloaded into a template clone's QEMU: its template's memory opens
# read-only (internal/vmm/qemu/rofile/rofile.c says why).
$(BIN)/lodge-qemu-rofile.so: internal/vmm/qemu/rofile/rofile.c
	$(CC) -shared -fPIC -O2 -Wall -o $@ $< -ldl

FORCE:

# Host packages (apt, idempotent), then the guest kernel, the initrd and
# the built-in image. deps-run/setup-run: only what Lodge itself runs.
deps:
	scripts/install-deps.sh all

deps-run:
	scripts/install-deps.sh run

# KERNEL=lodge: the guest runs Lodge's own kernel (`make kernel`) instead
# of Debian's generic one (docs/architecture.md, "The guest").
OWN_KERNEL := $(if $(filter lodge,$(KERNEL)),kernel)
SETUP_KERNEL = $(if $(OWN_KERNEL),--kernel "$$(scripts/build-kernel.sh)")

setup: deps build $(OWN_KERNEL)
	$(BIN)/lodge setup --agent $(BIN)/lodge-agent $(SETUP_KERNEL)

setup-run: deps-run build $(OWN_KERNEL)
	$(BIN)/lodge setup --agent $(BIN)/lodge-agent $(SETUP_KERNEL)

# Lodge's own guest kernel, built once per input and cached
# (scripts/build-kernel.sh; ~12 minutes on two cores).
kernel:
	scripts/install-deps.sh kernel
	scripts/build-kernel.sh

demo: setup-run
	scripts/demo.sh

test: setup unit fuzz integration conformance-oci-quick

unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./internal/... ./api/...
	# The agent's tests again with its build tags: seccomp filters in
	# direct containers against libcontainer's.
	CGO_ENABLED=1 $(GO) test -race -count=1 -tags '$(AGENT_TAGS)' -run 'TestDirect' ./internal/guest/agent/

integration:
	LODGE_INTEGRATION=1 LODGE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 30m -v ./test/...

# The OCI runtime-tools validation suite, all 58 programs (slow: a VM per
# container). docs/conformance-oci.md explains each failure.
conformance-oci: setup
	conformance/runtime-tools.sh

# The subset CI runs: programs Lodge passes completely; any failure fails CI.
OCI_QUICK := ^(default|create|state|kill|kill_no_effect|hostname|hooks_stdin|linux_masked_paths|linux_readonly_paths|linux_sysctl|process_oom_score_adj|poststop|delete_only_create_resources)$$
conformance-oci-quick: setup
	WORK=/tmp/lodge-oci-quick conformance/runtime-tools.sh '$(OCI_QUICK)' > /tmp/lodge-oci-quick.log 2>&1; tail -3 /tmp/lodge-oci-quick.log
	@grep -Eq '^runtime-tools: [0-9]+ passed, 0 failed' /tmp/lodge-oci-quick.log || { cat /tmp/lodge-oci-quick.log; exit 1; }

# containerd 1.6/2.4.2 ctr checks and critest through containerd-shim-lodge-v2 (slow:
# builds containerd 2.4.2 and cri-tools once; needs ../shared/tools).
# docs/conformance-cri.md explains each failure.
conformance-cri: setup
	conformance/cri.sh

# CRI pod start-up and PSS, lodge against runc (needs ../shared/tools).
bench-cri: setup
	bench/cri.sh

# Every fuzz target for FUZZTIME (default 10s) each; crashers stay in
# testdata/fuzz/ as seeds (scripts/fuzz.sh).
fuzz:
	scripts/fuzz.sh $${FUZZTIME:-10s}

# Start-up (lodge-runtime warm/cold/raw/runc), `lodge run` beside Podman+runc
# and Docker, a bridge network's join and leave (host side), a 100 MB pull
# with its conversion, stdio under load, commit, diff and build, compose.
bench: setup
	$(GO) run ./bench/startup -bin $(CURDIR)/$(BIN) -runs $${RUNS:-5}
	RUNS=$${RUNS:-5} bench/run.sh
	LODGE_BENCH_NET=1 RUNS=$${RUNS:-5} $(GO) test -count=1 -run '^TestBenchNetworkJoin$$' -v ./internal/cli/ | grep -v '^=== RUN'
	$(GO) run ./bench/pull -runs $${RUNS:-5}
	$(GO) run ./bench/stdio -bin $(CURDIR)/$(BIN) -runs $${RUNS:-3}
	BIN=$(CURDIR)/$(BIN) RUNS=$${RUNS:-5} bench/commit.sh
	BIN=$(CURDIR)/$(BIN) RUNS=$${RUNS:-5} bench/compose.sh

# Many sandbox lifecycles through lodge-runtime and CRI, then what the host
# holds against before them (about 6 minutes here).
bench-churn: setup
	BIN=$(CURDIR)/$(BIN) bench/churn.sh

# Regenerate the agent API (needs protoc; the plugins come from go.mod versions).
generate:
	GOBIN=$(CURDIR)/.gobin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc
	PATH=$(CURDIR)/.gobin:$$PATH protoc -I api/agent/v1 \
		--go_out=paths=source_relative:api/agent/v1 \
		--go-ttrpc_out=paths=source_relative:api/agent/v1 api/agent/v1/agent.proto

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) .gobin
