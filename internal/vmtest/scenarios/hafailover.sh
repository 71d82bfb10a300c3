# Two gateways (namespaces gw1 and gw2) on one LAN with keepalived (VRRP)
# and conntrackd (FTFW over a dedicated link), each running uplinkd with the
# same config. The uplink is a shared ethernet WAN whose address is a
# keepalived virtual address (100.65.0.10): whichever box is master holds it,
# so uplinkd's uplink address, and its SNAT, is the same on both boxes. A LAN
# client's NATed TCP connection to a server behind the WAN must survive the
# master's loss: conntrackd on the new master commits the entries it was
# sent, uplinkd there SNATs to the same address and must not delete them.
#
# The address model this needs is in docs/two-gateways.md ("conntrackd"):
# a connection NATed to a box's own address (its own DSL line) cannot move,
# because the other box does not own that address.
source /vmtest/lib.sh

NSS="gw1 gw2 lanbr wanbr"
cleanup() {
  for ns in $NSS; do for p in $(ip netns pids $ns 2>/dev/null); do kill "$p" 2>/dev/null; done; done
  sleep 0.5
  for ns in $NSS; do ip netns del $ns 2>/dev/null; done
  rm -f /etc/uplinkd/gw?.toml
  cleanup_all
}
trap cleanup EXIT
modprobe nf_conntrack_netlink 2>/dev/null

# ---- the networks: LAN bridge (client 10.0.0.2, default via the VIP
# 10.0.0.1), WAN bridge (ISP router 100.65.0.1, server 192.0.2.1), sync link
for ns in $NSS; do ip netns add $ns; ip -n $ns link set lo up; done
ip -n lanbr link add br0 type bridge
ip -n lanbr link set br0 up
ip -n lanbr addr add 10.0.0.2/24 dev br0
ip -n wanbr link add br0 type bridge
ip -n wanbr link set br0 up
ip -n wanbr addr add 100.65.0.1/24 dev br0
ip -n wanbr addr add 192.0.2.1/32 dev lo
i=1
for gw in gw1 gw2; do
  ip link add lan0 netns $gw type veth peer name p$gw netns lanbr
  ip -n lanbr link set p$gw master br0 up
  ip -n $gw addr add 10.0.0.1$i/24 dev lan0
  ip -n $gw link set lan0 up
  # No address of its own on the WAN: keepalived gives the master 100.65.0.10.
  ip link add eth1 netns $gw type veth peer name w$gw netns wanbr
  ip -n wanbr link set w$gw master br0 up
  ip -n $gw link set eth1 up
  i=$((i + 1))
done
ip link add sync0 netns gw1 type veth peer name sync0 netns gw2
ip -n gw1 addr add 192.168.100.1/30 dev sync0
ip -n gw2 addr add 192.168.100.2/30 dev sync0
ip -n gw1 link set sync0 up
ip -n gw2 link set sync0 up
ip -n lanbr route add default via 10.0.0.1

mkdir -p /etc/uplinkd /etc/keepalived /etc/conntrackd /run/uplinkd
i=1
for gw in gw1 gw2; do
  peer=$(( 3 - i ))
  # ---- conntrackd: FTFW over sync0
  cat >/etc/conntrackd/$gw.conf <<CONF
Sync {
	Mode FTFW {
		DisableExternalCache Off
		CommitTimeout 1800
		PurgeTimeout 5
	}
	UDP {
		IPv4_address 192.168.100.$i
		IPv4_Destination_Address 192.168.100.$peer
		Port 3780
		Interface sync0
		SndSocketBuffer 1249280
		RcvSocketBuffer 1249280
		Checksum on
	}
}
General {
	HashSize 8192
	HashLimit 65535
	LogFile /tmp/conntrackd-$gw.log
	Syslog off
	LockFile /run/conntrackd-$gw.lock
	UNIX {
		Path /run/conntrackd-$gw.ctl
	}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	Filter From Userspace {
		Protocol Accept {
			TCP
		}
		Address Ignore {
			IPv4_address 127.0.0.1
			IPv4_address 192.168.100.0/30
		}
	}
}
CONF
  # ---- keepalived's notify: conntrackd's primary-backup steps, then uplinkd
  cat >/etc/keepalived/notify-$gw.sh <<SH
#!/bin/bash
c="conntrackd -C /etc/conntrackd/$gw.conf"
case \$1 in
  master) \$c -c; \$c -f; \$c -R; \$c -B ;;
  backup) \$c -t; \$c -n ;;
  fault)  \$c -t ;;
esac
echo "\$(date +%s.%N) \$1" >>/tmp/notify-$gw.log
exec /usr/sbin/uplinkd event --role "\$1" --socket /run/uplinkd/$gw.sock
SH
  chmod 755 /etc/keepalived/notify-$gw.sh
  cat >/etc/keepalived/$gw.conf <<CONF
global_defs {
	router_id $gw
	script_user root
	enable_script_security
}
vrrp_instance LAN {
	state BACKUP
	interface lan0
	virtual_router_id 51
	priority $(( 200 - 50 * i ))
	advert_int 1
	virtual_ipaddress {
		10.0.0.1/24 dev lan0
		100.65.0.10/24 dev eth1
	}
	notify_master "/etc/keepalived/notify-$gw.sh master"
	notify_backup "/etc/keepalived/notify-$gw.sh backup"
	notify_fault "/etc/keepalived/notify-$gw.sh fault"
}
CONF
  # ---- uplinkd: the same uplink on both boxes
  cat >/etc/uplinkd/$gw.toml <<TOML
[daemon]
control_socket = "/run/uplinkd/$gw.sock"
state_dir      = "/var/lib/uplinkd/$gw"

[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]

[ha]
track_file = "/run/uplinkd/$gw-track"

[[uplink]]
name          = "wan"
interface     = "eth1"
kind          = "ethernet"
gateway       = "100.65.0.1"
table         = 200
rule_priority = 200
TOML
  mkdir -p /var/lib/uplinkd/$gw
  ip netns exec $gw conntrackd -C /etc/conntrackd/$gw.conf -d || fail conntrackd_$gw "conntrackd did not start in $gw"
  ip netns exec $gw /usr/sbin/uplinkd run --config /etc/uplinkd/$gw.toml >/tmp/uplinkd-$gw.log 2>&1 &
  i=$((i + 1))
done
for gw in gw1 gw2; do
  wait_until 20000 test -S /run/uplinkd/$gw.sock >/dev/null || fail uplinkd_$gw "uplinkd in $gw serves no socket: $(tail -5 /tmp/uplinkd-$gw.log)"
done
for gw in gw1 gw2; do
  ip netns exec $gw keepalived -n -l -D -f /etc/keepalived/$gw.conf -p /run/keepalived-$gw.pid \
    -r /run/vrrp-$gw.pid -c /run/checkers-$gw.pid >/tmp/keepalived-$gw.log 2>&1 &
  eval "KA_$gw=\$!"
done

has_vip() { ip -n "$1" -4 addr show dev eth1 | grep -q 100.65.0.10; }
snat_vip() { ip netns exec "$1" nft list table ip uplinkd 2>/dev/null | grep -q 'snat to 100.65.0.10\b'; }
if ms=$(wait_until 30000 bash -c "$(declare -f has_vip snat_vip); has_vip gw1 && snat_vip gw1"); then
  timing master_converged "$ms"
  pass "gw1_master_snat_vip"
else
  fail gw1_master "gw1 not master with SNAT to 100.65.0.10 in 30 s: $(tail -5 /tmp/keepalived-gw1.log; ip netns exec gw1 nft list ruleset | grep snat)"
  exit 1
fi
check gw2_backup "gw2 holds the WAN address too" bash -c "! ip -n gw2 -4 addr show dev eth1 | grep -q 100.65.0.10"

# ---- a NATed TCP connection from the LAN client, one line every 100 ms
ip netns exec wanbr nc -l 192.0.2.1 5000 >/tmp/server.out 2>&1 &
srv=$!
wait_until 5000 bash -c "ip netns exec wanbr ss -ltn | grep -q 192.0.2.1:5000" >/dev/null
( i=0; while :; do echo "tick $((i++))"; sleep 0.1; done ) | ip netns exec lanbr nc 192.0.2.1 5000 >/dev/null 2>/tmp/client.err &
cli=$!
lines() { wc -l </tmp/server.out; }
if wait_until 10000 bash -c "(( \$(wc -l </tmp/server.out) >= 10 ))" >/dev/null; then
  pass "connection_up ($(lines) lines)"
else
  fail connection_up "the server got $(lines) lines in 10 s: $(cat /tmp/client.err)"
  exit 1
fi
ip netns exec gw1 conntrack -L -p tcp --dport 5000 2>/dev/null | sed 's/^/gw1 conntrack: /'
synced() { ip netns exec gw2 conntrackd -C /etc/conntrackd/gw2.conf -e 2>/dev/null | grep -q 'dport=5000'; }
if wait_until 10000 synced >/dev/null; then pass connection_synced_to_gw2
else fail connection_synced_to_gw2 "gw2's external cache has no entry for the connection: $(ip netns exec gw2 conntrackd -C /etc/conntrackd/gw2.conf -e 2>&1 | head -5)"; fi

# ---- gw1 is lost: its keepalived stops (priority 0 advert: gw2 takes over)
before=$(lines)
t0=$(now_ms)
kill -TERM "$KA_gw1"
if ms=$(wait_until 15000 bash -c "$(declare -f has_vip snat_vip); has_vip gw2 && snat_vip gw2"); then
  timing failover_vip_snat "$ms"
  pass gw2_master_snat_vip
else
  fail gw2_master "gw2 not master with SNAT to 100.65.0.10 15 s after gw1's keepalived stopped"
fi
if wait_until 20000 bash -c "(( \$(wc -l </tmp/server.out) >= $before + 20 ))" >/dev/null; then
  timing failover_connection_resumed $(( $(now_ms) - t0 ))
  if kill -0 "$srv" 2>/dev/null && kill -0 "$cli" 2>/dev/null; then
    pass "nat_connection_survived_failover ($before lines before, $(lines) now, one connection)"
  else
    fail nat_connection_survived_failover "lines arrived but a side of the connection ended: $(cat /tmp/client.err)"
  fi
else
  fail nat_connection_survived_failover "the server got $(( $(lines) - before )) lines in 20 s after the failover: $(cat /tmp/client.err)"
  ip netns exec gw2 conntrack -L 2>&1 | head -10 | sed 's/^/gw2 conntrack: /'
  ip netns exec gw2 conntrackd -C /etc/conntrackd/gw2.conf -i 2>&1 | head -10 | sed 's/^/gw2 internal: /'
  ip netns exec gw2 nft list ruleset | sed 's/^/gw2 nft: /'
  tail -20 /tmp/uplinkd-gw2.log | sed 's/^/gw2 uplinkd: /'
fi
cat /tmp/notify-gw2.log 2>/dev/null | sed 's/^/gw2 notify: /'
/usr/sbin/uplinkd status --socket /run/uplinkd/gw2.sock 2>&1 | sed 's/^/gw2 status: /'
grep -i -e conntrack -e 'addr' /tmp/uplinkd-gw2.log | tail -10 | sed 's/^/gw2 uplinkd: /'
kill "$cli" "$srv" 2>/dev/null
exit $(( FAILS > 0 ))
