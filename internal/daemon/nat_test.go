package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// tiered: labConfig with ppp1 in tier 2, so ppp0 carries the main default
// while ppp1 stands by and takes uid 108's traffic; the firewall backend is a
// parameter.
func tieredConfig(backend string) string {
	cfg := strings.Replace(labConfig, "rule_priority = 300\n", "rule_priority = 300\ntier = 2\n", 1)
	return cfg + "\n[firewall]\nbackend = \"" + backend + "\"\n"
}

// inetServer is a TCP server on an inet host that records the source
// address of every connection and echoes what it reads.
type inetServer struct {
	ln    net.Listener
	mu    sync.Mutex
	peers []string
}

func newInetServer(t *testing.T, l *lab.Lab, addr string) *inetServer {
	t.Helper()
	ln, err := l.ListenIn(l.Inet, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &inetServer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.peers = append(s.peers, c.RemoteAddr().(*net.TCPAddr).IP.String())
			s.mu.Unlock()
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return s
}

// peer waits until the server has accepted its n-th connection (1-based)
// and returns that connection's source address: a client that connects and
// closes (nc -z) returns before the server's accept goroutine has run.
func (s *inetServer) peer(t *testing.T, n int) string {
	t.Helper()
	for deadline := time.Now().Add(waitLong); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		s.mu.Lock()
		if len(s.peers) >= n {
			p := s.peers[n-1]
			s.mu.Unlock()
			return p
		}
		s.mu.Unlock()
	}
	t.Fatalf("the server never saw connection %d", n)
	return ""
}

func (s *inetServer) lastPeer() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.peers) == 0 {
		return ""
	}
	return s.peers[len(s.peers)-1]
}

// lanDial connects from the LAN client and checks an echo round trip.
func lanDial(t *testing.T, l *lab.Lab, addr string) net.Conn {
	t.Helper()
	c, err := l.DialIn(l.LAN, "tcp", "", addr, 3*time.Second)
	if err != nil {
		t.Fatalf("LAN dial %s: %v", addr, err)
	}
	echo(t, c)
	return c
}

func echo(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("echo: %v", err)
	}
}

// brokenConns is how many of conns (to an echo server) fail a round trip
// within timeout each.
func brokenConns(conns []net.Conn, timeout time.Duration) int {
	broken := 0
	for _, c := range conns {
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			broken++
			continue
		}
		if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
			broken++
		}
	}
	return broken
}

func forBackends(t *testing.T, fn func(t *testing.T, backend string)) {
	for _, b := range []string{"nftables", "iptables"} {
		t.Run(b, func(t *testing.T) { fn(t, b) })
	}
}

func TestLabLANThroughEachUplinkWithSNAT(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		l := dualLab(t)
		srv := newInetServer(t, l, "192.0.2.1:8080")
		r := start(t, l, writeConfig(t, tieredConfig(backend)))
		r.eventually("default via ppp0", r.has("default dev ppp0 proto 157", "route", "show", "default", "table", "157"))

		mustExec(t, l, l.LAN, "ping", "-c1", "-W2", "192.0.2.1")
		lanDial(t, l, "192.0.2.1:8080").Close()
		if got, want := srv.lastPeer(), l.UplinkAddr("ppp0").String(); got != want {
			t.Errorf("via ppp0 the server saw %s, want the uplink address %s", got, want)
		}

		if _, err := l.SetCarrier("ppp0", false); err != nil {
			t.Fatal(err)
		}
		r.eventually("default via ppp1", r.has("default dev ppp1 proto 157", "route", "show", "default", "table", "157"))
		mustExec(t, l, l.LAN, "ping", "-c1", "-W2", "192.0.2.1")
		lanDial(t, l, "192.0.2.1:8080").Close()
		if got, want := srv.lastPeer(), l.UplinkAddr("ppp1").String(); got != want {
			t.Errorf("via ppp1 the server saw %s, want the uplink address %s", got, want)
		}
	})
}

// ppp1FirstConfig is tieredConfig the other way round: ppp1 carries the
// main default, ppp0 stands by in tier 2.
func ppp1FirstConfig(backend string) string {
	cfg := strings.Replace(tieredConfig(backend), "tier = 2\n", "", 1)
	return strings.Replace(cfg, "name = \"ppp0\"\nkind = \"ppp\"\ntable = 200\nrule_priority = 200\n",
		"name = \"ppp0\"\nkind = \"ppp\"\ntable = 200\nrule_priority = 200\ntier = 2\n", 1)
}

// heldFirewall passes everything to the real backend but holds back the
// first Sync that hold accepts (once armed) until release: the routing
// writes of that pass go ahead, as they do beside a slow transaction
// (iptables-restore takes tens of milliseconds).
type heldFirewall struct {
	Firewall
	mu      sync.Mutex
	hold    func(firewall.Ruleset) bool
	synced  firewall.Ruleset // the last ruleset written
	held    chan struct{}    // closed when a Sync is held
	release chan struct{}
	once    sync.Once
}

func newHeldFirewall() *heldFirewall {
	return &heldFirewall{held: make(chan struct{}), release: make(chan struct{})}
}

func (f *heldFirewall) wrap(fw Firewall) Firewall { f.Firewall = fw; return f }

func (f *heldFirewall) arm(hold func(firewall.Ruleset) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = hold
}

func (f *heldFirewall) open() { f.once.Do(func() { close(f.release) }) }

func (f *heldFirewall) Sync(rs firewall.Ruleset) (bool, error) {
	f.mu.Lock()
	hold := f.hold != nil && f.hold(rs)
	if hold {
		f.hold = nil
	}
	f.mu.Unlock()
	if hold {
		close(f.held)
		<-f.release
	}
	changed, err := f.Firewall.Sync(rs)
	f.mu.Lock()
	f.synced = rs
	f.mu.Unlock()
	return changed, err
}

// uplinkAddr is the address the last written ruleset gave the uplink.
func (f *heldFirewall) uplinkAddr(name string) (netip.Addr, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return rulesetAddr(f.synced, name)
}

// rulesetAddr is the address rs gives the uplink; ok is false when rs has
// no such uplink.
func rulesetAddr(rs firewall.Ruleset, name string) (a netip.Addr, ok bool) {
	for _, u := range rs.Uplinks {
		if u.Name == name {
			return u.Addr, true
		}
	}
	return netip.Addr{}, false
}

// TestLabTrafficAheadOfTheFirewallIsNATed: a pass writes its routes beside
// the firewall's transaction, so for a moment after a redial the kernel
// routes LAN traffic out of the uplink while the firewall in force is the
// one written while the uplink had no address. That traffic must leave
// NATed to the new address: with the LAN source it gets no answer, and its
// conntrack entry keeps it un-NATed (the flake this reproduces: an old
// connection that hung instead of being reset).
func TestLabTrafficAheadOfTheFirewallIsNATed(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		l := dualLab(t)
		srv := newInetServer(t, l, "192.0.2.1:8080")
		fw := newHeldFirewall()
		r := startWrapped(t, l, writeConfig(t, ppp1FirstConfig(backend)), nil, fw.wrap)
		t.Cleanup(fw.open) // runs before the daemon's stop, which a held pass would block
		r.eventually("default via ppp1", r.has("default dev ppp1 proto 157", "route", "show", "default", "table", "157"))

		if _, err := l.DropLink("ppp1"); err != nil {
			t.Fatal(err)
		}
		r.eventually("a firewall written for ppp1 without an address", func() bool {
			a, ok := fw.uplinkAddr("ppp1")
			return ok && !a.IsValid()
		})
		fw.arm(func(rs firewall.Ruleset) bool {
			a, _ := rulesetAddr(rs, "ppp1")
			return a.IsValid()
		})
		res, err := l.Dial("ppp1")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-fw.held:
		case <-time.After(30 * time.Second):
			t.Fatal("no firewall sync for ppp1's new address")
		}
		r.eventually("rule for the new address", r.has("from "+res.New.String()+" lookup 201", "rule"))
		r.eventually("default via ppp1 again", r.has("default dev ppp1 proto 157", "route", "show", "default", "table", "157"))
		lanDial(t, l, "192.0.2.1:8080").Close()
		if got := srv.lastPeer(); got != res.New.String() {
			t.Errorf("ahead of the firewall the server saw %s, want ppp1's new address %s", got, res.New)
		}
		fw.open()
		r.eventually("ppp1's new address in the firewall", func() bool {
			a, _ := fw.uplinkAddr("ppp1")
			return a == res.New
		})
		lanDial(t, l, "192.0.2.1:8080").Close()
		if got := srv.lastPeer(); got != res.New.String() {
			t.Errorf("after the firewall's sync the server saw %s, want %s", got, res.New)
		}
	})
}

func TestLabRedialRewritesSNATAndResetsOldConnections(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		l := dualLab(t)
		srv := newInetServer(t, l, "192.0.2.1:8080")
		r := start(t, l, writeConfig(t, ppp1FirstConfig(backend)))
		r.eventually("default via ppp1", r.has("default dev ppp1 proto 157", "route", "show", "default", "table", "157"))

		long := lanDial(t, l, "192.0.2.1:8080")
		defer long.Close()
		old := l.UplinkAddr("ppp1")
		if srv.lastPeer() != old.String() {
			t.Fatalf("server saw %s, want %s", srv.lastPeer(), old)
		}
		res, err := l.Redial("ppp1")
		if err != nil {
			t.Fatal(err)
		}
		r.eventually("rule for the new address", r.has("from "+res.New.String()+" lookup 201", "rule"))

		// No NAT state for the old address is left.
		r.eventually("no conntrack entry of the old address", func() bool {
			out, _ := l.Exec(l.Router, "conntrack", "-L")
			return !strings.Contains(out, old.String())
		})
		// The long-lived connection is reset, not left hanging: its next
		// segment leaves with the new address and the server answers RST.
		_ = long.SetDeadline(time.Now().Add(5 * time.Second))
		_, werr := long.Write([]byte("again\n"))
		_, rerr := long.Read(make([]byte, 6))
		if werr == nil && rerr == nil {
			t.Fatal("the old connection still works across an address change (NAT should have broken it)")
		}
		var ne net.Error
		if err := errors.Join(werr, rerr); errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the old connection hangs instead of being reset: %v", err)
		}
		// Once ppp1 is back in the default route, a new connection goes out
		// with the new address.
		r.eventually("default via ppp1 again", r.has("default dev ppp1 proto 157", "route", "show", "default", "table", "157"))
		lanDial(t, l, "192.0.2.1:8080").Close()
		if got := srv.lastPeer(); got != res.New.String() {
			t.Errorf("after the redial the server saw %s, want %s", got, res.New)
		}
	})
}

func TestLabUID108LeavesViaPPP1(t *testing.T) {
	l := dualLab(t)
	srv := newInetServer(t, l, "192.0.2.1:8080")
	r := start(t, l, writeConfig(t, tieredConfig("nftables")))
	r.eventually("default via ppp0", r.has("default dev ppp0 proto 157", "route", "show", "default", "table", "157"))

	mustExec(t, l, l.Router, "nc", "-z", "-w", "3", "192.0.2.1", "8080")
	if got, want := srv.peer(t, 1), l.UplinkAddr("ppp0").String(); got != want {
		t.Errorf("root's connection came from %s, want ppp0's %s", got, want)
	}
	mustExec(t, l, l.Router, "setpriv", "--reuid=108", "--regid=108", "--clear-groups", "nc", "-z", "-w", "3", "192.0.2.1", "8080")
	if got, want := srv.peer(t, 2), l.UplinkAddr("ppp1").String(); got != want {
		t.Errorf("uid 108's connection came from %s, want ppp1's %s", got, want)
	}
}

func TestLabFirewallRepaired(t *testing.T) {
	for _, tc := range []struct {
		backend, present string
		damage           []string
	}{
		{"nftables", "nft list table ip uplinkd", []string{"nft", "flush", "ruleset"}},
		{"iptables", "iptables -t nat -S UPLINKD-POSTROUTING", []string{"iptables", "-t", "nat", "-F"}},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			l := dualLab(t)
			// An admin's own rules must survive start, reload, repair and flush.
			adminRules := func() {
				mustExec(t, l, l.Router, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.168.77.0/24", "-j", "MASQUERADE")
				mustExec(t, l, l.Router, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT")
			}
			adminIntact := func(when string) {
				out := mustExec(t, l, l.Router, "iptables-save")
				if !strings.Contains(out, "192.168.77.0/24") || !strings.Contains(out, "--dport 2222") {
					t.Errorf("the admin's rules did not survive %s:\n%s", when, out)
				}
			}
			adminRules()
			cfg := writeConfig(t, tieredConfig(tc.backend))
			r := start(t, l, cfg)
			snat := "snat to " + l.UplinkAddr("ppp0").String()
			check := func() bool {
				out, err := l.Exec(l.Router, strings.Fields(tc.present)...)
				return err == nil && (strings.Contains(out, snat) || strings.Contains(out, "--to-source "+l.UplinkAddr("ppp0").String()))
			}
			r.eventually("firewall in place", check)
			adminIntact("start")
			if err := r.d.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			r.waitSync()
			adminIntact("reload")
			mustExec(t, l, l.Router, tc.damage...)
			r.eventually("firewall restored", check)
			// The SNAT text is back; with the iptables backend the jump from
			// POSTROUTING is restored by the same Sync a moment later.
			r.eventually("LAN traffic flows again", func() bool {
				_, err := l.Exec(l.LAN, "ping", "-c1", "-W5", "192.0.2.1")
				return err == nil
			})
			if tc.backend == "nftables" {
				// nft flush ruleset wiped the admin's rules too: restoring
				// those is theirs. Put them back to check that flush leaves
				// them alone.
				adminRules()
			} else {
				// iptables -t nat -F took the admin's nat rule; the filter
				// rule must have survived our repair.
				out := mustExec(t, l, l.Router, "iptables-save")
				if !strings.Contains(out, "--dport 2222") {
					t.Errorf("the repair lost the admin's filter rule:\n%s", out)
				}
				mustExec(t, l, l.Router, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.168.77.0/24", "-j", "MASQUERADE")
			}
			r.stop()
			mustExec(t, l, l.Router, uplinkdBinary(t), "flush", "--config", cfg)
			adminIntact("flush")
			if out := mustExec(t, l, l.Router, "iptables-save"); strings.Contains(out, "UPLINKD") {
				t.Errorf("after flush our chains are still there:\n%s", out)
			}
			if out, _ := l.Exec(l.Router, "nft", "list", "tables"); strings.Contains(out, "uplinkd") {
				t.Errorf("after flush the uplinkd table is still there:\n%s", out)
			}
		})
	}
}

// TestLabWeightedSplitIsPerConnectionAndSticky: weights 3:1 split new LAN
// connections about 3:1 over the two uplinks; then the weights change (the
// multipath hash now maps many flows elsewhere) and every open connection
// must stay on the uplink it started on. The ISPs drop packets whose source
// is not their customer's (BCP 38, strict rp_filter), as real ones do, so a
// connection that moved would break.
func TestLabWeightedSplitIsPerConnectionAndSticky(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		l := dualLab(t)
		for _, isp := range l.ISPs {
			for _, key := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.cust0.rp_filter"} {
				if err := l.Sysctl(isp, key, "1"); err != nil {
					t.Fatal(err)
				}
			}
		}
		srv := newInetServer(t, l, "192.0.2.1:8080")
		weights := func(w0, w1 int) string {
			cfg := strings.Replace(labConfig, "rule_priority = 200\n", fmt.Sprintf("rule_priority = 200\nweight = %d\n", w0), 1)
			cfg = strings.Replace(cfg, "rule_priority = 300\n", fmt.Sprintf("rule_priority = 300\nweight = %d\n", w1), 1)
			return cfg + "\n[firewall]\nbackend = \"" + backend + "\"\n"
		}
		path := writeConfig(t, weights(3, 1))
		r := start(t, l, path)
		r.eventually("3:1 multipath", r.has("nexthop dev ppp0 weight 3", "route", "show", "default", "table", "157"))

		const n = 120
		conns := make([]net.Conn, 0, n)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		count := map[string]int{}
		for range n {
			conns = append(conns, lanDial(t, l, "192.0.2.1:8080"))
			count[srv.lastPeer()]++
		}
		a0, a1 := l.UplinkAddr("ppp0").String(), l.UplinkAddr("ppp1").String()
		t.Logf("split over %d connections: ppp0 %d, ppp1 %d", n, count[a0], count[a1])
		// 3:1 of 120 is 90:30; binomial sd ≈ 4.7, so 70..110 is > 4 sd.
		if count[a0]+count[a1] != n || count[a0] < 70 || count[a0] > 110 {
			t.Errorf("want about 90:30 split, got ppp0 %d, ppp1 %d (others %v)", count[a0], count[a1], count)
		}

		if err := os.WriteFile(path, []byte(weights(1, 3)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := r.d.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		r.eventually("1:3 multipath", r.has("nexthop dev ppp1 weight 3", "route", "show", "default", "table", "157"))
		if broken := brokenConns(conns, 2*time.Second); broken > 0 {
			t.Errorf("%d of %d open connections broke when the weights changed", broken, n)
		}
	})
}
