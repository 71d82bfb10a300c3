package daemon

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// raPrefix is the n-th prefix the lab ISP of uplink index i announces by
// RA: 2001:db8:i:n::/64, beside the customer /64 the lab numbers by hand.
func raPrefix(i, n int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x:%x::/64", i, n))
}

// slaacAddr waits for the router's SLAAC address from prefix p on dev and
// returns it.
func slaacAddr(r *running, dev string, p netip.Prefix) netip.Addr {
	r.t.Helper()
	var found netip.Addr
	r.eventually("a SLAAC address from "+p.String()+" on "+dev, func() bool {
		for _, f := range strings.Fields(r.ip("-6", "-o", "addr", "show", "dev", dev, "scope", "global")) {
			if pf, err := netip.ParsePrefix(f); err == nil && p.Contains(pf.Addr()) {
				found = pf.Addr()
				return true
			}
		}
		return false
	})
	return found
}

// raRouter waits for the kernel's `proto ra` default route via dev and
// returns its router (the ISP's link-local address radvd sends from).
func raRouter(r *running, dev string) string {
	r.t.Helper()
	var gw string
	r.eventually("the kernel's proto ra default via "+dev, func() bool {
		f := strings.Fields(r.ip("-6", "route", "show", "default", "proto", "ra", "dev", dev))
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "via" {
				gw = f[i+1]
				return true
			}
		}
		return false
	})
	return gw
}

// TestLabIPv6RouterAdvertisements: the ISPs of two ethernet uplinks run
// radvd; uplinkd, with no gateway6 configured, builds the IPv6 source
// rules, the per-table defaults and its weighted default from what the
// kernel learned (SLAAC addresses, `proto ra` routes), and real traffic
// flows from each SLAAC address. The ISP renumbers (radvd restarted with a
// new prefix, the old one deprecated): the new address gets its rule, the
// old one loses it. Carrier loss on one uplink moves the IPv6 default and
// IPv4 keeps flowing.
func TestLabIPv6RouterAdvertisements(t *testing.T) {
	if _, err := lab.RADVDPath(); err != nil {
		t.Skip(err.Error())
	}
	l := ipv6Lab(t)
	// No gateway6: the router must come from the RAs.
	cfg := strings.ReplaceAll(ipv6Config(l), fmt.Sprintf("gateway6 = %q\n", lab.ISPLinkLocal), "")
	r := start(t, l, writeConfig(t, cfg))
	dir := t.TempDir()
	ra := map[string]*exec.Cmd{}
	for _, dev := range []string{"eth1", "eth2"} {
		cmd, err := l.StartRA(dev, dir, lab.RAPrefix{Prefix: raPrefix(l.UplinkIndex(dev), 1)})
		if err != nil {
			t.Fatal(err)
		}
		ra[dev] = cmd
	}
	s1, s2 := slaacAddr(r, "eth1", raPrefix(l.UplinkIndex("eth1"), 1)), slaacAddr(r, "eth2", raPrefix(l.UplinkIndex("eth2"), 1))
	gw1, gw2 := raRouter(r, "eth1"), raRouter(r, "eth2")
	r.eventually("source rules for the SLAAC addresses", func() bool {
		rules := r.ip("-6", "rule")
		return strings.Contains(rules, "from "+s1.String()+" lookup 100") && strings.Contains(rules, "from "+s2.String()+" lookup 101")
	})
	r.eventually("per-table default via the RA router", r.has("default via "+gw1+" dev eth1 proto 157", "-6", "route", "show", "table", "100"))
	r.eventually("weighted IPv6 default via the RA routers", func() bool {
		m := r.ip("-6", "route", "show", "table", "157")
		return strings.Contains(m, "nexthop via "+gw1+" dev eth1 weight 1") && strings.Contains(m, "nexthop via "+gw2+" dev eth2 weight 3")
	})
	for _, src := range []netip.Addr{s1, s2} {
		mustExec(t, l, l.Router, "ping", "-6", "-c1", "-W2", "-I", src.String(), lab.InetHosts6[0].String())
	}

	// Renumbering: radvd comes back with a new prefix and the old one
	// deprecated. (Its stop announces router lifetime 0, so the kernel's
	// RA route goes for a moment: uplinkd keeps its table's route.)
	if err := l.StopRA(ra["eth1"]); err != nil {
		t.Fatal(err)
	}
	cmd, err := l.StartRA("eth1", dir, lab.RAPrefix{Prefix: raPrefix(l.UplinkIndex("eth1"), 2)},
		lab.RAPrefix{Prefix: raPrefix(l.UplinkIndex("eth1"), 1), Deprecated: true})
	if err != nil {
		t.Fatal(err)
	}
	ra["eth1"] = cmd
	n1 := slaacAddr(r, "eth1", raPrefix(l.UplinkIndex("eth1"), 2))
	r.eventually("rule for the new prefix's address", r.has("from "+n1.String()+" lookup 100", "-6", "rule"))
	r.eventually("the deprecated address loses its rule", r.lacks("from "+s1.String()+" ", "-6", "rule"))
	if out := r.ip("-6", "addr", "show", "dev", "eth1"); !strings.Contains(out, s1.String()) {
		t.Fatalf("the old SLAAC address went instead of being deprecated:\n%s", out)
	}
	r.eventually("per-table default kept", r.has("default via "+raRouter(r, "eth1")+" dev eth1 proto 157", "-6", "route", "show", "table", "100"))
	mustExec(t, l, l.Router, "ping", "-6", "-c1", "-W2", "-I", n1.String(), lab.InetHosts6[0].String())

	// Carrier loss on eth1: the IPv6 default moves to eth2, IPv4 flows.
	if _, err := l.SetCarrier("eth1", false); err != nil {
		t.Fatal(err)
	}
	r.eventually("IPv6 default via eth2 alone", func() bool {
		m := r.ip("-6", "route", "show", "table", "157")
		return strings.Contains(m, "dev eth2") && !strings.Contains(m, "dev eth1")
	})
	r.eventually("IPv4 default via eth2 alone", func() bool {
		m := r.ip("route", "show", "table", "157")
		return strings.Contains(m, "dev eth2") && !strings.Contains(m, "dev eth1")
	})
	mustExec(t, l, l.Router, "ping", "-6", "-c1", "-W2", lab.InetHosts6[0].String())
	mustExec(t, l, l.Router, "ping", "-c1", "-W2", lab.InetHosts[0].String())
	if _, err := l.SetCarrier("eth1", true); err != nil {
		t.Fatal(err)
	}
	r.eventually("eth1 back in the IPv6 default", r.has("dev eth1 weight 1", "-6", "route", "show", "table", "157"))
}

// TestLabRARefreshBringsNoPass: each RA refreshes the lifetimes of the
// SLAAC address it made (a notification of the address, and of its
// prefix's routes): nothing uplinkd keeps of them changes, so no pass runs.
// Before the mirror said so, every RA on every uplink cost a pass (16 in
// 30 s with radvd's 3-4 s interval on two uplinks). The uplinks have no
// health checks here, which would bring passes of their own.
//
// Two refreshes are seen in the kernel (the address's valid lifetime goes
// back up), then a route added to table main brings one pass: coming after
// the refreshes on the same socket, it is the only pass since, or the
// refreshes brought passes too.
func TestLabRARefreshBringsNoPass(t *testing.T) {
	if _, err := lab.RADVDPath(); err != nil {
		t.Skip(err.Error())
	}
	l := ipv6Lab(t)
	var cfg strings.Builder
	for i, name := range []string{"eth1", "eth2"} {
		fmt.Fprintf(&cfg, "[[uplink]]\nname = %q\ninterface = %q\nkind = \"ethernet\"\ntable = %d\nrule_priority = %d\ngateway = %q\nipv6 = true\n\n",
			string(rune('a'+i)), name, 100+i, 100+i, l.ISPAddr(name))
	}
	r := start(t, l, writeConfig(t, cfg.String()))
	if _, err := l.StartRA("eth1", t.TempDir(), lab.RAPrefix{Prefix: raPrefix(l.UplinkIndex("eth1"), 1)}); err != nil {
		t.Fatal(err)
	}
	s := slaacAddr(r, "eth1", raPrefix(l.UplinkIndex("eth1"), 1))
	r.eventually("the SLAAC address's rule", r.has("from "+s.String()+" lookup 100", "-6", "rule"))
	// validLft reads the address's valid lifetime; ok false while DAD runs
	// (its flags still change then, which is a change).
	validLft := func() (secs int, ok bool) {
		out := r.ip("-6", "-o", "addr", "show", "dev", "eth1", "to", s.String()+"/128")
		if strings.Contains(out, "tentative") {
			return 0, false
		}
		f := strings.Fields(out)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "valid_lft" {
				n, err := strconv.Atoi(strings.TrimSuffix(f[i+1], "sec"))
				return n, err == nil
			}
		}
		return 0, false
	}
	r.eventually("the SLAAC address past DAD", func() bool { _, ok := validLft(); return ok })
	for len(r.syncs) > 0 {
		<-r.syncs
	}
	passes := 0
	last, _ := validLft()
	deadline := time.Now().Add(4 * waitLong) // two RAs take 8 s at most
	for refreshes := 0; refreshes < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("saw %d RA refreshes of %s in %v", refreshes, s, 4*waitLong)
		}
		select {
		case <-r.syncs:
			passes++
		case <-time.After(100 * time.Millisecond): // kernel state; nothing to wait on
		}
		if n, ok := validLft(); ok {
			if n > last {
				refreshes++
			}
			last = n
		}
	}
	mustExec(t, l, l.Router, "ip", "route", "add", "198.51.100.0/24", "dev", "eth2")
	r.waitSync()
	for len(r.syncs) > 0 {
		<-r.syncs
		passes++
	}
	if passes != 0 {
		t.Errorf("%d passes besides the route's during two RA refreshes, want none", passes)
	}
}
