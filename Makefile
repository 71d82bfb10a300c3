# uplinkd — see README.md. `make run` and `make test` work on a fresh Debian 12
# machine as root: they install what is missing first.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:/usr/sbin:/sbin:$(PATH)
GO      ?= go
BIN     := bin/uplinkd
PKGS    := ./...
BENCHTIME ?= 1x

.PHONY: all build deps test lint examples unit run bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/uplinkd

deps:
	@scripts/deps.sh

# Everything: lint, then all tests (pure and lab/real-kernel) under the race
# detector. Lab tests need root; they create and always remove their own
# network namespaces and fail if the host namespace changed.
test: deps lint
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	staticcheck $(PKGS)
	@$(MAKE) --no-print-directory examples

# Every shipped example must load without a warning or an error (`plan` needs
# root and a kernel: the Compute tests in policy/ and firewall/ cover that).
examples:
	@$(GO) build -o bin/uplinkd-check ./cmd/uplinkd
	@set -e; for f in contrib/*.toml; do bin/uplinkd-check check --strict "$$f"; done

# Fast tests without root or kernel changes.
unit:
	$(GO) test -count=1 -short $(PKGS)

# Builds, starts the lab (namespaces only), runs the daemon in it with the
# lab config and prints its events until Ctrl-C, then removes the lab.
run: deps build
	$(GO) build -o bin/labrun ./internal/labrun
	bin/labrun -uplinkd $(BIN) -config contrib/lab.toml -demo

# Benchmarks that print the figures docs/performance.md records.
bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -count=1 -timeout 20m $(PKGS)

clean:
	rm -rf bin
