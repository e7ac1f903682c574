# Lodge: see README.md. `make demo` and `make test` work on a fresh Debian 12 machine.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
AGENT_TAGS := netgo osusergo seccomp
BIN := bin

.PHONY: all build setup deps demo test unit integration conformance-oci conformance-oci-quick bench generate fmt vet clean

all: build

build: $(BIN)/lodge $(BIN)/lodge-runtime $(BIN)/lodge-agent

$(BIN)/lodge $(BIN)/lodge-runtime: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/$(@F)

# The agent is PID 1 in the guest: static, with libcontainer's nsenter (cgo)
# and libseccomp.
$(BIN)/lodge-agent: FORCE
	CGO_ENABLED=1 $(GO) build -tags '$(AGENT_TAGS)' -trimpath \
		-ldflags '$(LDFLAGS) -s -w -extldflags -static' -o $@ ./cmd/lodge-agent

FORCE:

# Host packages (apt, idempotent), then the guest kernel and initrd.
deps:
	scripts/install-deps.sh

setup: deps build
	$(BIN)/lodge setup --agent $(BIN)/lodge-agent

demo: setup
	scripts/demo.sh

test: setup unit integration conformance-oci-quick

# The OCI runtime-tools validation suite, all 58 programs (slow: a VM per
# container). docs/conformance-oci.md explains each failure.
conformance-oci: setup
	conformance/runtime-tools.sh

# The subset CI runs.
OCI_QUICK := ^(default|create|start|state|kill|kill_no_effect|delete_only_create_resources|hostname|hooks_stdin|process|process_capabilities|process_oom_score_adj|process_rlimits_fail|linux_masked_paths|linux_readonly_paths|linux_sysctl|linux_rootfs_propagation|mounts|pidfile|poststart|poststop|prestart|root_readonly_true)$$
conformance-oci-quick: setup
	conformance/runtime-tools.sh '$(OCI_QUICK)' | tail -3

unit:
	$(GO) vet ./...
	$(GO) test -count=1 ./internal/... ./api/...

integration:
	LODGE_INTEGRATION=1 LODGE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 30m -v ./test/... 2>&1 | tee /tmp/lodge-integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)' ; exit $${PIPESTATUS[0]}

bench: setup
	$(GO) run ./bench/startup -bin $(CURDIR)/$(BIN) -runs $${RUNS:-5}

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
