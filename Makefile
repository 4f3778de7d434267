# Expo Free Agent build controller.
# mattn/go-sqlite3 needs cgo (gcc).
export CGO_ENABLED := 1

GO      ?= go
BIN     := bin
PKGS    := ./...
# What runs again on PostgreSQL (TEST_DATABASE_URL): every suite that opens a store.
PG_PKGS := ./store/... ./actors/... ./test/...
# An execution count, not a duration: with a duration, Go 1.26's fuzz
# coordinator can report "context deadline exceeded" at the end of the
# budget, failing a target that found nothing (a race in the coordinator).
FUZZTIME ?= 50000x

# The version stamped into the binaries (internal/version; `controller version`,
# /health, /metrics). Outside a git checkout (or without git) these are empty,
# nothing is stamped, and the binaries fall back to Go's build information or
# "dev". Override with `make build VERSION=v1.2.0`.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
VERSION_PKG := github.com/expo-free-agent/controller/internal/version
LDFLAGS := $(if $(VERSION),-X $(VERSION_PKG).version=$(VERSION)) \
           $(if $(REVISION),-X $(VERSION_PKG).revision=$(REVISION) \
             -X $(VERSION_PKG).modified=$(if $(filter %-dirty,$(VERSION)),true,false))

# The static controller for the container image (deploy/Containerfile): glibc
# linked in, the pure-Go user and DNS lookups (a static glibc cannot load its
# NSS modules). The linker warns that SQLite's dlopen needs the shared glibc at
# run time: harmless, the controller never loads SQLite extensions (add the tag
# sqlite_omit_load_extension to silence it, at the cost of compiling SQLite again).
STATIC_DIR   := $(BIN)/static
STATIC_TAGS  := osusergo netgo
STATIC_FLAGS := -linkmode external -extldflags -static
CA_BUNDLE    ?= /etc/ssl/certs/ca-certificates.crt
IMAGE        ?= expo-controller
IMAGE_BUILDER ?= podman

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the controller, mock worker and load tool into bin/
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

.PHONY: static
static: ## Build a static controller, with the CA bundle, into bin/static/ (deploy/Containerfile's context)
	$(GO) build -tags '$(STATIC_TAGS)' -ldflags '$(LDFLAGS) $(STATIC_FLAGS)' -o $(STATIC_DIR)/controller ./cmd/controller
	install -m 0644 $(CA_BUNDLE) $(STATIC_DIR)/ca-certificates.crt
	install -d -m 0750 $(STATIC_DIR)/state

.PHONY: image
image: static ## Build the container image IMAGE (expo-controller) with IMAGE_BUILDER (podman; or buildah, docker)
	$(IMAGE_BUILDER) build -f deploy/Containerfile -t $(IMAGE) $(STATIC_DIR)

.PHONY: run
run: ## Run the controller with its defaults (port 3000, ./data, ./storage)
	$(GO) run -ldflags '$(LDFLAGS)' ./cmd/controller

.PHONY: test
test: ## Run every test with the race detector
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || \
		echo "note: Chromium not found: the dashboard's browser test will be skipped (Debian/Ubuntu: apt-get install -y chromium)"
	@command -v curl >/dev/null && command -v jq >/dev/null || \
		echo "note: curl or jq not found: the docs examples test will be skipped (Debian/Ubuntu: apt-get install -y curl jq)"
	$(GO) test -race -count=1 $(PKGS)
	@# The store, actor and API suites once more on PostgreSQL, with the
	@# several-node tests (docs/TESTING.md, PostgreSQL). .ci/run starts a server.
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
		echo "TEST_STORE=postgres $(GO) test -race -count=1 $(PG_PKGS)"; \
		TEST_STORE=postgres $(GO) test -race -count=1 $(PG_PKGS); \
	elif [ -n "$$CI" ]; then \
		echo "error: CI runs the PostgreSQL suites: set TEST_DATABASE_URL (.ci/run starts a server)"; exit 1; \
	else \
		echo "note: TEST_DATABASE_URL not set: the PostgreSQL run of the store, actor and API suites was skipped"; \
		echo "      (run it: TEST_DATABASE_URL=postgres://user:password@127.0.0.1/db make test; docs/TESTING.md)"; \
	fi

.PHONY: lint
lint: ## go vet and gofmt
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: check
check: lint test ## Lint, then test

# Fuzz targets as package:Target; the corpora in testdata/fuzz are replayed by `make test`.
FUZZ_TARGETS := ./httpapi:FuzzSubmitMultipart ./httpapi:FuzzJSONBodies ./httpapi:FuzzPathIDs \
                ./httpapi:FuzzBatchLines ./httpapi:FuzzLogBody ./httpapi:FuzzAppendJSONString \
                ./httpapi/certs:FuzzParseCerts ./httpapi/certs:FuzzPasswordText ./store/domain:FuzzParseID

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 50000x: executions; a duration such as 10m works too)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg; \
	done

.PHONY: bench
bench: ## Go benchmarks of the hot paths (queue manager, store writes, upload/submit)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./store ./actors/... ./test

.PHONY: load
load: ## Start a fresh controller and run cmd/loadgen against it (ARGS="--scenario idle")
	cmd/loadgen/run-local.sh $(ARGS)

.PHONY: clean
clean: ## Remove built binaries
	rm -rf $(BIN)
