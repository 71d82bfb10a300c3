#!/usr/bin/env bash
# Installs what the tests and the lab need on a fresh Debian 12 machine:
# the real tools uplinkd drives or tests against, and the Go linters.
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
for pair in ip:iproute2 nft:nftables iptables:iptables iptables-legacy:iptables \
            conntrack:conntrack ping:iputils-ping nc:netcat-openbsd setpriv:util-linux \
            sysctl:procps knotd:knot kdig:knot-dnsutils systemd-analyze:systemd \
            dpkg-deb:dpkg run-parts:debianutils unshare:util-linux pppd:ppp \
            busybox:busybox dhclient:isc-dhcp-client keepalived:keepalived; do
  cmd=${pair%%:*} pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# The VM acceptance suite (internal/vmtest): qemu and the image recipe's tools.
for pair in qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap mkfs.ext4:e2fsprogs \
            debugfs:e2fsprogs; do
  cmd=${pair%%:*} pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "deps: missing packages ${need[*]}; run as root (apt-get install)" >&2
    exit 1
  fi
  echo "deps: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

export PATH="/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin:$PATH"
if ! command -v staticcheck >/dev/null 2>&1; then
  echo "deps: go install staticcheck"
  # Pinned: a new staticcheck release must not break CI unannounced.
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
if ! command -v nfpm >/dev/null 2>&1; then
  echo "deps: go install nfpm"
  # Builds the .deb (make deb). Pinned like staticcheck, and a tool only:
  # not a dependency in go.mod.
  go install github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
fi
go mod download
