# [lan.dhcp] mode = "service" with Debian's isc-dhcp-server, under systemd:
# uplinkd starts the unit when it first sees the LAN link up, restarts it
# (systemctl restart) when the LAN link comes back after going down (dhcpd binds at
# start and stays deaf otherwise), and a LAN host (namespace lanhost, Debian's
# dhclient) gets a lease from it before and after.
source /vmtest/lib.sh

# reasons: the REASON fields of uplinkd's DHCP records (the journal's
# message alone does not say why).
reasons() { journalctl -u uplinkd -o json --no-pager | grep -i dhcp | grep -o '"REASON":"[^"]*"' | tail -3 | tr '\n' ' '; }

cleanup() {
  systemctl stop isc-dhcp-server >/dev/null 2>&1
  systemctl mask isc-dhcp-server >/dev/null 2>&1
  for p in $(ip netns pids lanhost 2>/dev/null); do kill "$p" 2>/dev/null; done
  ip netns del lanhost 2>/dev/null
  cleanup_all
}
trap cleanup EXIT

# ---- the LAN: lan0 on the gateway, eth0 of a host in namespace lanhost
ip netns add lanhost
ip link add lan0 type veth peer name eth0 netns lanhost
ip addr add 10.0.0.1/24 dev lan0
ip link set lan0 up
ip -n lanhost link set lo up
ip -n lanhost link set eth0 up
# ---- one ethernet uplink (uplinkd needs one), static
ip netns add isp1
ip link add eth1 type veth peer name wan netns isp1
ip addr add 100.65.0.2/24 dev eth1
ip link set eth1 up
ip -n isp1 addr add 100.65.0.1/24 dev wan
ip -n isp1 link set wan up

# ---- isc-dhcp-server as an admin sets it up (the image keeps it masked
# until a scenario needs it)
systemctl unmask isc-dhcp-server >/dev/null 2>&1
systemctl stop isc-dhcp-server >/dev/null 2>&1
sed -i 's/^INTERFACESv4=.*/INTERFACESv4="lan0"/' /etc/default/isc-dhcp-server
cat >/etc/dhcp/dhcpd.conf <<'CONF'
authoritative;
default-lease-time 600;
max-lease-time 7200;
subnet 10.0.0.0 netmask 255.255.255.0 {
  range 10.0.0.100 10.0.0.150;
  option routers 10.0.0.1;
}
CONF
systemctl daemon-reload
check dhcpd_not_running_yet "isc-dhcp-server already active before uplinkd" bash -c '! systemctl is-active --quiet isc-dhcp-server'

install_uplinkd || exit 1
mkdir -p /etc/uplinkd
cat >$CONF <<'TOML'
[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]

  [lan.dhcp]
  mode = "service"
  unit = "isc-dhcp-server.service"
  restart_interval = "2s"

[[uplink]]
name          = "wan"
interface     = "eth1"
kind          = "ethernet"
gateway       = "100.65.0.1"
table         = 200
rule_priority = 200
TOML
start_uplinkd start_ready || exit 1

# uplinkd starts the unit on the first LAN link up.
if ms=$(wait_until 30000 systemctl is-active --quiet isc-dhcp-server); then
  timing dhcpd_started "$ms"
  pass dhcpd_started_by_uplinkd
else
  fail dhcpd_started_by_uplinkd "isc-dhcp-server not active 30 s after uplinkd started: $(reasons) $(systemctl status isc-dhcp-server --no-pager 2>&1 | tail -5)"
fi

# lease HOST_CHECK_NAME: the LAN host asks for a lease (dhclient, one try).
lease() {
  ip netns exec lanhost dhclient -r -pf /run/dhclient-lanhost.pid -lf /tmp/lanhost.leases eth0 >/dev/null 2>&1
  ip -n lanhost addr flush dev eth0 scope global
  local t0 a
  t0=$(now_ms)
  if ip netns exec lanhost timeout 60 dhclient -1 -4 -pf /run/dhclient-lanhost.pid -lf /tmp/lanhost.leases eth0 >/tmp/dhclient.out 2>&1; then
    a=$(ip -n lanhost -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1 | head -1)
    case $a in
      10.0.0.1[0-4][0-9]|10.0.0.150) timing "$1" $(( $(now_ms) - t0 )); pass "$1 ($a)";;
      *) fail "$1" "the LAN host got '$a', not an address of the pool";;
    esac
  else
    fail "$1" "dhclient got no lease: $(tail -5 /tmp/dhclient.out)"
  fi
}
lease lease_from_isc_dhcp_server

# ---- a LAN change: the link goes down and comes back → a restart
inv=$(systemctl show -p InvocationID --value isc-dhcp-server)
ip link set lan0 down
sleep 0.5
ip link set lan0 up
restarted() { local i; i=$(systemctl show -p InvocationID --value isc-dhcp-server); [[ -n $i && $i != "$inv" ]] && systemctl is-active --quiet isc-dhcp-server; }
if ms=$(wait_until 30000 restarted); then
  timing lan_change_restart "$ms"
  pass restarted_on_lan_change
else
  fail restarted_on_lan_change "isc-dhcp-server not restarted 30 s after lan0 came back: $(reasons)"
fi
lease lease_after_restart

uplinkd status >/tmp/status.out 2>&1
sed 's/^/status: /' /tmp/status.out
check status_shows_restarts "uplinkd status does not mention the DHCP service's restarts" grep -qi 'restart' /tmp/status.out

journalctl -u uplinkd --no-pager -o short-monotonic | grep -i dhcp | tail -n 10 | sed 's/^/journal: /'
exit $(( FAILS > 0 ))
