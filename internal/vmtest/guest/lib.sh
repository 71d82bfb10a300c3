# Shared helpers of the VM scenarios (sourced). Output protocol, read by
# the Go driver (internal/vmtest):
#   TIMING name=<ms>_ms      a measured duration
#   PASS name                a check that held
#   FAIL name: why           a check that did not (followed by the journal
#                            tail of uplinkd and the kernel state)
#   XFAIL name: why          a check known to fail until another change lands
#   SKIP name: why           a check that cannot run in this tree
#   TARGET name: met|MISSED  a timing against the product's target; reported,
#                            not a failure (the VM is emulated on a shared
#                            host: a tight bound here would only be flaky)
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
FAILS=0
CONF=/etc/uplinkd/uplinkd.toml

# now_ms: wall clock in milliseconds without forking.
now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }

pass()  { echo "PASS $1"; }
xfail() { echo "XFAIL $1: $2"; }
skip()  { echo "SKIP $1: $2"; }
timing() { echo "TIMING $1=$2_ms"; }
target() { # target NAME LIMIT_MS VALUE_MS
  # A negative duration is a broken measurement (an event the script
  # missed, so it timed the wrong one), never a met target.
  if (( $3 < 0 )); then fail "$1" "measured $3 ms: the end came before the start (a missed event)"
  elif (( $3 <= $2 )); then echo "TARGET $1: met ($3 ms <= $2 ms)"
  else echo "TARGET $1: MISSED ($3 ms > $2 ms)"; fi
}
fail() {
  echo "FAIL $1: $2"
  FAILS=$((FAILS + 1))
  diag
}
check() { # check NAME WHY COMMAND...: PASS when COMMAND succeeds, else FAIL
  local name=$1 why=$2
  shift 2
  if "$@" >/dev/null 2>&1; then pass "$name"; else fail "$name" "$why"; fi
}

diag() {
  echo "----- journalctl -u uplinkd (tail)"
  journalctl -u uplinkd -n 40 --no-pager -o short-monotonic 2>&1
  echo "----- ip rule"
  ip rule
  echo "----- ip route show table all"
  ip route show table all | grep -v '^local\|^broadcast\|^multicast\|^ff\|^fe80\|^::1\|table local'
  echo "----- nft list ruleset"
  nft list ruleset
  echo "-----"
}

# wait_until TIMEOUT_MS COMMAND...: polls COMMAND (every 20 ms) until it
# succeeds; prints the milliseconds it took; fails after TIMEOUT_MS.
wait_until() {
  local limit=$1 start now
  shift
  start=$(now_ms)
  while true; do
    if "$@" >/dev/null 2>&1; then
      now=$(now_ms)
      echo $((now - start))
      return 0
    fi
    now=$(now_ms)
    if (( now - start > limit )); then
      echo $((now - start))
      return 1
    fi
    sleep 0.02
  done
}

addr_of() { ip -4 -o addr show dev "$1" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1; }
has_addr() { [[ -n $(addr_of "$1") ]]; }
route_dev() { ip route get "$@" 2>/dev/null | grep -o 'dev [^ ]*' | head -1 | cut -d' ' -f2; }
route_via() { [[ $(route_dev "${@:2}") == "$1" ]]; }
has_rule() { ip rule | grep -q "from $1 lookup $2"; }
table_default() { ip route show table "$1" | grep -q "^default .*dev $2"; }
# default_table: the table holding uplinkd's main default route: the one
# looked up right after `lookup main suppress_prefixlength 0` when the
# build routes around foreign default routes, else main.
default_table() {
  if ip rule | grep -q 'suppress_prefixlength'; then
    ip rule | awk '/suppress_prefixlength/{f=1;next} f && /from all lookup/{print $NF=="uplinkd" ? $(NF-2) : $NF; exit}'
  else
    echo main
  fi
}

# client_pppd PEER: the pid of the gateway's pppd that pon started for PEER.
# (Not /run/pppN.pid: the ISPs' pppds in their namespaces write the same
# file names.)
client_pppd() { pgrep -xf "/usr/sbin/pppd call $1" | head -1; }
has_snat() { nft list table ip uplinkd 2>/dev/null | grep -q "snat to $1\b"; }

# kernel_state: what uplinkd owns or touches, without counters, for
# before/after comparisons.
kernel_state() {
  ip rule
  ip route show table all | grep -v 'table local'
  nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'
}

install_uplinkd() {
  if ! dpkg -i /vmtest/uplinkd.deb >/tmp/dpkg.log 2>&1; then
    fail install "dpkg -i uplinkd.deb: $(tail -5 /tmp/dpkg.log)"
    return 1
  fi
  pass "install (dpkg -i, $(dpkg-query -W -f '${Version}' uplinkd))"
  # The unit may have been started by the package's postinst with the
  # shipped config; the scenario's config is written before it is
  # (re)started.
  systemctl stop uplinkd >/dev/null 2>&1 || true
}

# start_uplinkd NAME: systemctl start; prints the ms until systemd reports
# it active (Type=notify: after READY=1).
start_uplinkd() {
  local t0 t1 ctnl=""
  # ctnetlink is a module that the kernel loads on its first request.
  # uplinkd asks once at start, so that the load (about 0.3 s here) is not
  # part of the first failover: checked by the first scenario that starts
  # uplinkd on a system without the module.
  [[ -d /sys/module/nf_conntrack_netlink ]] && ctnl=loaded
  t0=$(now_ms)
  if ! systemctl start uplinkd; then
    fail "$1" "systemctl start uplinkd failed"
    return 1
  fi
  t1=$(now_ms)
  timing "$1" $((t1 - t0))
  if [[ -z $ctnl ]]; then
    check ctnetlink_loaded_at_start "nf_conntrack_netlink is not loaded once uplinkd is ready" test -d /sys/module/nf_conntrack_netlink
  fi
}

# lan_up: the gateway's LAN (a dummy interface: SNAT needs a LAN network,
# no LAN host is needed for these checks).
lan_up() {
  ip link add lan0 type dummy
  ip addr add 10.0.0.1/24 dev lan0
  ip link set lan0 up
}

# isp_up I: an rp-pppoe server in namespace ispI on a veth whose gateway
# end is ethI (the interface the seed's peer files name). Pool
# 100.(64+I).0.10 - .17; the server's own address 100.(64+I).0.1.
isp_up() {
  local i=$1
  if [[ ! -e /etc/ppp/pppoe-server-options.vmtest ]]; then
    cat >/etc/ppp/pppoe-server-options.vmtest <<'OPT'
require-chap
lcp-echo-interval 5
lcp-echo-failure 2
ms-dns 192.0.2.53
OPT
    # One secret for both directions: the client reads it to answer CHAP,
    # the ISP's pppd to check it (both lines log in with the seed's user).
    printf '"your username here" * "vmtest-secret" *\n' >/etc/ppp/chap-secrets
    printf '"your username here" * "vmtest-secret" *\n' >/etc/ppp/pap-secrets
    chmod 600 /etc/ppp/chap-secrets /etc/ppp/pap-secrets
  fi
  install -m 644 /vmtest/files/dsl-provider /vmtest/files/dsl-provider2 /vmtest/files/dsl-oneshot /etc/ppp/peers/
  ip netns add isp$i
  ip link add eth$i type veth peer name wan netns isp$i
  ip link set eth$i up
  ip -n isp$i link set lo up
  ip -n isp$i link set wan up
  # Something to route to: the same "internet" address at every ISP.
  ip -n isp$i addr add 192.0.2.1/32 dev lo
  # Which ISP a ping went to: echo requests counted on arrival.
  ip netns exec isp$i nft -f - <<'NFT'
table ip isp {
  chain input {
    type filter hook input priority 0; policy accept;
    icmp type echo-request counter
  }
}
NFT
  # rp-pppoe appends a freed session slot (and its address) to the end of
  # its free list, so a redial gets a new address, as from a real ISP.
  ip netns exec isp$i pppoe-server -I wan -C isp$i -L 100.$((64 + i)).0.1 \
    -R 100.$((64 + i)).0.10 -N 8 -O /etc/ppp/pppoe-server-options.vmtest
}

# isp_pings I: echo requests ISP I has received so far.
isp_pings() { ip netns exec isp$1 nft list chain ip isp input | grep -o 'packets [0-9]*' | cut -d' ' -f2; }

# pings_reach NAME ISP: root's two pings to 192.0.2.1 arrive at ISP (and
# are answered).
pings_reach() {
  local b rc d
  b=$(isp_pings "$2")
  ping -c 2 -i 0.2 -W 1 192.0.2.1 >/dev/null 2>&1
  rc=$?
  d=$(( $(isp_pings "$2") - b ))
  if (( d == 2 && rc == 0 )); then pass "$1"
  else fail "$1" "ping rc=$rc, echo requests at ISP $2: +$d of 2"; fi
}

# Kernel-side timings: `ip -ts monitor` stamps each rtnetlink event when it
# reads it, so the time between two events does not include the polling
# and forking of the checks (slow under emulation).
# mon_start FILE OBJECTS...: starts a monitor (pid in MON_PID).
# mon_start FILE OBJECT...: `ip -ts monitor OBJECT...` into FILE, returning
# once its socket has joined the multicast groups: the process starts slowly
# in the emulated VM, and an event from before that is missing from FILE
# (once a drop's address deletions were, and the failover was timed from
# the redial's new address: -7858 ms).
mon_start() {
  local f=$1
  shift
  ip -ts monitor "$@" >"$f" 2>&1 &
  MON_PID=$!
  wait_until 10000 mon_subscribed >/dev/null || echo "ip monitor (pid $MON_PID) not subscribed after 10 s"
}
# mon_subscribed: a netlink socket of MON_PID is bound to groups
# (/proc/net/netlink: Groups is the 4th column, Inode the last).
mon_subscribed() {
  local ino
  for ino in $(ls -l /proc/$MON_PID/fd 2>/dev/null | grep -o 'socket:\[[0-9]*\]' | tr -dc '0-9\n'); do
    awk -v i="$ino" '$1 != "sk" && $NF == i && $4 != "00000000" {f = 1} END {exit !f}' /proc/net/netlink && return 0
  done
  return 1
}
mon_stop() { kill "$MON_PID" 2>/dev/null; wait "$MON_PID" 2>/dev/null; }
# mon_ms FILE ERE: the time of day in ms of the first event matching ERE.
mon_ms() {
  RE=$2 awk '$0 ~ ENVIRON["RE"] && /^\[/ {
    t = substr($1, index($1, "T") + 1); sub(/\]$/, "", t)
    split(t, p, ":"); printf "%d\n", (p[1] * 3600 + p[2] * 60 + p[3]) * 1000; exit }' "$1"
}

# cleanup_all: stops everything a scenario may have started, so the next
# scenario starts from the booted VM's state.
cleanup_all() {
  systemctl stop uplinkd >/dev/null 2>&1
  uplinkd flush --config $CONF >/dev/null 2>&1
  poff -a >/dev/null 2>&1
  ifdown --force wlan0 >/dev/null 2>&1
  for ns in isp0 isp1 AP; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill "$p" 2>/dev/null; done
  done
  sleep 0.5
  for ns in isp0 isp1 AP; do ip netns del $ns 2>/dev/null; done
  ip link del lan0 2>/dev/null
  ip link del eth0 2>/dev/null
  ip link del eth1 2>/dev/null
  return 0
}
