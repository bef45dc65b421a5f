# IHA — instance high availability for OpenStack.
# `make help` lists the targets.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -s -w -X github.com/ihaproject/iha/pkg/version.Version=$(VERSION) -X github.com/ihaproject/iha/pkg/version.Revision=$(REVISION)
STATICCHECK_VERSION ?= v0.6.1
GOLANGCI_VERSION    ?= v2.6.2
# Test parallelism: the crash and scenario suites mostly wait on timers.
TEST_PARALLEL ?= 8
# -tags dev: the demo's own tests (cmd/iha-leader/dev_test.go); the binaries
# that make build ships are built without it (no simulator linked).
TEST_FLAGS ?= -race -shuffle=on -count=1 -parallel $(TEST_PARALLEL) -timeout 45m -tags dev

.DEFAULT_GOAL := help
.PHONY: help build test test-deps check fmt vet staticcheck lint tidy-check dev bench fuzz fuzz-replay clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build iha-leader, iha-agent and iha into bin/
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

test-deps: ## install what the tests start: Debian packages (ipmi_sim, fence_kdump_send, etcd, …) and a cached kube-apiserver
	scripts/install-test-deps.sh
	scripts/build-kube-apiserver.sh

test: test-deps ## install what the tests need, then run every test with the race detector
	GO=$(GO) scripts/go-test.sh $(TEST_FLAGS) ./...

dev: ## run the demo: a simulated cloud where one compute fails and recovers
	$(GO) run -tags dev ./cmd/iha-leader -dev

check: fmt vet tidy-check staticcheck lint ## the gate: gofmt, vet, go mod tidy, staticcheck, golangci-lint
	@echo "check: all clean"

fmt: ## fail if a file is not gofmt'ed
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet: ## go vet (the production build, with the demo's build tag, and the lab's scenarios)
	$(GO) vet ./...
	$(GO) vet -tags dev ./...
	$(GO) vet -tags 'lab labchaos labsoak' ./deploy/lab/...

tidy-check: ## fail if go mod tidy would change go.mod or go.sum
	@cp go.mod /tmp/iha-go.mod.bak; cp go.sum /tmp/iha-go.sum.bak; \
	$(GO) mod tidy; \
	if ! diff -q go.mod /tmp/iha-go.mod.bak >/dev/null || ! diff -q go.sum /tmp/iha-go.sum.bak >/dev/null; then \
	  diff -u /tmp/iha-go.mod.bak go.mod; cp /tmp/iha-go.mod.bak go.mod; cp /tmp/iha-go.sum.bak go.sum; \
	  echo "go mod tidy changes go.mod/go.sum: run it and commit"; exit 1; fi

staticcheck: ## staticcheck (installed at a pinned version on first use)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) -tags dev ./cmd/iha-leader/

lint: ## golangci-lint with .golangci.yml (import rules among them)
	@command -v golangci-lint >/dev/null 2>&1 || GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" golangci-lint run ./...

bench: ## benchmarks with their figures (recovery overhead, poll-cycle cost, fencing, gossip)
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 30m ./...

fuzz: ## fuzz every target for FUZZTIME each (default 20s)
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-20s} $$pkg || exit 1; \
	  done; done

clean: ## remove build outputs
	rm -rf bin dist

-include deploy/lab/lab.mk
-include deploy/package.mk
-include deploy/image/image.mk
