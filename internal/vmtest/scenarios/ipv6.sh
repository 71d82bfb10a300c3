# IPv6 on the two PPPoE lines (issue 18): real pppd with +ipv6 against the
# rp-pppoe servers; on the ISP side of each session (/etc/ppp/ipv6-up.d, in
# the ISP's namespace) radvd announces a /64 for the line, new at every
# session, and WIDE dhcp6s delegates a /56, also new at every session (ISC
# dhcpd -6 exits on a ppp interface: "Unsupported device type 512"); on the
# gateway the
# kernel takes the global address from the RA (accept_ra 2: the gateway
# forwards) and dhcpcd, configured as a Debian admin does (/etc/dhcpcd.conf
# with ia_pd per line), gets a prefix per line. uplinkd (the installed .deb
# under systemd, both uplinks with ipv6 = true) must install its IPv6 rules,
# tables and default; when ISP 0 ends ppp0's session the gateway's IPv6
# traffic leaves via ppp1; pppd's persist redial brings a new /64 and the
# rules follow it. The LAN side ([lan.ipv6] mode npt): dhcpcd's hook (the
# .deb's /usr/lib/dhcpcd/dhcpcd-hooks/70-uplinkd) tells uplinkd each line's
# delegation; a LAN host with one ULA address reaches the inet host via
# ppp0 from ppp0's delegated /64, via ppp1 from ppp1's when ppp0 is down,
# and via ppp0 from the new delegation after the redial.
source /vmtest/lib.sh

V6=/run/vmtest-ipv6
INET6=2001:db8:ffff::1 # the "internet" address, the same at both ISPs

ipv6_cleanup() {
  dhcpcd -x >/dev/null 2>&1
  rm -f /etc/ppp/ipv6-up.d/vmtest-isp /etc/ppp/ipv6-down.d/vmtest-isp /etc/dhcpcd.exit-hook /var/lib/dhcpcd/*
  [[ -f $V6/options.orig ]] && cp $V6/options.orig /etc/ppp/options
  [[ -f $V6/dhcpcd.conf.orig ]] && cp $V6/dhcpcd.conf.orig /etc/dhcpcd.conf
  sysctl -qw net.ipv6.conf.all.forwarding=0 net.ipv6.conf.default.accept_ra=1
  for p in $(ip netns pids lanhost 2>/dev/null); do kill "$p" 2>/dev/null; done
  ip netns del lanhost 2>/dev/null
}
trap 'ipv6_cleanup; cleanup_all' EXIT
# A scenario run before in the same VM may have left its files.
rm -rf $V6
mkdir -p $V6

# ---- what pppd +ipv6 needs of the kernel: IPv6 (built into Debian's
# kernel, not disabled on the command line) and ppp's IPv6 protocol.
if [[ -d /proc/sys/net/ipv6 ]] && ! grep -q 'ipv6.disable=1' /proc/cmdline; then
  pass "kernel_ipv6 ($(uname -r))"
else
  fail kernel_ipv6 "no IPv6 in this kernel ($(uname -r), $(cat /proc/cmdline))"
fi

# addr6_of IF: the first usable global IPv6 address (not tentative,
# deprecated or dadfailed), as uplinkd judges it.
addr6_of() { ip -6 -o addr show dev "$1" scope global -tentative -deprecated -dadfailed 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1; }
has_addr6() { [[ -n $(addr6_of "$1") ]]; }
# ll6_of IF [FLAGS...]: IF's link-local address (of those ip selects with
# FLAGS, e.g. -tentative).
ll6_of() { ip -6 -o addr show dev "$1" scope link "${@:2}" 2>/dev/null | awk '{print $4}' | head -1; }
route6_dev() { ip -6 route get "$@" 2>/dev/null | grep -o 'dev [^ ]*' | head -1 | cut -d' ' -f2; }
route6_via() { [[ $(route6_dev "${@:2}") == "$1" ]]; }
has_rule6() { ip -6 rule | grep -q "from $1 lookup $2"; }
table6_default() { ip -6 route show table "$1" | grep -q "^default .*dev $2"; }
# default_table6: the table of uplinkd's IPv6 default route, looked up right
# after its `lookup main suppress_prefixlength 0` rule.
default_table6() {
  ip -6 rule | awk '/suppress_prefixlength/{f=1;next} f && /from all lookup/{print $NF=="uplinkd" ? $(NF-2) : $NF; exit}'
}
# uplinkd_default6 DEV: uplinkd's own IPv6 default route is via DEV only
# (not the kernel's RA routes in main, which suppress_prefixlength 0
# routes around).
uplinkd_default6() {
  local t
  t=$(default_table6)
  [[ -n $t ]] && ip -6 route show table "$t" default | grep -q "dev $1 proto uplinkd" &&
    ! ip -6 route show table "$t" default | grep -v "dev $1 " | grep -q .
}
isp_pings6() { ip netns exec isp$1 nft list chain ip6 isp6 input | grep echo-request | grep -v saddr | grep -o 'packets [0-9]*' | cut -d' ' -f2; }
# isp_lan_pings6 I: echo requests at ISP I from its delegated pool (a LAN
# host behind NPTv6).
isp_lan_pings6() { ip netns exec isp$1 nft list chain ip6 isp6 input | grep 'echo-request.*saddr\|saddr.*echo-request' | grep -o 'packets [0-9]*' | cut -d' ' -f2; }
# lan_pings6_reach NAME ISP: the LAN host's two echo requests to INET6
# arrive at ISP from its delegated pool and are answered.
lan_pings6_reach() {
  local b rc d
  b=$(isp_lan_pings6 "$2")
  ip netns exec lanhost ping -6 -c 2 -i 0.2 -W 1 $INET6 >/dev/null 2>&1
  rc=$?
  d=$(( $(isp_lan_pings6 "$2") - b ))
  if (( d == 2 && rc == 0 )); then pass "$1"
  else fail "$1" "LAN host ping -6 rc=$rc, echo requests from ISP $2's delegated pool at ISP $2: +$d of 2"; fi
}
# lan6_status NAME DELEGATED NPT: status --json lan.ipv6 has uplink NAME
# with the learned delegation DELEGATED mapped to NPT.
lan6_status() {
  uplinkd status --json 2>/dev/null | tr -d ' \n' |
    grep -q "{\"name\":\"$1\",\"delegated\":\"$2\",\"source\":\"learned\"[^}]*\"npt\":\"$3\""
}
# pings6_reach NAME ISP [ping args]: two echo requests to INET6 arrive at ISP
# (counted there) and are answered.
pings6_reach() {
  local name=$1 isp=$2 b rc d
  shift 2
  b=$(isp_pings6 "$isp")
  ping -6 -c 2 -i 0.2 -W 1 "$@" $INET6 >/dev/null 2>&1
  rc=$?
  d=$(( $(isp_pings6 "$isp") - b ))
  if (( d == 2 && rc == 0 )); then pass "$name"
  else fail "$name" "ping -6 $* rc=$rc, echo requests at ISP $isp: +$d of 2"; fi
}
# PD_BOUND: the exit hook's reasons that carry a delegation.
PD_BOUND='^(BOUND6|RENEW6|REBIND6|REBOOT6)$'
# pd_of IF: the prefix dhcpcd last got delegated on IF (its exit hook's log).
pd_of() { awk -v i="$1" -v b="$PD_BOUND" '$2 == i {p = ($1 ~ b && $3 != "/") ? $3 : ""} END {print p}' $V6/pd.log 2>/dev/null; }
has_pd() { [[ -n $(pd_of "$1") ]]; }
# pd_since IF SINCE: dhcpcd's hook reported a delegation on IF at or after
# SINCE (unix seconds; the hook's line ends with its time).
pd_since() {
  awk -v i="$1" -v s="$2" -v b="$PD_BOUND" '$2 == i && $1 ~ b && $3 != "/" && $NF >= s {f = 1} END {exit !f}' $V6/pd.log 2>/dev/null
}
# dhcp6_counts I: "from the gateway/to the gateway" DHCPv6 packets at ISP I
# (all its sessions).
dhcp6_counts() {
  local t
  t=$(ip netns exec isp$1 nft list table ip6 isp6 2>/dev/null)
  echo "$(grep 'dport 547' <<<"$t" | grep -o 'packets [0-9]*' | cut -d' ' -f2)/$(grep 'sport 547' <<<"$t" | grep -o 'packets [0-9]*' | cut -d' ' -f2)"
}
# dhcpcd_last IF SINCE: dhcpcd's last journal line about IF since SINCE,
# as "UNIXTIME MESSAGE" (empty when it said nothing).
dhcpcd_last() {
  journalctl -t dhcpcd --since "@$2" --no-pager -o short-unix 2>/dev/null | grep " $1: " | tail -1 |
    sed -E 's/^([0-9]+)\.[0-9]+ [^ ]+ dhcpcd\[[0-9]+\]: /\1 /'
}
# pd_seen IF SINCE: one line of what the gateway and IF's ISP show of
# DHCPv6 on IF, for a check that failed (a CI log may keep only its tail).
pd_seen() {
  local isp=${1#ppp} last ll said
  last=$(dhcpcd_last "$1" "$2")
  if [[ -n $last ]]; then said="last line on $1 $(( $(date +%s) - ${last%% *} )) s ago: ${last#* }"
  else said="no line on $1 in the $(( $(date +%s) - $2 )) s since the wait began"; fi
  # The address and its flags (tentative, dadfailed) after "scope link".
  ll=$(ip -6 -o addr show dev "$1" scope link 2>/dev/null |
    awk '{o = $4; for (k = 5; k <= NF && $k != "link"; k++) ; for (k++; k <= NF && $k != "\\"; k++) o = o " " $k; print o; exit}')
  echo "$1 link-local: ${ll:-none} ;" \
    "dhcpcd: $(pidof dhcpcd >/dev/null && echo running || echo 'not running'), $said ;" \
    "ISP $isp: dhcp6s $(kill -0 "$(cat $V6/isp$isp/dhcp6s.pid 2>/dev/null)" 2>/dev/null && echo running || echo 'not running'), DHCPv6 packets from/to the gateway $(dhcp6_counts "$isp"), dhcp6s's last line: $(tail -1 $V6/isp$isp/dhcp6s.log 2>/dev/null | cut -c1-100)"
}
# dhcpcd 9.4.1 (Debian 12's) now and then never starts DHCPv6 on a PPP
# line that has just come up: it logs "delaying DHCPv6 for LL address" and
# waits for an address event that does not come, although the kernel has
# the line's link-local address (no more lines about that line follow;
# upstream NetworkConfiguration/dhcpcd#332, "DHCPv6 usually fails when PPPoE
# reconnects", and #359). In two VM runs of a redial loop it met 1 of 29
# redials (a restart of dhcpcd healed it), and a first dial once got no
# delegation either; a CI run once had no delegation on ppp0 without the
# scenario seeing that line. It is not uplinkd's part, so the scenario
# says XFAIL, does what heals it and goes on checking uplinkd. dhcpcd.conf
# has `debug` for the lines about each line, so a dhcpcd at work (soliciting,
# retransmitting) logs about the line at least every 32 s.
# dhcpcd_stalled IF SINCE: dhcpcd has reported no delegation on IF since
# SINCE, and it is idle about IF although IF's link-local address is usable
# (PD_LL_AT: since when): no dhcpcd runs (address usable for 20 s), or its
# last line about IF is "delaying DHCPv6 for LL address" and 20 s old
# (address usable for 20 s), or it has said nothing about IF for 40 s
# (address usable for 40 s). Sets PD_WHY.
PD_STALL_S=20 PD_SILENT_S=40
declare -A PD_LL_AT PD_LL_ADDR
dhcpcd_stalled() {
  local ll last age now
  pd_since "$1" "$2" && return 1
  ll=$(ll6_of "$1" -tentative -dadfailed)
  [[ -n $ll ]] || { PD_LL_ADDR[$1]=""; return 1; }
  now=$(date +%s)
  if [[ ${PD_LL_ADDR[$1]:-} != "$ll" ]]; then PD_LL_ADDR[$1]=$ll PD_LL_AT[$1]=$now; fi
  (( now - PD_LL_AT[$1] >= PD_STALL_S )) || return 1
  if ! pidof dhcpcd >/dev/null; then PD_WHY="dhcpcd is not running"; return 0; fi
  last=$(dhcpcd_last "$1" "$2")
  # Silent since SINCE when it said nothing about IF.
  if [[ -n $last ]]; then age=$(( now - ${last%% *} )); else age=$(( now - $2 )); fi
  if [[ $last == *"delaying DHCPv6 for LL address" ]] && (( age >= PD_STALL_S )); then
    PD_WHY="dhcpcd 9.4.1 waits for $1's link-local address ($ll), which the kernel has (upstream dhcpcd#332)"
    return 0
  fi
  if (( age >= PD_SILENT_S && now - PD_LL_AT[$1] >= PD_SILENT_S )); then
    PD_WHY="dhcpcd has no delegation on $1 and has said nothing about it for ${age} s: $(pd_seen "$1" "$2")"
    return 0
  fi
  return 1
}
# pd_wait MS SINCE COND IF...: waits up to MS for COND (a command). When
# dhcpcd stalls on one of the IFs first, says XFAIL, restarts dhcpcd (its
# hook then reports each delegation again) and waits up to MS once more,
# watching for a stall again, since a restarted dhcpcd can meet it again
# (12 VM runs of this scenario met dhcpcd#332 at 6 of their 36 waits). At
# most PD_RESTARTS restarts. Fails (returns 1) when COND does not come, and
# leaves in PD_SINCE the start of the last round, for pd_seen.
PD_RESTARTS=3
pd_wait() {
  local ms=$1 cond=$3 i n
  PD_SINCE=$2
  shift 3
  cond_or_stalled() {
    "$cond" && return 0
    # journalctl is slow in the VM: look every 2 s, not at every poll.
    (( $(now_ms) - PD_CHECKED < 2000 )) && return 1
    PD_CHECKED=$(now_ms)
    for i in "$@"; do dhcpcd_stalled "$i" "$PD_SINCE" && { PD_STUCK=$i; return 0; }; done
    return 1
  }
  for ((n = 0; ; n++)); do
    PD_STUCK="" PD_CHECKED=0 PD_WHY=""
    wait_until "$ms" cond_or_stalled "$@" >/dev/null
    "$cond" && return 0
    [[ -n $PD_STUCK ]] && (( n < PD_RESTARTS )) || return 1
    if [[ $PD_WHY == *dhcpcd#332* ]]; then i=dhcpcd_ll_$PD_STUCK; else i=dhcpcd_stall_$PD_STUCK; fi
    xfail "$i" "$PD_WHY; restarting dhcpcd ($((n + 1)) of at most $PD_RESTARTS)"
    journalctl -t dhcpcd --since "@$PD_SINCE" --no-pager -o short-monotonic | grep " $PD_STUCK: " | tail -8 | sed 's/^/dhcp-stuck: /'
    timeout 20 dhcpcd -x >/dev/null 2>&1
    # Its exit runs hooks, slow in an emulated VM; a dhcpcd still there
    # would take the new one's -b as a command and keep running stalled.
    if i=$(wait_until 30000 bash -c '! pidof dhcpcd'); then
      echo "dhcp-stuck: dhcpcd exited $i ms after dhcpcd -x returned"
    else
      echo "dhcp-stuck: dhcpcd did not exit in 30 s of dhcpcd -x; killing it"
      pkill -KILL -x dhcpcd
      wait_until 10000 bash -c '! pidof dhcpcd' >/dev/null
    fi
    # Only the new dhcpcd's lines count for the next stall.
    PD_SINCE=$(date +%s)
    dhcpcd -b >>$V6/dhcpcd.start 2>&1
  done
}

# ---- the gateway routes IPv6 (a LAN behind it) and still takes the RAs of
# its uplinks: what an admin sets in /etc/sysctl.d for an IPv6 router whose
# WAN address comes by SLAAC.
sysctl -qw net.ipv6.conf.all.forwarding=1 net.ipv6.conf.default.accept_ra=2

# ---- pppd with IPv6 on both ends (/etc/ppp/options is read by the
# gateway's and the ISPs' pppd); a short holdoff keeps the persist redial
# within the scenario's time.
cp /etc/ppp/options $V6/options.orig
printf '\n# vmtest ipv6\n+ipv6\nholdoff 3\n' >>/etc/ppp/options

# ---- the ISP side of each session's IPv6, run by the ISP's pppd
# (/etc/ppp/ipv6-up in the ISP's namespace; the gateway's pppd runs the same
# script and it does nothing there): the line's /64 (2001:db8:I:N::/64 for
# ISP I's Nth session, so a redial brings a new one) on the ISP's end,
# radvd announcing it, dhcp6s delegating 2001:db8:1I:N00::/56 to the
# gateway's DUID (WIDE's server delegates per host), and the route back to
# ISP I's pool 2001:db8:1I::/48 through the session.
cat >/etc/ppp/ipv6-up.d/vmtest-isp <<'EOF'
#!/bin/sh
ns=$(ip netns identify 2>/dev/null)
case $ns in isp[0-9]) ;; *) exit 0 ;; esac
i=${ns#isp} dir=/run/vmtest-ipv6/$ns iface=$1
[ -d $dir ] || exit 0
for d in radvd dhcp6s; do [ -f $dir/$d.pid ] && kill $(cat $dir/$d.pid) 2>/dev/null; done
n=$(( $(cat $dir/sessions 2>/dev/null || echo 0) + 1 ))
echo $n >$dir/sessions
echo "$PPPD_PID" >$dir/pppd
ip -6 addr add 2001:db8:$i:$n::1/64 dev $iface
ip -6 route replace 2001:db8:1$i::/48 dev $iface
cat >$dir/radvd.conf <<RADVD
interface $iface {
  AdvSendAdvert on;
  MinRtrAdvInterval 3;
  MaxRtrAdvInterval 4;
  AdvDefaultLifetime 600;
  prefix 2001:db8:$i:$n::/64 { AdvOnLink on; AdvAutonomous on; };
};
RADVD
radvd -C $dir/radvd.conf -p $dir/radvd.pid -m logfile -l $dir/radvd.log
cat >$dir/dhcp6s.conf <<DHCP6S
host gateway {
  duid 00:03:00:01:02:00:00:00:00:01;
  prefix 2001:db8:1$i:${n}00::/56 300 600;
};
DHCP6S
# In the foreground (-f) for its log; setsid: it outlives this script.
setsid dhcp6s -f -D -c $dir/dhcp6s.conf -P $dir/dhcp6s.pid $iface </dev/null >>$dir/dhcp6s.log 2>&1 &
echo $! >$dir/dhcp6s.pid
echo "$(date +%T.%N) session $n (pppd $PPPD_PID) on $iface: 2001:db8:$i:$n::/64" >>$dir/log
EOF
cat >/etc/ppp/ipv6-down.d/vmtest-isp <<'EOF'
#!/bin/sh
ns=$(ip netns identify 2>/dev/null)
case $ns in isp[0-9]) ;; *) exit 0 ;; esac
dir=/run/vmtest-ipv6/$ns
# Only this session's daemons (a later session may have started its own).
[ "$(cat $dir/pppd 2>/dev/null)" = "$PPPD_PID" ] || exit 0
for d in radvd dhcp6s; do [ -f $dir/$d.pid ] && kill $(cat $dir/$d.pid) 2>/dev/null; done
echo "$(date +%T.%N) down (pppd $PPPD_PID) on $1" >>$dir/log
EOF
chmod 755 /etc/ppp/ipv6-up.d/vmtest-isp /etc/ppp/ipv6-down.d/vmtest-isp

# isp6_up I: ISP I's IPv6: INET6 on its loopback, forwarding, echo requests
# to it counted.
isp6_up() {
  local i=$1 dir=$V6/isp$1
  mkdir -p $dir
  ip -n isp$i addr add $INET6/128 dev lo
  ip netns exec isp$i sysctl -qw net.ipv6.conf.all.forwarding=1
  ip netns exec isp$i nft -f - <<NFT
table ip6 isp6 {
  chain input {
    type filter hook input priority 0; policy accept;
    icmpv6 type echo-request counter
    icmpv6 type echo-request ip6 saddr 2001:db8:1$i::/48 counter
    udp dport 547 counter
  }
  chain output {
    type filter hook output priority 0; policy accept;
    udp sport 547 counter
  }
}
NFT
}

# ---- the LAN: lan0 on the gateway, eth0 of a host in namespace lanhost
ip netns add lanhost
ip link add lan0 type veth peer name eth0 netns lanhost
ip addr add 10.0.0.1/24 dev lan0
ip link set lan0 up
ip -n lanhost link set lo up
ip -n lanhost link set eth0 up
# The LAN's IPv6 is one ULA /64 ([lan.ipv6] prefix); uplinkd maps it to each
# line's delegated /64 on the way out (NPTv6).
ip addr add fd42:0:0:1::1/64 dev lan0 nodad
ip -n lanhost addr add fd42:0:0:1::10/64 dev eth0 nodad
ip -n lanhost -6 route add default via fd42:0:0:1::1

# ---- the ISPs
modprobe pppoe
isp_up 0
isp_up 1
isp6_up 0
isp6_up 1

# ---- uplinkd, both uplinks with ipv6 = true, running before the lines are
# dialled (as at boot), so dhcpcd's hook reaches it with the delegations
install_uplinkd || exit 1
mkdir -p /etc/uplinkd
cat >$CONF <<'TOML'
# Dual PPPoE, dual stack: everything via ppp0, ppp1 when ppp0 is down; the
# LAN's ULA /64 leaves through NPTv6 to the line's delegated /64.
[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]

[lan.ipv6]
mode   = "npt"
prefix = "fd42:0:0:1::/64"

[[uplink]]
name          = "ppp0"
interface     = "ppp0"
kind          = "ppp"
table         = 200
rule_priority = 200
tier          = 1
ipv6          = true

[[uplink]]
name          = "ppp1"
interface     = "ppp1"
kind          = "ppp"
table         = 201
rule_priority = 300
tier          = 2
ipv6          = true
TOML
start_uplinkd start_ready || exit 1

# ---- dhcpcd on the gateway as a Debian admin configures it for prefix
# delegation on two PPPoE lines: the manager (what the dhcpcd package's unit
# runs) on the lines and the LAN only, IPv6 only, router solicitation left
# to the kernel, a /56 requested on each line and its first /64 put on the
# LAN. Its exit hook records what it got.
cp /etc/dhcpcd.conf $V6/dhcpcd.conf.orig
# The gateway's DUID, known to the ISPs' dhcp6s (host entries).
mkdir -p /var/lib/dhcpcd
echo 00:03:00:01:02:00:00:00:00:01 >/var/lib/dhcpcd/duid
cat >/etc/dhcpcd.conf <<'EOF'
allowinterfaces ppp0 ppp1 lan0
ipv6only
noipv6rs
duid
option rapid_commit
debug
interface ppp0
  ia_pd 1 lan0/0
interface ppp1
  ia_pd 2 lan0/0
EOF
# dhcpcd 9.4.1 gives the uplink's delegation in new_dhcp6_ia_pd1_prefix1
# and _length (new_delegated_dhcp6_prefix is set only on the LAN
# interface's DELEGATED6: the addresses it put there).
cat >/etc/dhcpcd.exit-hook <<'EOF'
case $reason in
*6) echo "$reason $interface ${new_dhcp6_ia_pd1_prefix1:-}/${new_dhcp6_ia_pd1_prefix1_length:-} ${new_delegated_dhcp6_prefix:-} $(date +%s)" >>/run/vmtest-ipv6/pd.log ;;
esac
EOF
dhcpcd -b >$V6/dhcpcd.start 2>&1 || fail dhcpcd_start "dhcpcd -b: $(cat $V6/dhcpcd.start)"

# ---- dial both lines with pon, before uplinkd exists
t0=$(now_ms)
pon dsl-provider
pon dsl-provider2
for i in 0 1; do
  if wait_until 60000 has_addr ppp$i >/dev/null; then :; else fail dial_ppp$i "ppp$i got no IPv4 address in 60 s"; fi
  if wait_until 60000 bash -c "ip -6 -o addr show dev ppp$i scope link | grep -q fe80" >/dev/null; then
    pass "ipv6cp_link_local_ppp$i ($(ll6_of ppp$i))"
  else
    fail ipv6cp_link_local_ppp$i "ppp$i has no IPv6 link-local address 60 s after pon (IPv6CP)"
  fi
  if ms=$(wait_until 60000 has_addr6 ppp$i); then
    timing ra_address_ppp$i $(( $(now_ms) - t0 ))
    pass "ra_global_address_ppp$i ($(addr6_of ppp$i))"
  else
    fail ra_global_address_ppp$i "ppp$i has no global IPv6 address by RA 60 s after pon: $(ip -6 addr show dev ppp$i)"
  fi
done
A0=$(addr6_of ppp0) A1=$(addr6_of ppp1)
PID0=$(client_pppd dsl-provider)
echo "ppp0 $(addr_of ppp0) $A0, ppp1 $(addr_of ppp1) $A1"
ip -6 route show | sed 's/^/main6: /'
pd_diag() {
  echo "----- dhcpcd"
  journalctl -t dhcpcd --no-pager -o short-monotonic | tail -40
  for i in 0 1; do
    echo "----- isp$i: log, dhcp6s.log, radvd.log, DHCPv6 counters"
    cat $V6/isp$i/log; tail -20 $V6/isp$i/dhcp6s.log
    tail -5 $V6/isp$i/radvd.log
    ip netns exec isp$i nft list table ip6 isp6 | grep -e 547
    ip -n isp$i -6 addr
  done
  ip link show | grep -A1 ppp
}
pd_both() { has_pd ppp0 && has_pd ppp1; }
if pd_wait 60000 $((t0 / 1000 - 1)) pd_both ppp0 ppp1; then
  timing pd_both $(( $(now_ms) - t0 ))
fi
P0=$(pd_of ppp0) P1=$(pd_of ppp1)
if [[ $P0 == 2001:db8:10:*00::/56 ]]; then pass "pd_ppp0 ($P0 from ISP 0's pool)"
else fail pd_ppp0 "dhcpcd has no /56 from ISP 0's pool 2001:db8:10::/48 on ppp0 (${P0:-none}): $(pd_seen ppp0 "$PD_SINCE")"; PDFAIL=1; fi
if [[ $P1 == 2001:db8:11:*00::/56 ]]; then pass "pd_ppp1 ($P1 from ISP 1's pool)"
else fail pd_ppp1 "dhcpcd has no /56 from ISP 1's pool 2001:db8:11::/48 on ppp1 (${P1:-none}): $(pd_seen ppp1 "$PD_SINCE")"; PDFAIL=1; fi
[[ -n ${PDFAIL:-} ]] && pd_diag

converged6() {
  has_rule6 "$1" 200 && has_rule6 "$2" 201 && table6_default 200 ppp0 && table6_default 201 ppp1 &&
    uplinkd_default6 ppp0 && route6_via ppp0 $INET6
}
if wait_until 30000 converged6 "$A0" "$A1" >/dev/null; then
  pass converged6
else
  fail converged6 "IPv6 rules, tables or default not as expected 30 s after both lines had their addresses"
fi
check rule6_ppp0 "no 'from $A0 lookup 200' in ip -6 rule" has_rule6 "$A0" 200
check rule6_ppp1 "no 'from $A1 lookup 201' in ip -6 rule" has_rule6 "$A1" 201
check table6_200 "table 200 has no IPv6 default dev ppp0" table6_default 200 ppp0
check table6_201 "table 201 has no IPv6 default dev ppp1" table6_default 201 ppp1
check suppress6 "no IPv6 'lookup main suppress_prefixlength 0' rule" bash -c "ip -6 rule | grep -q 'lookup main suppress_prefixlength 0'"
if uplinkd_default6 ppp0; then pass "uplinkd_default6_ppp0 (table $(default_table6))"
else fail uplinkd_default6_ppp0 "uplinkd's IPv6 default (table $(default_table6)) not via ppp0 only: $(ip -6 route show table "$(default_table6)" default | tr '\n' ';')"; fi
ip -6 rule | sed 's/^/rule6: /'
uplinkd status --json >$V6/status.json 2>&1
js=$(tr -d ' \n' <$V6/status.json)
for u in "0 $A0 true" "1 $A1 false"; do
  read -r i a def <<<"$u"
  if grep -q "\"ipv6\":{\"state\":\"up\"[^}]*\"address\":\"$a\"[^}]*\"default\":$def" <<<"$js"; then
    pass "status_ipv6_ppp$i (up, $a, default $def)"
  else
    fail status_ipv6_ppp$i "uplinkd status --json has no ipv6 {state up, address $a, default $def}: $(grep -o '"ipv6":{[^}]*}' <<<"$js" | tr '\n' ' ')"
  fi
done
# Real traffic, counted where it arrives: the gateway's IPv6 via ppp0; from
# ppp1's address (its rule) via ppp1.
pings6_reach traffic6_ppp0 0
pings6_reach traffic6_from_ppp1_addr 1 -I "$A1"

# ---- the LAN side: the hook told uplinkd; a LAN host reaches inet via ppp0
if [[ -z ${PDFAIL:-} ]]; then
  for i in 0 1; do
    p=$(pd_of ppp$i)
    if wait_until 30000 lan6_status ppp$i "$p" "${p%/56}/64" >/dev/null; then
      pass "lan6_learned_ppp$i ($p, npt ${p%/56}/64)"
    else
      fail lan6_learned_ppp$i "status --json lan.ipv6 has no learned $p with npt ${p%/56}/64 for ppp$i: $(uplinkd status --json | tr -d ' \n' | grep -o '"lan":.*' | head -c 600)"
    fi
  done
  lan_pings6_reach lan_traffic6_npt_ppp0 0
fi

# ---- ISP 0 ends ppp0's session: the gateway's IPv6 leaves via ppp1
isp_session=""
for p in $(ip netns pids isp0); do
  [[ $(cat /proc/$p/comm 2>/dev/null) == pppd ]] && isp_session=$p
done
if [[ -z $isp_session ]]; then
  fail isp_session "no pppd session process in namespace isp0"
  exit 1
fi
watch=$V6/failover.watch
dt6=$(default_table6)
(
  up() { local f; read -r f </sys/class/net/ppp0/flags 2>/dev/null && (( f & 1 )); }
  while up; do sleep 0.005; done
  gone=$(now_ms); echo "gone $gone"
  until [[ $(ip -6 route show table "$dt6" default 2>/dev/null) == "default dev ppp1 proto uplinkd"* ]]; do
    (( $(now_ms) - gone > 20000 )) && { echo "nofailover"; exit; }
  done
  echo "failover $(now_ms)"
) >$watch &
watcher=$!
mon_start $V6/redial.monitor link address route rule
kill -TERM "$isp_session"
wait $watcher
cat $watch
gone=$(awk '$1=="gone"{print $2}' $watch)
fo=$(awk '$1=="failover"{print $2}' $watch)
if [[ -n $fo ]]; then
  timing ipv6_drop_failover $((fo - gone))
  # Loose on purpose (an emulated VM on a shared host; the kernel-side
  # figure below is the one to read): it still catches a failover that
  # waits for a timer or a probe instead of the event.
  if (( fo - gone <= 10000 )); then pass ipv6_failover
  else fail ipv6_failover "uplinkd's IPv6 default moved to ppp1 only $((fo - gone)) ms after ppp0 went down"; fi
else
  fail ipv6_failover "uplinkd's IPv6 default not via ppp1 within 20 s of ppp0 going down: $(ip -6 route show table "$dt6" default | tr '\n' ';')"
fi
check uplinkd_default6_ppp1 "uplinkd's IPv6 default not via ppp1 only while ppp0 is down" uplinkd_default6 ppp1
pings6_reach failover_traffic6_isp1 1
[[ -z ${PDFAIL:-} ]] && lan_pings6_reach lan_failover_traffic6_isp1 1

# ---- pppd's persist redial: a new session, a new /64 by RA
if ms=$(wait_until 60000 bash -c "a=\$(ip -6 -o addr show dev ppp0 scope global -tentative | awk '{print \$4}' | cut -d/ -f1 | head -1); [[ -n \$a && \$a != $A0 ]]"); then
  N0=$(addr6_of ppp0)
  timing ipv6_persist_redial $(( $(now_ms) - gone ))
  echo "ppp0 back: $N0 (was $A0), pppd $(client_pppd dsl-provider) (was $PID0)"
  # The first four groups are the /64 (2001:db8:I:N never compresses).
  check new_prefix6 "ppp0 came back with an address in the old /64 ($N0, was $A0)" test "$(cut -d: -f1-4 <<<"$N0")" != "$(cut -d: -f1-4 <<<"$A0")"
  rewritten6() { has_rule6 "$1" 200 && ! has_rule6 "$2" 200 && table6_default 200 ppp0 && uplinkd_default6 ppp0 && route6_via ppp0 $INET6; }
  if ms=$(wait_until 30000 rewritten6 "$N0" "$A0"); then
    timing ipv6_redial_rewritten "$ms"
    pass ipv6_rewritten
  else
    fail ipv6_rewritten "IPv6 rule/table/default not rewritten to $N0 within 30 s: $(ip -6 rule | tr '\n' ';')"
  fi
  mon_stop
  k_addr=$(mon_ms $V6/redial.monitor "inet6 $N0/")
  k_rule=$(mon_ms $V6/redial.monitor "from $N0 lookup 200")
  k_gone=$(mon_ms $V6/redial.monitor "ppp0.*inet6|inet6.*ppp0")
  # IPv6 routes print a metric, IPv4 ones do not.
  k_fail=$(mon_ms $V6/redial.monitor "^\\[[^]]*\\] default dev ppp1 table $dt6 proto uplinkd metric")
  if [[ -n $k_gone && -n $k_fail ]]; then
    timing ipv6_drop_failover_kernel $((k_fail - k_gone))
    target ipv6_failover_1s 1000 $((k_fail - k_gone))
  fi
  if [[ -n $k_addr && -n $k_rule ]]; then timing ipv6_redial_rule_kernel $((k_rule - k_addr)); fi
  echo "monitor events (gone=$k_gone failover=$k_fail addr=$k_addr rule=$k_rule)"
  grep -E 'ppp0|default|lookup 200' $V6/redial.monitor | head -30 | sed 's/^/monitor: /'
  pings6_reach redial_traffic6_ppp0 0
  if [[ -n ${PDFAIL:-} ]]; then
    skip pd_after_redial "no delegation before the redial"
  else
    new_pd() { local p; p=$(pd_of ppp0); [[ -n $p && $p != "$P0" ]]; }
    if pd_wait 60000 $((gone / 1000 - 1)) new_pd ppp0; then
      pass "pd_after_redial ($(pd_of ppp0), was $P0)"
      N0P=$(pd_of ppp0)
      if ms=$(wait_until 30000 lan6_status ppp0 "$N0P" "${N0P%/56}/64"); then
        timing lan6_npt_rewritten "$ms"
        pass "lan6_npt_rewritten (${N0P%/56}/64)"
        lan_pings6_reach lan_redial_traffic6_ppp0 0
      else
        fail lan6_npt_rewritten "status --json lan.ipv6 does not map ppp0 to ${N0P%/56}/64 30 s after dhcpcd got $N0P"
      fi
    else
      fail pd_after_redial "dhcpcd got no new delegated prefix on ppp0 within 60 s after the redial: $(pd_seen ppp0 "$PD_SINCE"); hook: $(tail -3 $V6/pd.log | tr '\n' ';')"
    fi
  fi
else
  mon_stop
  fail ipv6_persist_redial "ppp0 not back with a new global IPv6 address within 60 s: $(ip -6 addr show dev ppp0 2>&1 | tr '\n' ' ')"
fi

# ---- The LAN's own prefixes (issue 19): [lan.ipv6] mode prefix with
# uplinkd's router advertisements. The LAN host forgets its ULA default and
# takes an address from each line's delegated /64 by the kernel's own SLAAC
# (accept_ra 2 in its namespace, nothing else installed); when ISP 0 ends
# ppp0's session, uplinkd announces ppp0's /64 with preferred lifetime 0 and
# the host's address from it is deprecated, so a new connection leaves from
# ppp1's /64 through ppp1; the redial's new delegation is announced
# preferred.
# host6 P: the LAN host's global addresses in the /64 of delegation P (a
# /56 whose first /64, [lan.ipv6] subnet 0, the LAN uses).
host6() { ip -n lanhost -6 -o addr show dev eth0 scope global 2>/dev/null | grep -F " ${1%::/56}:"; }
host6_preferred() { host6 "$1" | grep -v deprecated | grep -q .; }
host6_deprecated() { host6 "$1" | grep -q deprecated; }
host6_both() { host6_preferred "$1" && host6_preferred "$2"; }
# ra_state P STATE: status --json lan.ipv6.announce lists P's /64 as STATE.
ra_state() {
  uplinkd status --json 2>/dev/null | tr -d ' \n' | grep -q "{\"prefix\":\"${1%::/56}::/64\",\"uplink\":\"[^\"]*\",\"state\":\"$2\""
}
ra_both_preferred() { ra_state "$1" preferred && ra_state "$2" preferred; }
ra_phase() {
  local q0=$1 q1=$2 isp_session watch gone dep fo ms
  # The RAs uplinkd multicasts on lan0 loop back to the gateway itself: a
  # router's LAN interface takes no RAs.
  sysctl -qw net.ipv6.conf.lan0.accept_ra=0
  ip netns exec lanhost sysctl -qw net.ipv6.conf.eth0.accept_ra=2
  ip -n lanhost -6 route del default via fd42:0:0:1::1
  cat >$CONF <<'TOML'
# Dual PPPoE, dual stack: the LAN takes an address from each line's
# delegated /64 by uplinkd's router advertisements; a failed line's /64 is
# deprecated at once.
[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]

[lan.ipv6]
mode         = "prefix"
announce     = true
min_interval = "3s"
max_interval = "4s"

[[uplink]]
name          = "ppp0"
interface     = "ppp0"
kind          = "ppp"
table         = 200
rule_priority = 200
tier          = 1
ipv6          = true

[[uplink]]
name          = "ppp1"
interface     = "ppp1"
kind          = "ppp"
table         = 201
rule_priority = 300
tier          = 2
ipv6          = true
TOML
  if ! out=$(uplinkd reload 2>&1); then
    fail lan_ra_reload "uplinkd reload to mode prefix with announce: $out"
    return
  fi
  if ms=$(wait_until 60000 host6_both "$q0" "$q1"); then
    timing lan_ra_slaac "$ms"
    pass "lan_ra_slaac (host: $(host6 "$q0" | awk '{print $4}'), $(host6 "$q1" | awk '{print $4}'))"
  else
    fail lan_ra_slaac "the LAN host has no preferred address in both announced /64s 60 s after the reload: $(ip -n lanhost -6 -o addr show dev eth0 | awk '{print $4, $NF}' | tr '\n' ';') status: $(uplinkd status --json | tr -d ' \n' | grep -o '"announce":.*' | head -c 600)"
    return
  fi
  check lan_ra_status_preferred "status --json lan.ipv6.announce does not list both /64s preferred" ra_both_preferred "$q0" "$q1"
  check lan_ra_default_router "the LAN host has no default route via the gateway's link-local address" \
    bash -c "ip -n lanhost -6 route show default | grep -q 'via fe80::.* dev eth0 proto ra'"

  isp_session=""
  for p in $(ip netns pids isp0); do
    [[ $(cat /proc/$p/comm 2>/dev/null) == pppd ]] && isp_session=$p
  done
  if [[ -z $isp_session ]]; then
    fail lan_ra_isp_session "no pppd session process in namespace isp0"
    return
  fi
  watch=$V6/ra.watch
  (
    up() { local f; read -r f </sys/class/net/ppp0/flags 2>/dev/null && (( f & 1 )); }
    while up; do sleep 0.005; done
    gone=$(now_ms); echo "gone $gone"
    until host6_deprecated "$q0"; do
      (( $(now_ms) - gone > 20000 )) && { echo "nodeprecate"; exit; }
      sleep 0.01
    done
    echo "deprecated $(now_ms)"
  ) >$watch &
  local watcher=$!
  kill -TERM "$isp_session"
  wait $watcher
  gone=$(awk '$1=="gone"{print $2}' $watch)
  dep=$(awk '$1=="deprecated"{print $2}' $watch)
  if [[ -n $dep ]]; then
    timing lan_ra_deprecated $((dep - gone))
    pass "lan_ra_deprecated (the host's address in ppp0's /64 deprecated $((dep - gone)) ms after ppp0 went down)"
  else
    fail lan_ra_deprecated "the host's address in ppp0's /64 not deprecated within 20 s of ppp0 going down: $(host6 "$q0")"
  fi
  check lan_ra_status_deprecated "status --json lan.ipv6.announce does not list ppp0's /64 deprecated" ra_state "$q0" deprecated
  check lan_ra_still_preferred_ppp1 "the host's address in ppp1's /64 is not preferred" host6_preferred "$q1"
  # A new connection from the host, no source given: it picks ppp1's /64
  # (RFC 6724 rule 3) and leaves through ppp1.
  lan_pings6_reach lan_ra_new_connection_via_isp1 1

  # The redial brings a new delegation; it is announced preferred.
  new_pd0() { local p; p=$(pd_of ppp0); [[ -n $p && $p != "$q0" ]]; }
  if pd_wait 60000 $((gone / 1000 - 1)) new_pd0 ppp0; then
    local r0
    r0=$(pd_of ppp0)
    if ms=$(wait_until 60000 host6_preferred "$r0"); then
      timing lan_ra_redial_preferred $(( $(now_ms) - gone ))
      pass "lan_ra_redial_preferred (the host has a preferred address in $r0's /64)"
    else
      fail lan_ra_redial_preferred "no preferred host address in the new delegation $r0's /64 60 s after dhcpcd got it: $(ip -n lanhost -6 -o addr show dev eth0 | awk '{print $4, $NF}' | tr '\n' ';')"
    fi
    check lan_ra_old_stays_deprecated "the host's address in ppp0's old /64 is preferred again" host6_deprecated "$q0"
  else
    fail lan_ra_redial_pd "dhcpcd got no new delegation on ppp0 within 60 s of the drop: $(pd_seen ppp0 "$PD_SINCE"); hook: $(tail -3 $V6/pd.log | tr '\n' ';')"
  fi
}

if [[ -z ${PDFAIL:-} && -n ${N0P:-} ]]; then
  ra_phase "$N0P" "$P1"
else
  skip lan_ra "no delegation on both lines after the redial"
fi

for i in 0 1; do sed "s/^/isp$i: /" $V6/isp$i/log; done
sed 's/^/pd: /' $V6/pd.log
journalctl -t dhcpcd --no-pager -o short-monotonic | tail -n 30 | sed 's/^/dhcp: /'
journalctl -u uplinkd --no-pager -o short-monotonic | tail -n 20 | sed 's/^/journal: /'
exit $(( FAILS > 0 ))
