#!/usr/bin/env bash
# Installs what uplinkd's make targets need on a fresh Debian 12 machine.
# Idempotent: installs only what is missing.
#
#   scripts/deps.sh lab    what `make run` uses: ip for the namespace lab
#                          (the daemon in it needs no other program with
#                          contrib/lab.toml's nftables backend), and nft and
#                          ping, which the lab's banner tells you to try;
#                          nothing else
#   scripts/deps.sh [full] what `make test` uses: the lab's tools, the real
#                          tools uplinkd drives or tests against, the VM
#                          suite's tool chain, the packaging checks (lintian,
#                          man), qemu-user for the arm tests, the Go linters
#                          and nfpm
set -euo pipefail

mode=${1:-full}
case $mode in
lab | full) ;;
*)
  echo "usage: scripts/deps.sh [lab|full]" >&2
  exit 2
  ;;
esac

need=()
# want CMD:PACKAGE...: adds PACKAGE to need when CMD is not on the PATH.
want() {
  local pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*} pkg=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 ||
      need+=("$pkg")
  done
}

# `make run` (internal/labrun): namespaces and veths with ip; the daemon
# writes nftables over netlink and runs no program. nft and ping are what the
# banner suggests for poking the lab (tcpdump, which it also mentions, is
# left to the user).
want ip:iproute2 nft:nftables ping:iputils-ping

if [[ $mode == full ]]; then
  # The lab tests: the host-namespace guard (iptables-save), the iptables
  # backend, traffic with nc.
  want iptables:iptables iptables-save:iptables nc:netcat-openbsd
  # The tests: the real tools uplinkd drives or tests against.
  want iptables-legacy:iptables conntrack:conntrack radvd:radvd setpriv:util-linux sysctl:procps knotd:knot \
       kdig:knot-dnsutils systemd-analyze:systemd dpkg-deb:dpkg run-parts:debianutils unshare:util-linux \
       pppd:ppp busybox:busybox dhclient:isc-dhcp-client keepalived:keepalived
  # The VM acceptance suite (internal/vmtest): qemu and the image recipe's tools.
  want qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap mkfs.ext4:e2fsprogs debugfs:e2fsprogs
  # The package checks (packaging/): lintian on the .deb, man on the pages,
  # bash for the completion; the arm64 and armhf tests (make cross-test).
  want lintian:lintian man:man-db groff:groff-base gzip:gzip bash:bash qemu-aarch64:qemu-user qemu-arm:qemu-user
fi

if ((${#need[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "deps: missing packages ${need[*]}; run as root (apt-get install)" >&2
    exit 1
  fi
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "deps: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The lab builds uplinkd and labrun with the go command alone (the modules
# are fetched by the build).
[[ $mode == lab ]] && exit 0

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
