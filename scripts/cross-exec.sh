#!/usr/bin/env bash
# go test -exec wrapper of `make cross-test`: runs a test binary built for
# another architecture under qemu-user as the user nobody, so that the tests
# that need root (namespaces, the kernel's routing and firewall) skip
# themselves as they do for any non-root user, and the rest — pure logic,
# netlink and nfnetlink message encoding and decoding, config — run on the
# emulated CPU.
#
#   scripts/cross-exec.sh QEMU TESTBINARY [ARGS...]
#
# go test builds the binary in a work directory only root may read: it is
# copied to a directory of nobody's (also the tests' TMPDIR), removed
# afterwards.
set -euo pipefail
qemu=$1 bin=$2
shift 2
dir=$(mktemp -d /tmp/ux.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cp "$bin" "$dir/"
chmod 0755 "$dir" "$dir/${bin##*/}"
if [[ $(id -u) == 0 ]]; then
  chown 65534:65534 "$dir"
  runas=(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --)
else
  runas=()
fi

# Debian 12's qemu-user (7.2) can leave a Go program waiting forever in
# waitid for a child that has exited (golang/go#69259): a CI run hung in
# watcher/probe after its PASS until go test's 20-minute timeout. The
# package's tests take well under a minute emulated; a binary still running
# after $limit seconds gets SIGQUIT (the Go runtime prints every goroutine's
# stack, so a hang of our own shows where it is) and runs once more. A
# second hang, or any failure, fails the package.
limit=${CROSS_EXEC_LIMIT:-420}
run() {
  HOME="$dir" timeout --signal=QUIT --kill-after=30s "$limit" "${runas[@]}" "$qemu" "$dir/${bin##*/}" "$@"
}
rc=0
run "$@" || rc=$?
if ((rc == 124)); then
  echo "cross-exec: ${bin##*/} under $qemu still running after ${limit}s (stacks above); running it once more" >&2
  rc=0
  run "$@" || rc=$?
fi
exit "$rc"
