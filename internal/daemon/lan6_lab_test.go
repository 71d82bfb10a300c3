package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/policy"
)

// countFrom6 installs an nft counter of forwarded IPv6 packets from src in
// the ISP namespace of uplink name (what the ISP sees arrive from the
// customer) and returns a reader of it.
func countFrom6(t *testing.T, l *lab.Lab, name string, src netip.Prefix) func() int {
	t.Helper()
	ns := l.ISP(name)
	table := "labcount_" + strings.NewReplacer(":", "_", "/", "_").Replace(src.String())
	rules := fmt.Sprintf("table ip6 %s {\n chain c1 { type filter hook forward priority 0; policy accept; iifname %q ip6 saddr %s counter\n }\n}\n", table, lab.CustIface, src)
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", ns, err, out)
	}
	re := regexp.MustCompile(`counter packets (\d+)`)
	return func() int {
		out := mustExec(t, l, ns, "nft", "list", "table", "ip6", table)
		m := re.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no counter in %s:\n%s", ns, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
}

// sendEvent runs `uplinkd event` against the running daemon.
func (r *running) event(args ...string) {
	r.t.Helper()
	out, err := exec.Command(uplinkdBinary(r.t), append([]string{"event", "--socket", r.socket}, args...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		r.t.Fatalf("uplinkd event %q: %v\n%s", args, err, out)
	}
}

// TestLabLAN6Prefix: [lan.ipv6] mode prefix with one learned delegation
// (`uplinkd event --delegated`, eth1) and one configured (eth2): a LAN
// host holding an address from each prefix reaches the IPv6 inet host
// from each, and each source leaves through the ISP its prefix came from
// (counted at the ISPs); uplinkd turned IPv6 forwarding on, accept_ra 2
// first; a delegation that ends takes its rule along.
func TestLabLAN6Prefix(t *testing.T) {
	l := ipv6Lab(t)
	pa, err := l.Delegate6("eth1")
	if err != nil {
		t.Fatal(err)
	}
	pb, err := l.Delegate6("eth2")
	if err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	cfg := strings.Replace(ipv6Config(l), "name = \"b\"\n", fmt.Sprintf("name = \"b\"\ndelegated_prefix = %q\n", pb), 1) +
		"\n[lan.ipv6]\nmode = \"prefix\"\n"
	// The metrics listener is opened by the test, the config names it.
	start := func() (*running, net.Addr) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		head := fmt.Sprintf("[daemon]\nstate_dir = %q\nmetrics_listen = %q\n", stateDir, ln.Addr().String())
		return startWith(t, l, writeConfig(t, head+cfg), ln), ln.Addr()
	}
	r, maddr := start()
	r.event("--iface", "eth1", "--delegated", pa.String(), "--preferred-lifetime", "1800", "--valid-lifetime", "3600")
	sent := time.Now()
	bothRules := func() bool {
		rules := r.ip("-6", "rule")
		return strings.Contains(rules, "from "+pa.String()+" lookup 100") && strings.Contains(rules, "from "+pb.String()+" lookup 101")
	}
	r.eventually("rules for both delegated prefixes", bothRules)

	// What the daemon reports: status --json lan.ipv6 and the metrics.
	st := r.statusJSON()
	if st.LAN == nil || st.LAN.IPv6 == nil || st.LAN.IPv6.Mode != "prefix" || len(st.LAN.IPv6.Uplinks) != 2 {
		t.Fatalf("status lan = %+v", st.LAN)
	}
	a, b := st.LAN.IPv6.Uplinks[0], st.LAN.IPv6.Uplinks[1]
	if a.Name != "a" || a.Delegated != pa || a.Source != "learned" ||
		a.ValidUntil.Sub(sent).Round(time.Minute) != time.Hour || a.PreferredUntil.Sub(sent).Round(time.Minute) != 30*time.Minute {
		t.Errorf("status of a: %+v", a)
	}
	if b.Name != "b" || b.Delegated != pb || b.Source != "config" || !b.ValidUntil.IsZero() {
		t.Errorf("status of b: %+v", b)
	}
	// The text status of the real CLI shows the same section.
	out, err := exec.Command(uplinkdBinary(t), "status", "--socket", r.socket).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "lan ipv6: mode prefix\n") ||
		!tableHasRow(string(out), []string{"a", pa.String(), "learned"}, nil) ||
		!tableHasRow(string(out), []string{"b", pb.String(), "config"}, nil) {
		t.Errorf("uplinkd status has no lan ipv6 section for a and b (%v):\n%s", err, out)
	}
	scrapeMetric(t, maddr, fmt.Sprintf(`uplinkd_lan6_delegated_prefix_info{uplink="a",prefix="%s",source="learned"}`, pa), "1")
	scrapeMetric(t, maddr, fmt.Sprintf(`uplinkd_lan6_delegated_prefix_info{uplink="b",prefix="%s",source="config"}`, pb), "1")
	scrapeMetric(t, maddr, `uplinkd_lan6_delegation_valid_until_timestamp_seconds{uplink="a"}`, strconv.FormatFloat(float64(a.ValidUntil.Unix()), 'g', -1, 64))

	// A restart keeps the learned prefix (delegated.json).
	r.stop()
	r, _ = start()
	r.eventually("both rules after a restart", bothRules)
	if a := r.statusJSON().LAN.IPv6.Uplinks[0]; a.Delegated != pa || a.Source != "learned" {
		t.Errorf("a after a restart: %+v", a)
	}
	for key, want := range map[string]string{"net.ipv6.conf.all.forwarding": "1", "net.ipv6.conf.eth1.accept_ra": "2", "net.ipv6.conf.eth2.accept_ra": "2"} {
		if got := strings.TrimSpace(mustExec(t, l, l.Router, "sysctl", "-n", key)); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}

	hostA, hostB := lanHostsIn(t, l, pa, pb)
	aFromA, aFromB := countFrom6(t, l, "eth1", pa), countFrom6(t, l, "eth1", pb)
	bFromB, bFromA := countFrom6(t, l, "eth2", pb), countFrom6(t, l, "eth2", pa)
	const n = 3
	for _, src := range []netip.Addr{hostA, hostB} {
		mustExec(t, l, l.LAN, "ping", "-6", "-c", strconv.Itoa(n), "-i", "0.2", "-W", "2", "-I", src.String(), lab.InetHosts6[0].String())
	}
	if got := [4]int{aFromA(), aFromB(), bFromB(), bFromA()}; got != [4]int{n, 0, n, 0} {
		t.Errorf("ISP eth1 saw %d from %s and %d from %s; ISP eth2 %d from %s and %d from %s; want %d, 0, %d, 0",
			got[0], pa, got[1], pb, got[2], pb, got[3], pa, n, n)
	}

	// The delegation of eth1 ends: its rule goes, eth2's stays.
	r.event("--iface", "eth1", "--delegated", "none")
	r.eventually("eth1's prefix rule gone", r.lacks("from "+pa.String()+" ", "-6", "rule"))
	if rules := r.ip("-6", "rule"); !strings.Contains(rules, "from "+pb.String()+" lookup 101") {
		t.Errorf("eth2's configured prefix lost its rule:\n%s", rules)
	}
}

// acceptFrom connects from the LAN client to the inet host's TCP listener
// ln and returns the source address the inet host saw.
func acceptFrom(t *testing.T, l *lab.Lab, ln net.Listener) netip.Addr {
	t.Helper()
	a, err := tryAcceptFrom(l, ln, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tryAcceptFrom is acceptFrom that returns a failed connection (dial
// within timeout) as an error: for waits in which a first connection may
// predate the rewrite it waits for (its conntrack entry keeps the mapping
// of its first packet for every retransmission).
func tryAcceptFrom(l *lab.Lab, ln net.Listener, timeout time.Duration) (netip.Addr, error) {
	c, err := l.DialIn(l.LAN, "tcp6", "", ln.Addr().String(), timeout)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("LAN → inet over IPv6: %w", err)
	}
	c.Close()
	// The handshake is done: the connection waits in ln's backlog.
	if err := ln.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(waitLong)); err != nil {
		return netip.Addr{}, err
	}
	a, err := ln.Accept()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("the inet host accepted nothing: %w", err)
	}
	a.Close()
	return a.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(), nil
}

// TestLabLAN6NPT: [lan.ipv6] mode npt on each firewall backend with real
// traffic. The LAN host has one inside address (fd42:0:0:1::2); the inet
// host sees its pings and TCP connections from the /64 `subnet` 3 of
// uplink a's delegation (learned); IPv6 dies upstream of a, the IPv6
// default moves to b, and new connections arrive from b's /64
// (configured delegation), with no renumbering on the LAN.
func TestLabLAN6NPT(t *testing.T) {
	for _, fw := range []struct{ name, toml string }{
		{"nftables", ""},
		{"iptables-legacy", "[firewall]\nbackend = \"iptables\"\niptables_variant = \"legacy\"\n"},
		{"iptables-nft", "[firewall]\nbackend = \"iptables\"\niptables_variant = \"nft\"\n"},
	} {
		t.Run(fw.name, func(t *testing.T) {
			l := ipv6Lab(t)
			pa, err := l.Delegate6("eth1")
			if err != nil {
				t.Fatal(err)
			}
			pb, err := l.Delegate6("eth2")
			if err != nil {
				t.Fatal(err)
			}
			// b in tier 2: the IPv6 default is a's alone until a fails.
			cfg := strings.Replace(ipv6Config(l), "name = \"b\"\n", fmt.Sprintf("name = \"b\"\ndelegated_prefix = %q\ntier = 2\n", pb), 1) +
				"\n[lan.ipv6]\nmode = \"npt\"\nprefix = \"fd42:0:0:1::/64\"\nsubnet = 3\n" + fw.toml
			r := start(t, l, writeConfig(t, cfg))
			r.event("--iface", "eth1", "--delegated", pa.String())
			outA, _ := policy.LANSubnet6(pa, 3)
			outB, _ := policy.LANSubnet6(pb, 3)
			host, err := l.AddLAN6(netip.MustParsePrefix("fd42:0:0:1::/64"))
			if err != nil {
				t.Fatal(err)
			}
			r.eventually("IPv6 default via eth1 alone", func() bool {
				m := r.ip("-6", "route", "show", "table", "157")
				return strings.Contains(m, "dev eth1") && !strings.Contains(m, "dev eth2")
			})
			ln, err := l.ListenIn(l.Inet, "tcp6", "["+lab.InetHosts6[0].String()+"]:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			// The rewrite is in place once a connection arrives from a's /64.
			var src netip.Addr
			r.eventually("the inet host sees a's /64", func() bool {
				var err error
				if src, err = tryAcceptFrom(l, ln, 3*time.Second); err != nil {
					t.Logf("trying again: %v", err)
				}
				return outA.Contains(src)
			})
			if _, err := l.Exec(l.LAN, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "-I", host.String(), lab.InetHosts6[0].String()); err != nil {
				out, _ := l.Exec(l.Router, "nft", "list", "ruleset")
				o2, _ := l.Exec(l.Router, "ip", "-6", "route", "show", "table", "all")
				o3, _ := l.Exec(l.Router, "ip", "-6", "rule")
				o4, _ := l.Exec(l.Inet, "nstat", "-az")
				t.Fatalf("ping: %v\n%s\n%s\n%s\n%s", err, out, o2, o3, o4)
			}

			if err := l.Blackhole6("eth1", true); err != nil {
				t.Fatal(err)
			}
			r.eventually("IPv6 default via eth2", r.has("dev eth2", "-6", "route", "show", "table", "157"))
			src = acceptFrom(t, l, ln)
			if !outB.Contains(src) {
				t.Fatalf("after a's IPv6 failed the inet host saw %s, want a source in %s", src, outB)
			}
			mustExec(t, l, l.LAN, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "-I", host.String(), lab.InetHosts6[0].String())
			// The LAN host kept its one address.
			if out := mustExec(t, l, l.LAN, "ip", "-6", "addr", "show", "scope", "global"); strings.Count(out, "inet6 ") != 1 {
				t.Errorf("LAN host addresses changed:\n%s", out)
			}
		})
	}
}

// TestLabIPv6InputFilter: an uplink with ipv6 on and [uplink.firewall] is
// filtered for IPv6 as for IPv4, on each backend: from the inet host an
// allowed port answers, another is dropped, echo requests pass
// (icmp_types 8), neighbour discovery keeps working (the traffic flows);
// an uplink without [uplink.firewall] stays open.
func TestLabIPv6InputFilter(t *testing.T) {
	for _, fw := range []struct{ name, toml string }{
		{"nftables", ""},
		{"iptables-legacy", "[firewall]\nbackend = \"iptables\"\niptables_variant = \"legacy\"\n"},
		{"iptables-nft", "[firewall]\nbackend = \"iptables\"\niptables_variant = \"nft\"\n"},
	} {
		t.Run(fw.name, func(t *testing.T) {
			l := ipv6Lab(t)
			cfg := strings.Replace(ipv6Config(l), "\n[[uplink]]\nname = \"b\"",
				"  [uplink.firewall]\n  allow = [{ proto = \"tcp\", ports = [22] }]\n  icmp_types = [8]\n\n[[uplink]]\nname = \"b\"", 1) + fw.toml
			r := start(t, l, writeConfig(t, cfg))
			a6, b6 := l.UplinkAddr6("eth1"), l.UplinkAddr6("eth2")
			listen := func(a netip.Addr, port int) {
				serveIn(t, l, l.Router, "tcp", netip.AddrPortFrom(a, uint16(port)).String())
			}
			listen(a6, 22)
			listen(a6, 2323)
			listen(b6, 2323)
			a4 := l.UplinkAddr("eth1")
			listen(a4, 2323)
			dial := func(a netip.Addr, port int, timeout time.Duration) error {
				c, err := l.DialIn(l.Inet, "tcp", "", netip.AddrPortFrom(a, uint16(port)).String(), timeout)
				if err == nil {
					c.Close()
				}
				return err
			}
			// The filter is in place once port 2323 of a stops answering.
			r.eventually("a's IPv6 port 2323 filtered", func() bool { return dial(a6, 2323, time.Second) != nil })
			if err := dial(a6, 22, 10*time.Second); err != nil {
				t.Errorf("allowed port 22 of a over IPv6: %v", err)
			}
			if err := dial(b6, 2323, 10*time.Second); err != nil {
				t.Errorf("b has no [uplink.firewall], yet its IPv6 port 2323: %v", err)
			}
			mustExec(t, l, l.Inet, "ping", "-6", "-c1", "-W5", a6.String())
			// a's IPv4 is filtered as before.
			if dial(a4, 2323, time.Second) == nil {
				t.Error("a's IPv4 port 2323 answers")
			}
		})
	}
}

// TestLabIPv6ConntrackPurge: IPv6 connections carry their uplink's
// connection mark, and when the uplink's IPv6 side fails (an IPv6-only
// blackhole) its IPv6 connections are deleted while its IPv4 ones stay.
func TestLabIPv6ConntrackPurge(t *testing.T) {
	l := ipv6Lab(t)
	r := start(t, l, writeConfig(t, ipv6Config(l)))
	a6, a4 := l.UplinkAddr6("eth1"), l.UplinkAddr("eth1")
	r.eventually("IPv6 source rules", r.has("from "+a6.String()+" lookup 100", "-6", "rule"))
	keep := func(network, laddr, raddr string) net.Conn {
		ln := serveIn(t, l, l.Inet, network, raddr)
		c, err := l.DialIn(l.Router, network, laddr, ln.Addr().String(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c6 := keep("tcp6", "["+a6.String()+"]:0", "["+lab.InetHosts6[1].String()+"]:0")
	c4 := keep("tcp4", a4.String()+":0", lab.InetHosts[1].String()+":0")
	tracked := func(family string, c net.Conn) string {
		local := c.LocalAddr().(*net.TCPAddr)
		out, _ := l.Exec(l.Router, "conntrack", "-L", "-f", family, "-p", "tcp", "--sport", strconv.Itoa(local.Port))
		return out
	}
	mark := fmt.Sprintf("mark=%d", 0x10000) // uplink a's connection mark
	if out := tracked("ipv6", c6); !strings.Contains(out, mark) {
		t.Fatalf("the IPv6 connection through a does not carry a's mark:\n%s", out)
	}
	if out := tracked("ipv4", c4); !strings.Contains(out, mark) {
		t.Fatalf("the IPv4 connection through a does not carry a's mark:\n%s", out)
	}
	if err := l.Blackhole6("eth1", true); err != nil {
		t.Fatal(err)
	}
	r.eventually("a's IPv6 connection deleted", func() bool { return !strings.Contains(tracked("ipv6", c6), "ESTABLISHED") })
	if out := tracked("ipv4", c4); !strings.Contains(out, "ESTABLISHED") {
		t.Errorf("a's IPv4 connection went with its IPv6 side:\n%s", out)
	}
	if recs := r.logs.records(map[string]any{"event": "conntrack", "uplink": "a", "family": "ipv6"}); len(recs) == 0 {
		t.Error("no log record of the IPv6 conntrack deletion")
	}
}

// serveIn listens in namespace ns and accepts every connection, keeping
// it open until the test ends (the listener and the connections close
// then).
func serveIn(t *testing.T, l *lab.Lab, ns, network, address string) net.Listener {
	t.Helper()
	ln, err := l.ListenIn(ns, network, address)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln
}

// TestLabLAN6PrefixMainRoutes: in mode prefix, traffic from a delegated
// prefix to a destination main routes by a more specific route than a
// default stays off the uplinks (the `from <prefix> lookup main
// suppress_prefixlength 0` rules at the lowest rule_priority minus 1).
// The LAN host pings, from its address in each uplink's prefix, a host
// on a second network behind the router (main's connected route) and an
// address behind that host (a static route in main, as a VPN's would be):
// every ping is answered and no ISP counts one of them; the inet host is
// still reached through each prefix's own uplink. A restart finds
// nothing to change (the rules read back as written), and flush removes
// them.
func TestLabLAN6PrefixMainRoutes(t *testing.T) {
	l := ipv6Lab(t)
	pa, pb := delegateBoth(t, l)
	sideNS, side, err := l.AddSideNet6(netip.MustParsePrefix("fd00:99::/64"))
	if err != nil {
		t.Fatal(err)
	}
	// Behind the side host: main routes fd00:98::/64 via it.
	behind := netip.MustParseAddr("fd00:98::1")
	mustExec(t, l, sideNS, "ip", "-6", "addr", "add", behind.String()+"/128", "dev", "lo")
	mustExec(t, l, sideNS, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	mustExec(t, l, l.Router, "ip", "-6", "route", "add", "fd00:98::/64", "via", side.String(), "dev", "side0")
	hostA, hostB := lanHostsIn(t, l, pa, pb)

	cfg := ipv6Config(l)
	cfg = strings.Replace(cfg, "name = \"a\"\n", fmt.Sprintf("name = \"a\"\ndelegated_prefix = %q\n", pa), 1)
	cfg = strings.Replace(cfg, "name = \"b\"\n", fmt.Sprintf("name = \"b\"\ndelegated_prefix = %q\n", pb), 1)
	path := writeConfig(t, cfg+"\n[lan.ipv6]\nmode = \"prefix\"\n")
	r := start(t, l, path)
	// A pass adds a prefix's main rule before its uplink rule.
	r.eventually("the uplink rules of both prefixes", func() bool {
		out := r.ip("-6", "rule")
		return strings.Contains(out, "from "+pa.String()+" lookup 100") && strings.Contains(out, "from "+pb.String()+" lookup 101")
	})
	// rule_priority 100 (a) and 101 (b): the main rules at 99.
	out := r.ip("-6", "rule")
	for _, p := range []netip.Prefix{pa, pb} {
		if !strings.Contains(out, fmt.Sprintf("99:\tfrom %s lookup main suppress_prefixlength 0 proto 157", p)) {
			t.Errorf("no main rule at 99 for %s:\n%s", p, out)
		}
	}

	counters := []func() int{countFrom6(t, l, "eth1", pa), countFrom6(t, l, "eth1", pb), countFrom6(t, l, "eth2", pa), countFrom6(t, l, "eth2", pb)}
	counts := func() (n [4]int) {
		for i, c := range counters {
			n[i] = c()
		}
		return n
	}
	const n = 3
	ping := func(src, dst netip.Addr) error {
		// The error holds the command and its output.
		_, err := l.Exec(l.LAN, "ping", "-6", "-c", strconv.Itoa(n), "-i", "0.2", "-W", "2", "-I", src.String(), dst.String())
		return err
	}
	before := counts()
	for _, src := range []netip.Addr{hostA, hostB} {
		for _, dst := range []netip.Addr{side, behind} {
			if err := ping(src, dst); err != nil {
				t.Errorf("not answered: %v", err)
			}
		}
	}
	if after := counts(); after != before {
		t.Errorf("the ISPs counted LAN packets to main's routes: ISP eth1 from %s %d→%d, from %s %d→%d; ISP eth2 from %s %d→%d, from %s %d→%d; want no change",
			pa, before[0], after[0], pb, before[1], after[1], pa, before[2], after[2], pb, before[3], after[3])
	}

	// The internet is still reached through each prefix's own uplink.
	before = counts()
	for _, src := range []netip.Addr{hostA, hostB} {
		if err := ping(src, lab.InetHosts6[0]); err != nil {
			t.Error(err)
		}
	}
	if after := counts(); after != [4]int{before[0] + n, before[1], before[2], before[3] + n} {
		t.Errorf("to the inet host: counts %v → %v, want %d more from each prefix at its own ISP", before, after, n)
	}

	// What the kernel holds reads back as written: a restart changes nothing.
	r.stop()
	r = start(t, l, path)
	if len(r.first.Changes) != 0 {
		var cmds []string
		for _, c := range r.first.Changes {
			cmds = append(cmds, c.Command())
		}
		t.Errorf("the restart's first pass changed things:\n%s", strings.Join(cmds, "\n"))
	}
	r.stop()

	// flush removes the main rules with the rest.
	mustExec(t, l, l.Router, uplinkdBinary(t), "flush", "--config", path)
	if out := r.ip("-6", "rule"); strings.Contains(out, "proto 157") || strings.Contains(out, "suppress_prefixlength") {
		t.Errorf("owned IPv6 rules left after flush:\n%s", out)
	}
}
