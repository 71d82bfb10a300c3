package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/policy"
)

// slaacHost makes the lab's LAN namespace a host that configures itself
// from router advertisements (the kernel's SLAAC, nothing else), and gives
// the router's lan0 an address in each LAN /64, as a PD client does on the
// LAN interface (so that the /64s route to the LAN).
func slaacHost(t testing.TB, l *lab.Lab, lans ...netip.Prefix) {
	t.Helper()
	for k, v := range map[string]string{
		"net.ipv6.conf." + lab.ClientIface + ".accept_ra": "2",
		"net.ipv6.conf." + lab.ClientIface + ".autoconf":  "1",
	} {
		if err := l.Sysctl(l.LAN, k, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range lans {
		if out, err := l.Exec(l.Router, "ip", "-6", "addr", "add", netip.PrefixFrom(p.Addr().Next(), 64).String(), "dev", lab.LANIface, "nodad"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
}

// hostAddr6 is the LAN host's SLAAC address in p and whether `ip -6 addr`
// shows it deprecated; invalid when it has none.
func hostAddr6(t testing.TB, l *lab.Lab, p netip.Prefix) (netip.Addr, bool) {
	t.Helper()
	out, err := l.Exec(l.LAN, "ip", "-6", "addr", "show", "dev", lab.ClientIface, "scope", "global")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "inet6" {
			continue
		}
		if a, err := netip.ParsePrefix(f[1]); err == nil && p.Contains(a.Addr()) {
			return a.Addr(), strings.Contains(line, "deprecated")
		}
	}
	return netip.Addr{}, false
}

// announced is the status's entry for LAN prefix p.
func announced(st control.Status, p netip.Prefix) (control.LAN6Prefix, bool) {
	if st.LAN == nil || st.LAN.IPv6 == nil || st.LAN.IPv6.Announce == nil {
		return control.LAN6Prefix{}, false
	}
	for _, e := range st.LAN.IPv6.Announce.Prefixes {
		if e.Prefix == p {
			return e, true
		}
	}
	return control.LAN6Prefix{}, false
}

// TestLabRAPrefixFailover: [lan.ipv6] mode prefix with announce: a LAN
// host with the kernel's SLAAC takes an address from a's learned and b's
// configured delegation; a's IPv6 dies upstream (probes fail) → the host's
// a address shows deprecated, a new connection from the host (no source
// pinned) leaves from b's prefix and reaches the inet host through b; a
// comes back → the a address is preferred again; a's delegation ends → its
// /64 is announced with lifetimes 0. The status and metrics say the same.
func TestLabRAPrefixFailover(t *testing.T) {
	l := ipv6Lab(t)
	pa, err := l.Delegate6("eth1")
	if err != nil {
		t.Fatal(err)
	}
	pb, err := l.Delegate6("eth2")
	if err != nil {
		t.Fatal(err)
	}
	lanA, _ := policy.LANSubnet6(pa, 0)
	lanB, _ := policy.LANSubnet6(pb, 0)
	slaacHost(t, l, lanA, lanB)
	cfg := strings.Replace(ipv6Config(l), "name = \"b\"\n", fmt.Sprintf("name = \"b\"\ndelegated_prefix = %q\n", pb), 1) +
		"\n[lan.ipv6]\nmode = \"prefix\"\nannounce = true\nrdnss = [\"2001:db8::53\"]\ndnssl = [\"lan.example\"]\nmax_interval = \"30s\"\n"
	ln0, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := ln0.Addr()
	r := startWith(t, l, writeConfig(t, fmt.Sprintf("[daemon]\nmetrics_listen = %q\n", maddr.String())+cfg), ln0)
	r.event("--iface", "eth1", "--delegated", pa.String(), "--preferred-lifetime", "1800", "--valid-lifetime", "3600")

	hostState := func(p netip.Prefix, deprecated bool) func() bool {
		return func() bool {
			a, dep := hostAddr6(t, l, p)
			return a.IsValid() && dep == deprecated
		}
	}
	r.eventually("host addresses in both prefixes, preferred", func() bool { return hostState(lanA, false)() && hostState(lanB, false)() })
	st := r.statusJSON()
	ea, ok := announced(st, lanA)
	if !ok || ea.Uplink != "a" || ea.State != "preferred" || ea.PreferredLifetime > 1800 || ea.PreferredLifetime < 1700 || ea.ValidLifetime > 3600 {
		t.Errorf("status of %s: %+v (%v)", lanA, ea, ok)
	}
	if eb, ok := announced(st, lanB); !ok || eb.Uplink != "b" || eb.State != "preferred" || eb.PreferredLifetime != 4*3600 {
		t.Errorf("status of %s: %+v", lanB, eb)
	}
	scrapeMetric(t, maddr, fmt.Sprintf(`uplinkd_lan6_prefix_preferred{prefix="%s",uplink="a"}`, lanA), "1")
	scrapeMetric(t, maddr, `uplinkd_lan6_router_lifetime_seconds`, "90")
	if an := st.LAN.IPv6.Announce; !an.Active || an.RouterLifetime != 90 || an.Sent == 0 || an.LastSent.IsZero() || an.Error != "" {
		t.Errorf("status announce: %+v", an)
	}

	ln, err := l.ListenIn(l.Inet, "tcp6", "["+lab.InetHosts6[0].String()+"]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	if err := l.Blackhole6("eth1", true); err != nil {
		t.Fatal(err)
	}
	r.eventually("host's a address deprecated", hostState(lanA, true))
	if e, _ := announced(r.statusJSON(), lanA); e.State != "deprecated" || e.PreferredLifetime != 0 || e.ValidLifetime > 2*3600 {
		t.Errorf("status of %s after a failed: %+v", lanA, e)
	}
	scrapeMetric(t, maddr, fmt.Sprintf(`uplinkd_lan6_prefix_preferred{prefix="%s",uplink="a"}`, lanA), "0")
	scrapeMetric(t, maddr, fmt.Sprintf(`uplinkd_lan6_prefix_preferred_lifetime_seconds{prefix="%s",uplink="a"}`, lanA), "0")
	if src := acceptFrom(t, l, ln); !lanB.Contains(src) {
		t.Errorf("after a's IPv6 failed the host connected from %s, want b's %s", src, lanB)
	}
	if a, dep := hostAddr6(t, l, lanB); !a.IsValid() || dep {
		t.Errorf("b's address %s deprecated=%v", a, dep)
	}

	if err := l.Blackhole6("eth1", false); err != nil {
		t.Fatal(err)
	}
	r.eventually("host's a address preferred again", hostState(lanA, false))

	// The delegation ends: the /64 stays announced with lifetimes 0, so
	// the host's address is deprecated (and gone within 2 h).
	r.event("--iface", "eth1", "--delegated", "none")
	r.eventually("host's a address deprecated after the delegation ended", hostState(lanA, true))
	if e, ok := announced(r.statusJSON(), lanA); !ok || e.State != "deprecated" || e.ValidLifetime != 0 {
		t.Errorf("status of %s after its delegation ended: %+v (%v)", lanA, e, ok)
	}
}

// TestLabRANPT: mode npt with announce: the host takes one address from
// the inside prefix and keeps it, preferred, when a's IPv6 fails; when the
// daemon stops, the host drops it as its router (final RA).
func TestLabRANPT(t *testing.T) {
	l := ipv6Lab(t)
	pb, err := l.Delegate6("eth2")
	if err != nil {
		t.Fatal(err)
	}
	in := netip.MustParsePrefix("fd42:0:0:1::/64")
	slaacHost(t, l, in)
	cfg := strings.Replace(ipv6Config(l), "name = \"b\"\n", fmt.Sprintf("name = \"b\"\ndelegated_prefix = %q\n", pb), 1) +
		"\n[lan.ipv6]\nmode = \"npt\"\nprefix = \"fd42:0:0:1::/64\"\nannounce = true\n"
	r := start(t, l, writeConfig(t, cfg))
	r.eventually("host address in the inside prefix", func() bool { a, dep := hostAddr6(t, l, in); return a.IsValid() && !dep })
	if err := l.Blackhole6("eth1", true); err != nil {
		t.Fatal(err)
	}
	r.eventually("a's IPv6 not usable", func() bool { return uplinkStatus(t, r.statusJSON(), "a").IPv6.State != control.StateUp })
	if a, dep := hostAddr6(t, l, in); !a.IsValid() || dep {
		t.Errorf("inside address %s deprecated=%v after a failed", a, dep)
	}
	if out := mustExec(t, l, l.LAN, "ip", "-6", "addr", "show", "scope", "global"); strings.Count(out, "inet6 ") != 1 {
		t.Errorf("LAN host addresses:\n%s", out)
	}

	// A stopping daemon sends a final RA with router lifetime 0: the host
	// drops the gateway as its default router at once.
	raRoute := func() bool {
		return strings.Contains(mustExec(t, l, l.LAN, "ip", "-6", "route", "show", "default", "proto", "ra"), "fe80::")
	}
	if !raRoute() {
		t.Fatal("no RA default route on the host")
	}
	r.stop()
	deadline := time.Now().Add(waitLong)
	for raRoute() {
		if time.Now().After(deadline) {
			t.Fatal("the host kept the stopped gateway as its default router")
		}
		time.Sleep(50 * time.Millisecond) // kernel state; nothing to wait on
	}
}

// TestLabRAHA: with [ha], only the VRRP master announces: before
// keepalived reports a role nothing is sent; as master the host takes its
// address and default router; as backup one final RA (router lifetime 0)
// makes the host drop the gateway as its router at once.
func TestLabRAHA(t *testing.T) {
	l := ipv6Lab(t)
	pb, err := l.Delegate6("eth2")
	if err != nil {
		t.Fatal(err)
	}
	lanB, _ := policy.LANSubnet6(pb, 0)
	slaacHost(t, l, lanB)
	cfg := fmt.Sprintf("[ha]\ntrack_file = %q\n", t.TempDir()+"/track") +
		strings.Replace(ipv6Config(l), "name = \"b\"\n", fmt.Sprintf("name = \"b\"\ndelegated_prefix = %q\n", pb), 1) +
		"\n[lan.ipv6]\nmode = \"prefix\"\nannounce = true\n"
	r := start(t, l, writeConfig(t, cfg))
	if an := r.statusJSON().LAN.IPv6.Announce; an == nil || an.Active || an.Sent != 0 {
		t.Fatalf("announce before a role: %+v", an)
	}
	raRoute := func() bool {
		out := mustExec(t, l, l.LAN, "ip", "-6", "route", "show", "default", "proto", "ra")
		return strings.Contains(out, "fe80::")
	}
	r.event("--role", "master")
	r.eventually("host address and RA default route from the master", func() bool {
		a, dep := hostAddr6(t, l, lanB)
		return a.IsValid() && !dep && raRoute()
	})
	r.event("--role", "backup")
	r.eventually("host dropped the backup as its router", func() bool { return !raRoute() })
	if an := r.statusJSON().LAN.IPv6.Announce; an.Active {
		t.Errorf("announce as backup: %+v", an)
	}
}
