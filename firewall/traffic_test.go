package firewall

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

// lab is client -- router -- server:
//
//	client lan1 10.0.0.2/24 --- lan0 10.0.0.1/24 router
//	router wan0 192.0.2.1/24 --- s0 192.0.2.2/24 server
//	router wan1 198.51.100.1/24 --- s1 198.51.100.2/24 server
//
// The server also holds 203.0.113.1 (the "internet host") and has no route
// back to the LAN, so LAN traffic only works through NAT. The router routes
// mark 1 through table 100 (default via wan1), as policy would for a [[rule]].
type lab struct {
	client, router, server *netNS
	s0MAC                  string
}

func newLab(t testing.TB) *lab {
	l := &lab{client: newNS(t), router: newNS(t), server: newNS(t)}
	veth(t, l.client, "lan1", l.router, "lan0")
	veth(t, l.router, "wan0", l.server, "s0")
	veth(t, l.router, "wan1", l.server, "s1")
	c, r, s := l.client, l.router, l.server
	c.mustRun(t, "ip", "addr", "add", "10.0.0.2/24", "dev", "lan1")
	c.mustRun(t, "ip", "route", "add", "default", "via", "10.0.0.1")
	r.mustRun(t, "ip", "addr", "add", "10.0.0.1/24", "dev", "lan0")
	r.mustRun(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "wan0")
	r.mustRun(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "wan1")
	r.mustRun(t, "ip", "route", "add", "default", "via", "192.0.2.2")
	r.mustRun(t, "ip", "route", "add", "default", "via", "198.51.100.2", "table", "100")
	r.mustRun(t, "ip", "rule", "add", "fwmark", "0x1/0xffff", "lookup", "100", "priority", "100")
	// Namespace-local sysctls of the lab router.
	r.mustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.default.rp_filter=2")
	s.mustRun(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "s0")
	s.mustRun(t, "ip", "addr", "add", "198.51.100.2/24", "dev", "s1")
	s.mustRun(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	out := s.mustRun(t, "cat", "/sys/class/net/s0/address")
	l.s0MAC = strings.TrimSpace(out)
	return l
}

func labConfig() *policy.Config {
	return &policy.Config{
		LAN: policy.LAN{Interface: "lan0", Networks: prefixes("10.0.0.0/24"), Masquerade: true},
		Uplinks: []policy.Uplink{
			{Name: "wan0", Interface: "wan0", SNAT: "snat", Firewall: &policy.UplinkFirewall{
				Allow:     []policy.Allow{{Proto: "tcp", Ports: []uint16{2222, 2225}}},
				Limit:     []policy.Limit{{Proto: "tcp", Port: 2222, Hits: 3, Seconds: 60}},
				ICMPTypes: []uint8{8},
			}},
			{Name: "wan1", Interface: "wan1", SNAT: "masquerade"},
		},
		Rules: []policy.MarkRule{
			{Name: "uid108", UID: ptr[uint32](108), Uplink: "wan1", Mark: 1},
			{Name: "lan-8081", InIface: "lan0", Dest: prefixes("203.0.113.0/24"), Proto: "tcp", Ports: []uint16{8081}, Uplink: "wan1", Mark: 1},
		},
	}
}

func labState(wan0 string) []policy.UplinkState {
	return []policy.UplinkState{
		{Name: "wan0", Iface: "wan0", Addr: netip.MustParseAddr(wan0)},
		{Name: "wan1", Iface: "wan1", Addr: netip.MustParseAddr("198.51.100.1")},
	}
}

// listen accepts TCP connections in ns and reports each peer's address.
func listen(t *testing.T, ns *netNS, addr string) <-chan netip.Addr {
	var ln net.Listener
	var err error
	ns.do(t, func() { ln, err = net.Listen("tcp4", addr) })
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.name, err)
	}
	t.Cleanup(func() { ln.Close() })
	peers := make(chan netip.Addr, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
			c.Close()
		}
	}()
	return peers
}

// dial connects from ns (optionally from laddr) and returns the error.
func dial(t *testing.T, ns *netNS, laddr, raddr string, timeout time.Duration) error {
	var err error
	ns.do(t, func() {
		d := net.Dialer{Timeout: timeout}
		if laddr != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(laddr)}
		}
		var c net.Conn
		if c, err = d.Dial("tcp4", raddr); err == nil {
			c.Close()
		}
	})
	return err
}

func peer(t *testing.T, peers <-chan netip.Addr, want string, what string) {
	t.Helper()
	select {
	case got := <-peers:
		if got.String() != want {
			t.Errorf("%s: server saw %s, want %s", what, got, want)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("%s: no connection arrived", what)
	}
}

func TestTraffic(t *testing.T) {
	if _, err := exec.LookPath("conntrack"); err != nil {
		t.Skip("needs conntrack")
	}
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) {
			l := newLab(t)
			b := k.make(t, l.router)
			cfg := labConfig()
			if _, err := b.Sync(Compute(Input{Config: cfg, Uplinks: labState("192.0.2.1")})); err != nil {
				t.Fatal(err)
			}
			web := listen(t, l.server, "0.0.0.0:8080")
			alt := listen(t, l.server, "0.0.0.0:8081")

			// LAN TCP through SNAT on wan0.
			if err := dial(t, l.client, "", "203.0.113.1:8080", 2*time.Second); err != nil {
				t.Fatalf("LAN tcp: %v", err)
			}
			peer(t, web, "192.0.2.1", "LAN tcp via wan0")
			ct := l.router.mustRun(t, "conntrack", "-L", "-p", "tcp", "--dport", "8080")
			if !strings.Contains(ct, "mark=65536") {
				t.Errorf("connection via wan0 lacks uplink mark 0x10000:\n%s", ct)
			}
			// LAN ICMP through SNAT.
			l.client.mustRun(t, "ping", "-c1", "-W2", "203.0.113.1")
			if ct := l.router.mustRun(t, "conntrack", "-L", "-p", "icmp"); !strings.Contains(ct, "dst=192.0.2.1") {
				t.Errorf("ping not NATed to 192.0.2.1:\n%s", ct)
			}
			// A [[rule]] for forwarded LAN traffic: marked, routed via wan1,
			// masqueraded there; the reply still reaches the client.
			if err := dial(t, l.client, "", "203.0.113.1:8081", 2*time.Second); err != nil {
				t.Fatalf("LAN tcp rule: %v", err)
			}
			peer(t, alt, "198.51.100.1", "LAN tcp marked for wan1")
			ct = l.router.mustRun(t, "conntrack", "-L", "-p", "tcp", "--dport", "8081")
			if !strings.Contains(ct, fmt.Sprintf("mark=%d", 0x20001)) {
				t.Errorf("marked connection lacks mark 0x20001 (uplink wan1, rule 1):\n%s", ct)
			}
			// uid 108 on the router leaves via wan1, root via wan0.
			if _, err := exec.LookPath("setpriv"); err == nil {
				l.router.mustRun(t, "setpriv", "--reuid=108", "--regid=108", "--clear-groups",
					"bash", "-c", "exec 3<>/dev/tcp/203.0.113.1/8080")
				peer(t, web, "198.51.100.1", "uid 108")
				l.router.mustRun(t, "bash", "-c", "exec 3<>/dev/tcp/203.0.113.1/8080")
				peer(t, web, "192.0.2.1", "root")
			}

			// Input filter on wan0: allowed port, 4th new connection within
			// a minute dropped, other ports dropped.
			listen(t, l.router, "0.0.0.0:2222")
			listen(t, l.router, "0.0.0.0:2223")
			listen(t, l.router, "0.0.0.0:2225")
			for i := 1; i <= 3; i++ {
				if err := dial(t, l.server, "", "192.0.2.1:2222", time.Second); err != nil {
					t.Errorf("ssh-like connection %d refused: %v", i, err)
				}
			}
			if err := dial(t, l.server, "", "192.0.2.1:2222", 400*time.Millisecond); !isTimeout(err) {
				t.Errorf("4th connection within a minute: %v, want dropped", err)
			}
			if err := dial(t, l.server, "", "192.0.2.1:2223", 400*time.Millisecond); !isTimeout(err) {
				t.Errorf("port not allowed on wan0: %v, want dropped", err)
			}
			if err := dial(t, l.server, "", "192.0.2.1:2225", time.Second); err != nil {
				t.Errorf("allowed port 2225: %v", err)
			}
			l.server.mustRun(t, "ping", "-c1", "-W2", "192.0.2.1") // icmp type 8 allowed
			// wan1 has no [uplink.firewall]: not filtered.
			if err := dial(t, l.server, "", "198.51.100.1:2223", time.Second); err != nil {
				t.Errorf("unfiltered uplink: %v", err)
			}

			// Deny list: a source address (reject) and a MAC (drop).
			cfg.Firewall.Deny = []policy.DenyRule{{Source: prefix("198.51.100.2"), Action: "reject"}, {MAC: l.s0MAC, Action: "drop"}}
			if _, err := b.Sync(Compute(Input{Config: cfg, Uplinks: labState("192.0.2.1")})); err != nil {
				t.Fatal(err)
			}
			if err := dial(t, l.server, "", "198.51.100.1:2223", time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("denied source: %v, want refused", err)
			}
			if err := dial(t, l.server, "", "192.0.2.1:2225", 400*time.Millisecond); !isTimeout(err) {
				t.Errorf("denied mac: %v, want dropped", err)
			}
			cfg.Firewall.Deny = nil

			// Address change: SNAT follows, conntrack of the old address goes.
			l.router.mustRun(t, "ip", "addr", "del", "192.0.2.1/24", "dev", "wan0")
			l.router.mustRun(t, "ip", "addr", "add", "192.0.2.3/24", "dev", "wan0")
			l.router.mustRun(t, "ip", "route", "replace", "default", "via", "192.0.2.2")
			if _, err := b.Sync(Compute(Input{Config: cfg, Uplinks: labState("192.0.2.3")})); err != nil {
				t.Fatal(err)
			}
			if n, err := b.DeleteConntrackByMark(UplinkMark(0), UplinkMarkMask); err != nil || n == 0 {
				t.Errorf("DeleteConntrackByMark(wan0) = %d, %v", n, err)
			}
			ct = l.router.mustRun(t, "conntrack", "-L")
			for _, line := range strings.Split(ct, "\n") {
				if strings.Contains(line, fmt.Sprintf("mark=%d ", UplinkMark(0))) ||
					strings.Contains(line, "src=10.0.0.2 ") && strings.Contains(line, "dst=192.0.2.1 ") {
					t.Errorf("state of wan0's old address remains: %s", line)
				}
			}
			if ct := l.router.mustRun(t, "conntrack", "-L", "-p", "tcp", "--dport", "8081"); !strings.Contains(ct, "8081") {
				t.Errorf("wan1's connections were deleted too:\n%s", ct)
			}
			if err := dial(t, l.client, "", "203.0.113.1:8080", 2*time.Second); err != nil {
				t.Fatalf("LAN tcp after address change: %v", err)
			}
			peer(t, web, "192.0.2.3", "LAN tcp after address change")
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestSNATBeforeItsAddressIsKnown: the kernel routes LAN traffic out of an
// snat uplink whose address the ruleset does not name yet (a redial's new
// address, between the route write and the firewall sync of the same pass).
// That traffic must leave NATed to the address the interface has: sent with
// its LAN source, it gets no answer (the server has no route to the LAN) and
// its conntrack entry keeps it un-NATed for as long as the flow lasts.
func TestSNATBeforeItsAddressIsKnown(t *testing.T) {
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) {
			l := newLab(t)
			b := k.make(t, l.router)
			state := labState("192.0.2.1")
			state[0].Addr = netip.Addr{} // wan0's address: not known to the ruleset
			if _, err := b.Sync(Compute(Input{Config: labConfig(), Uplinks: state})); err != nil {
				t.Fatal(err)
			}
			web := listen(t, l.server, "0.0.0.0:8080")
			if err := dial(t, l.client, "", "203.0.113.1:8080", 2*time.Second); err != nil {
				t.Fatalf("LAN tcp via wan0 before its address is known: %v", err)
			}
			peer(t, web, "192.0.2.1", "LAN tcp via wan0 before its address is known")
			// Once the address is known the same flow is SNATed to it.
			if _, err := b.Sync(Compute(Input{Config: labConfig(), Uplinks: labState("192.0.2.1")})); err != nil {
				t.Fatal(err)
			}
			if err := dial(t, l.client, "", "203.0.113.1:8080", 2*time.Second); err != nil {
				t.Fatalf("LAN tcp via wan0 with its address known: %v", err)
			}
			peer(t, web, "192.0.2.1", "LAN tcp via wan0 with its address known")
		})
	}
}
