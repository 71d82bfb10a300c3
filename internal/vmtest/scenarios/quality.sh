# Jitter without false failovers (issue 20): one PPPoE line whose ISP
# delays everything it sends to the customer by 300 ms ± 100 ms (tc netem:
# the VM's kernel has sch_netem, the Go lab's has not), so the probes'
# RTT swings between about 200 and 400 ms with no loss. uplinkd runs the
# default check on two targets with the traffic trigger on, while the box
# pings through the line 100 times a second: the flow's first window has
# no reply yet (a slow reply, not an outage), so the trigger's burst must
# wait for it. Over the whole 40 s flow: 0 failovers, never degraded
# (no warn_* configured), and the status shows the RTT and jitter.
source /vmtest/lib.sh

cleanup() {
  [[ -n ${FLOW:-} ]] && kill "$FLOW" 2>/dev/null
  ip netns exec isp0 tc qdisc del dev wan root 2>/dev/null
  cleanup_all
}
trap cleanup EXIT

modprobe pppoe
modprobe sch_netem 2>/dev/null
lan_up
isp_up 0
# A second target behind the same line, so a round has a jitter.
ip -n isp0 addr add 192.0.2.2/32 dev lo

pon dsl-provider
if ms=$(wait_until 30000 has_addr ppp0); then timing dial_ppp0 "$ms"; else fail dial_ppp0 "ppp0 got no address in 30 s"; exit 1; fi

install_uplinkd || exit 1
mkdir -p /etc/uplinkd
cat >$CONF <<'TOML'
[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]

[[uplink]]
name          = "dsl"
interface     = "ppp0"
kind          = "ppp"
table         = 200
rule_priority = 200

  [uplink.check]
  targets         = ["192.0.2.1", "192.0.2.2"]
  traffic_trigger = true
TOML
start_uplinkd start_ready || exit 1

# status_field NAME: the first "NAME": value of dsl in `uplinkd status --json`.
status_field() { uplinkd status --json 2>/dev/null | tr -d ' \n' | sed 's/.*"uplinks":\[//' | grep -o "\"$1\":[^,}]*" | head -1 | cut -d: -f2- | tr -d '"'; }
dsl_up() { [[ $(status_field state) == up ]] && [[ -n $(status_field rtt_ms) ]]; }
if ! wait_until 20000 dsl_up >/dev/null; then
  fail dsl_up "dsl not up with a probe round 20 s after start: $(uplinkd status 2>&1 | head -3)"
  exit 1
fi
since0=$(status_field since)

if ! ip netns exec isp0 tc qdisc add dev wan root netem delay 300ms 100ms; then
  skip jitter "tc netem not available in this kernel"
  exit 0
fi
cursor=$(journalctl -n 1 --show-cursor --no-pager -o cat | sed -n 's/^-- cursor: //p')
t0=$(now_ms)
ping -q -i 0.01 -w 40 192.0.2.1 >/tmp/flow.out 2>&1 &
FLOW=$!

# The positive marker: the probes see the delay.
slow() { local r; r=$(status_field rtt_ms); [[ -n $r ]] && (( ${r%.*} >= 150 )); }
if ms=$(wait_until 20000 slow); then timing rtt_above_150ms "$ms"
else fail rtt_rises "the status never showed an RTT of 150 ms or more: $(uplinkd status 2>&1 | head -3)"; fi
uplinkd status 2>&1 | sed 's/^/status: /' | head -4

# The test lasts as long as the flow.
wait "$FLOW"
FLOW=
timing flow "$(( $(now_ms) - t0 ))"
sed 's/^/flow: /' /tmp/flow.out | tail -2

downs=$(journalctl -u uplinkd --after-cursor "$cursor" --no-pager -o cat EVENT=probe-down | wc -l)
confirmed=$(journalctl -u uplinkd --after-cursor "$cursor" --no-pager -o cat | grep -c 'traffic-confirmed' || true)
degraded=$(journalctl -u uplinkd --after-cursor "$cursor" --no-pager -o cat EVENT=quality | wc -l)
if (( downs == 0 && confirmed == 0 )) && [[ $(status_field state) == up && $(status_field since) == "$since0" ]]; then
  pass "jitter_no_false_failover (300ms ± 100ms for 40 s)"
else
  fail jitter_no_false_failover "probe-down records $downs, traffic-confirmed $confirmed, state $(status_field state) since $(status_field since) (was $since0)"
fi
check jitter_not_degraded "degraded without warn_loss/warn_latency ($degraded quality records)" test "$degraded" -eq 0
check jitter_shown "uplinkd status --json shows no jitter_ms" test -n "$(status_field jitter_ms)"
journalctl -u uplinkd --after-cursor "$cursor" --no-pager -o short-monotonic | tail -n 8 | sed 's/^/journal: /'
exit $(( FAILS > 0 ))
