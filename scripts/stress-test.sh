#!/usr/bin/env bash
# make stress-test: runs the suite without the VM suite STRESS_N times
# (default 5) under the race detector while CPU hogs keep every core busy,
# then prints each test that failed with its failures/runs and exits 1 if any
# run failed. A test that passes here does not depend on being scheduled on
# time; the suite must pass on a busy 2-core machine.
#
#   STRESS_N        runs (default 5)
#   STRESS_PKGS     packages (default ./...), e.g. "./watcher/... ./hooks"
#   STRESS_RUN      a -run pattern (default: every test)
#   STRESS_HOGS     busy loops (default: nproc)
#   STRESS_TIMEOUT  go test -timeout of one run (default 20m)
#   STRESS_KEEP     a directory to keep each run's go test -json output in
set -euo pipefail
cd "$(dirname "$0")/.."

n=${STRESS_N:-5}
read -r -a pkgs <<<"${STRESS_PKGS:-./...}"
hogs=${STRESS_HOGS:-$(nproc)}
timeout=${STRESS_TIMEOUT:-20m}
GO=${GO:-go}
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "stress: STRESS_N must be a positive number, not '$n'" >&2; exit 2; }
[[ $hogs =~ ^[0-9]+$ ]] || { echo "stress: STRESS_HOGS must be a number, not '$hogs'" >&2; exit 2; }

out=$(mktemp -d)
hog_pids=()
test_pid=
cleanup() {
  # Every exit path (success, failure, Ctrl-C, kill) stops the hogs and a
  # go test still running (its own process group: go test and the test
  # binaries; the lab's GuardMain sweeps namespaces a killed run left).
  if [[ -n $test_pid ]]; then
    kill -TERM -- "-$test_pid" 2>/dev/null || true
    wait "$test_pid" 2>/dev/null || true
  fi
  if ((${#hog_pids[@]})); then
    kill "${hog_pids[@]}" 2>/dev/null || true
    wait "${hog_pids[@]}" 2>/dev/null || true
  fi
  if [[ -n ${STRESS_KEEP:-} ]]; then
    mkdir -p "$STRESS_KEEP" && cp "$out"/run*.json "$STRESS_KEEP"/ 2>/dev/null || true
  fi
  rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Build the tally and the test binaries' dependencies before the hogs start:
# compiling under load only makes the run longer.
"$GO" build -o "$out/stresstally" ./scripts/stresstally
"$GO" test -race -count=1 -run '^$' "${pkgs[@]}" >/dev/null

for ((i = 0; i < hogs; i++)); do
  ( trap - INT TERM HUP EXIT; while :; do :; done ) &
  hog_pids+=($!)
done
echo "stress: $n runs of ${pkgs[*]} with $hogs CPU hogs ($(nproc) cores)"

args=(-race -count=1 -json -timeout "$timeout" -skip '^TestVM$')
[[ -n ${STRESS_RUN:-} ]] && args+=(-run "$STRESS_RUN")
bad=0
for ((i = 1; i <= n; i++)); do
  start=$SECONDS
  rc=0
  # In the background and in its own process group, so that a signal to
  # this script runs the trap at once and the trap can stop the whole run.
  setsid "$GO" test "${args[@]}" "${pkgs[@]}" >"$out/run$i.json" 2>"$out/run$i.err" &
  test_pid=$!
  wait "$test_pid" || rc=$?
  test_pid=
  failed=$(grep -c '"Action":"fail"' "$out/run$i.json" || true)
  echo "stress: run $i/$n: exit $rc, $failed fail records, $((SECONDS - start))s"
  if ((rc != 0)); then
    bad=1
    # Build errors and the like go to stderr, outside the JSON stream.
    [[ -s $out/run$i.err ]] && sed 's/^/stress:   /' "$out/run$i.err" | head -20
  fi
done

rc=0
"$out/stresstally" "$out"/run*.json || rc=$?
if ((rc == 0 && bad)); then
  echo "stress: a run of go test failed without a failing test (see above)"
  rc=1
fi
exit "$rc"
