# uplinkd — see README.md. `make run` and `make test` work on a fresh Debian 12
# machine as root: they install what is missing first.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:/usr/sbin:/sbin:$(PATH)
GO      ?= go
BIN     := bin/uplinkd
PKGS    := ./...
BENCHTIME ?= 1x

.PHONY: all build deps deps-lab test lint examples unit run bench clean deb debs install release-build package-docs vmtest cross-test fuzz stress-test

all: build

# uplinkd-helper beside uplinkd, where the daemon looks for it first.
build:
	$(GO) build -o $(BIN) ./cmd/uplinkd
	$(GO) build -o bin/uplinkd-helper ./cmd/uplinkd-helper

deps:
	@scripts/deps.sh

# Only what the lab uses (`make run`): not the VM suite's or the tests' tools.
deps-lab:
	@scripts/deps.sh lab

# Everything: lint, then all tests (pure and lab/real-kernel) under the race
# detector. Lab tests need root; they create and always remove their own
# network namespaces and fail if the host namespace changed.
# The VM suite runs on its own after the rest: a qemu guest under tcg takes a
# core for minutes, and the lab tests' timings should not compete with it.
test: deps lint
	$(GO) test -race -count=1 -timeout 15m -skip '^TestVM$$' $(PKGS)
	@$(MAKE) --no-print-directory cross-test
	@$(MAKE) --no-print-directory fuzz FUZZTIME=5s
	$(GO) test -count=1 -timeout 15m -v -run '^TestVM$$' ./internal/vmtest/

# Only the VM acceptance suite (internal/vmtest; also part of `make test`):
# a Debian VM with systemd, real pppd/rp-pppoe and a simulated wlan runs the
# scenarios in internal/vmtest/scenarios against the installed .deb. The
# image is cached in /var/cache/uplinkd-vm.
vmtest: deps
	$(GO) test -count=1 -v -timeout 17m -run TestVM ./internal/vmtest/

# The suite without the VM suite STRESS_N times (default 5) while CPU hogs
# keep every core busy; prints failures/runs of each failing test and fails
# if any run failed (scripts/stress-test.sh: STRESS_PKGS, STRESS_RUN, ...).
stress-test: deps
	@GO=$(GO) scripts/stress-test.sh

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	staticcheck $(PKGS)
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }
	@$(MAKE) --no-print-directory examples

# Every shipped example must load without a warning or an error (`plan` needs
# root and a kernel: the Compute tests in policy/ and firewall/ cover that).
examples:
	@$(GO) build -o bin/uplinkd-check ./cmd/uplinkd
	@$(GO) build -o bin/uplinkd-helper ./cmd/uplinkd-helper
	@set -e; for f in contrib/*.toml; do bin/uplinkd-check check --strict "$$f"; done

# Fast tests without root or kernel changes.
unit:
	$(GO) test -count=1 -short $(PKGS)

# Go fuzz targets, each for FUZZTIME (go test -fuzz takes one target and one
# package at a time). Their seed corpora (testdata/fuzz/) also run as plain
# tests in `make test`. A failure leaves the input in the package's
# testdata/fuzz/TARGET/: keep it there as a regression case.
# FUZZ_TARGETS: one PACKAGE:TARGET per entry.
FUZZTIME ?= 10s
FUZZ_TARGETS := \
	./internal/control:FuzzControlRequest \
	./policy:FuzzLoad
# Go 1.26's fuzz coordinator can end a clean run with a bare "context
# deadline exceeded" at the -fuzztime boundary on a loaded machine (go.dev/issue/75804,
# fixed in Go 1.27): such a run, which wrote no failing input, is run once
# more; a real finding always prints "Failing input written to" and fails.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  for try in 1 2; do \
	    echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
	    rc=0; out=$$($(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$pkg" 2>&1) || rc=$$?; \
	    echo "$$out"; \
	    [ $$rc -eq 0 ] && break; \
	    if [ $$try -eq 1 ] && echo "$$out" | grep -qx '    context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
	      echo "fuzz $$name: the coordinator's deadline race (go.dev/issue/75804), no failing input: once more"; continue; fi; \
	    exit 1; \
	  done; \
	done

# Builds, starts the lab (namespaces only), runs the daemon in it with the
# lab config and prints its events until Ctrl-C, then removes the lab.
run: deps-lab build
	$(GO) build -o bin/labrun ./internal/labrun
	bin/labrun -uplinkd $(BIN) -config contrib/lab.toml -demo

# Benchmarks that print the figures docs/performance.md records.
bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -count=1 -timeout 20m $(PKGS)

clean:
	rm -rf bin

# --- Packaging -------------------------------------------------------------
# `make deb`: bin/uplinkd_VERSION_DEBARCH.deb (nfpm, see packaging/nfpm.yaml).
# `make install DESTDIR=... PREFIX=/usr`: the same files, for other systems.
# The binary is static (CGO_ENABLED=0), so the package needs no libc
# dependency. VERSION: a v* tag (git describe), else 0.3.0~gitCOUNT.SHA,
# which sorts before 0.3.0.
# Raspberry Pi: `make deb GOARCH=arm64` (64-bit Raspberry Pi OS), `make deb
# GOARCH=arm` (32-bit Raspberry Pi OS: Debian's armhf, built for ARMv6
# hard-float, GOARM=6, so that it runs on every Pi). `make debs` builds
# amd64, arm64 and armhf.
BUILDDIR ?= bin
GOARCH   ?= $(shell $(GO) env GOARCH)
# ARMv6 unless told otherwise: Raspberry Pi OS's armhf runs on the Pi 1 and Zero.
GOARM    ?= $(if $(filter arm,$(GOARCH)),6)
# dpkg's name for the architecture: Go's arm is armhf (armel for GOARM=5).
DEBARCH  := $(if $(filter arm,$(GOARCH)),$(if $(filter 5,$(GOARM)),armel,armhf),$(if $(filter 386,$(GOARCH)),i386,$(GOARCH)))
ifeq ($(origin VERSION),undefined)
VERSION  := $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null) && echo "$${v\#v}" | tr - . || \
              echo "0.3.0~git$$(git rev-list --count HEAD 2>/dev/null || echo 0).$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
endif
RELBIN   := $(BUILDDIR)/pkg/$(DEBARCH)/uplinkd
RELHELPER := $(BUILDDIR)/pkg/$(DEBARCH)/uplinkd-helper
NFPM     ?= nfpm
# The date of the man pages and of the changelog's newest entry: the last
# commit's, so that a rebuild of one commit gives the same files.
PKGEPOCH := $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
GENDIR   := $(BUILDDIR)/pkg/doc

release-build:
	CGO_ENABLED=0 GOARCH=$(GOARCH) GOARM=$(GOARM) $(GO) build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' -o $(RELBIN) ./cmd/uplinkd
	CGO_ENABLED=0 GOARCH=$(GOARCH) GOARM=$(GOARM) $(GO) build -trimpath -ldflags '-s -w' -o $(RELHELPER) ./cmd/uplinkd-helper

# The man pages, rendered from docs/man/*.md (internal/mangen, go-md2man),
# and the Debian changelog (packaging/changelog with this build's version
# and date), compressed as Debian wants them: gzip -9n (best, no name or
# time stamp).
# mangen runs here: built for this machine whatever GOARCH the package is for.
package-docs:
	rm -rf $(GENDIR) && mkdir -p $(GENDIR)
	env -u GOARCH -u GOARM $(GO) run ./internal/mangen -version '$(VERSION)' -date "$$(date -u -d @$(PKGEPOCH) +%F)" -out $(GENDIR) docs/man/*.md
	sed -e 's/@VERSION@/$(VERSION)/' -e "s/@DATE@/$$(LC_ALL=C date -u -R -d @$(PKGEPOCH))/" packaging/changelog > $(GENDIR)/changelog
	gzip -9nf $(GENDIR)/*

deb: release-build package-docs
	@command -v $(NFPM) >/dev/null || { echo "nfpm missing: run scripts/deps.sh"; exit 1; }
	UPLINKD_VERSION='$(VERSION)' UPLINKD_ARCH='$(DEBARCH)' UPLINKD_BIN='$(RELBIN)' UPLINKD_HELPER='$(RELHELPER)' UPLINKD_GEN='$(GENDIR)' \
	  $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(BUILDDIR)/

debs:
	@set -e; for a in amd64 arm64 arm; do $(MAKE) --no-print-directory deb GOARCH=$$a; done

PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
SBINDIR    ?= $(PREFIX)/sbin
DOCDIR     ?= $(PREFIX)/share/doc/uplinkd
MANDIR     ?= $(PREFIX)/share/man
# bash-completion also reads /usr/local/share/bash-completion/completions.
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
# /usr/lib/systemd/system on Debian; systemd also reads /usr/local/lib/systemd/system.
UNITDIR    ?= $(PREFIX)/lib/systemd/system
# networkd-dispatcher reads /usr/lib/networkd-dispatcher and /etc/networkd-dispatcher only.
NDDIR      ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/networkd-dispatcher,$(SYSCONFDIR)/networkd-dispatcher)

# An existing /etc/uplinkd/uplinkd.toml is never overwritten.
install: release-build package-docs
	install -D -m 0755 $(RELBIN) $(DESTDIR)$(SBINDIR)/uplinkd
	install -D -m 0755 $(RELHELPER) $(DESTDIR)$(PREFIX)/lib/uplinkd/uplinkd-helper
	sed 's|/usr/sbin/uplinkd|$(SBINDIR)/uplinkd|g' packaging/systemd/uplinkd.service > $(BUILDDIR)/uplinkd.service
	install -D -m 0644 $(BUILDDIR)/uplinkd.service $(DESTDIR)$(UNITDIR)/uplinkd.service
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/uplinkd/hooks.d
	[ -e $(DESTDIR)$(SYSCONFDIR)/uplinkd/uplinkd.toml ] || \
	  install -m 0644 packaging/uplinkd.toml $(DESTDIR)$(SYSCONFDIR)/uplinkd/uplinkd.toml
	install -D -m 0755 packaging/ppp/ip-up.d/uplinkd $(DESTDIR)$(SYSCONFDIR)/ppp/ip-up.d/uplinkd
	install -D -m 0755 packaging/ppp/ip-down.d/uplinkd $(DESTDIR)$(SYSCONFDIR)/ppp/ip-down.d/uplinkd
	install -D -m 0755 packaging/ifupdown/if-up.d/uplinkd $(DESTDIR)$(SYSCONFDIR)/network/if-up.d/uplinkd
	install -D -m 0755 packaging/ifupdown/if-post-down.d/uplinkd $(DESTDIR)$(SYSCONFDIR)/network/if-post-down.d/uplinkd
	install -D -m 0644 packaging/iproute2/rt_protos.conf $(DESTDIR)$(SYSCONFDIR)/iproute2/rt_protos.d/uplinkd.conf
	install -D -m 0644 packaging/iproute2/rt_tables.conf $(DESTDIR)$(SYSCONFDIR)/iproute2/rt_tables.d/uplinkd.conf
	install -D -m 0755 packaging/networkd-dispatcher/routable.d/uplinkd $(DESTDIR)$(NDDIR)/routable.d/uplinkd
	for s in off no-carrier degraded; do \
	  install -D -m 0755 packaging/networkd-dispatcher/off.d/uplinkd $(DESTDIR)$(NDDIR)/$$s.d/uplinkd || exit 1; \
	done
	install -D -m 0644 contrib/dhcpcd/70-uplinkd $(DESTDIR)$(PREFIX)/lib/dhcpcd/dhcpcd-hooks/70-uplinkd
	install -D -m 0644 packaging/lintian-overrides $(DESTDIR)$(PREFIX)/share/lintian/overrides/uplinkd
	install -D -m 0644 packaging/bash-completion/uplinkd $(DESTDIR)$(BASHCOMPDIR)/uplinkd
	install -D -m 0644 $(GENDIR)/uplinkd.8.gz $(DESTDIR)$(MANDIR)/man8/uplinkd.8.gz
	install -D -m 0644 $(GENDIR)/uplinkd.toml.5.gz $(DESTDIR)$(MANDIR)/man5/uplinkd.toml.5.gz
	install -D -m 0644 packaging/copyright $(DESTDIR)$(DOCDIR)/copyright
	install -D -m 0644 $(GENDIR)/changelog.gz $(DESTDIR)$(DOCDIR)/changelog.gz
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -D -m 0644 -t $(DESTDIR)$(DOCDIR)/docs docs/*.md
	install -D -m 0644 -t $(DESTDIR)$(DOCDIR)/docs/man docs/man/*.md
	install -D -m 0644 packaging/systemd/networkd-uplinkd.conf $(DESTDIR)$(DOCDIR)/examples/networkd-uplinkd.conf
	install -D -m 0755 packaging/keepalived/uplinkd-notify $(DESTDIR)$(PREFIX)/lib/uplinkd/uplinkd-notify
	install -D -m 0644 packaging/keepalived/keepalived.conf $(DESTDIR)$(DOCDIR)/examples/keepalived.conf
	install -m 0644 contrib/*.toml $(DESTDIR)$(DOCDIR)/examples/
	install -D -m 0755 -t $(DESTDIR)$(DOCDIR)/examples/hooks contrib/hooks/*.sh
	install -D -m 0644 -t $(DESTDIR)$(DOCDIR)/examples/hooks contrib/hooks/*.toml

# The tests that need no root, for the Raspberry Pi's arm64 and armhf
# (GOARM=6) under qemu-user (scripts/deps.sh installs it): 32-bit ARM
# catches alignment and struct-size bugs in the netlink code. The test
# binaries run as nobody (scripts/cross-exec.sh), so the tests that need
# root (namespaces, the kernel) skip themselves as for any non-root user.
# internal/control is left out: its socket-abuse tests race the clock, and
# under emulation a busy answer can close before a slow client wrote.
CROSS_PKGS ?= ./policy/... ./internal/kernel ./internal/linklog ./internal/dhcpd ./watcher/... ./firewall/...
cross-test:
	GOARCH=arm64 $(GO) test -short -count=1 -timeout 20m -exec '$(CURDIR)/scripts/cross-exec.sh qemu-aarch64' $(CROSS_PKGS)
	GOARCH=arm GOARM=6 $(GO) test -short -count=1 -timeout 20m -exec '$(CURDIR)/scripts/cross-exec.sh qemu-arm' $(CROSS_PKGS)
