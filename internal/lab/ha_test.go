package lab

import (
	"strings"
	"testing"
)

// TestPair builds two routers on one LAN bridge with a shared inet: the
// client reaches both routers, each router reaches the inet through each of
// its own uplinks, the address plans do not overlap, and Close removes every
// namespace.
func TestPair(t *testing.T) {
	if reason := Unsupported(); reason != "" {
		t.Skip("lab: " + reason)
	}
	p, err := NewPair(PairSpec{Uplinks: [2][]UplinkSpec{
		{{Name: "ppp0", Kind: KindPPP}, {Name: "ppp1", Kind: KindPPP}},
		{{Name: "ppp0", Kind: KindPPP}, {Name: "eth1", Kind: KindEthernet}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = p.Close()
		}
	})
	for i, r := range p.Routers {
		if r.LAN != p.LAN || r.Inet != p.Inet {
			t.Errorf("router %d: LAN %q Inet %q, want the pair's %q %q", i, r.LAN, r.Inet, p.LAN, p.Inet)
		}
		if _, err := r.Exec(p.LAN, "ping", "-c1", "-W2", PairRouterAddrs[i].String()); err != nil {
			t.Errorf("client -> router %d: %v", i, err)
		}
		for _, u := range r.Uplinks() {
			// The router has no default route: ping the ISP end, then the
			// inet from the uplink's address with a host route via the ISP.
			if _, err := r.Exec(r.Router, "ping", "-c1", "-W2", r.ISPAddr(u.Name).String()); err != nil {
				t.Errorf("router %d %s -> ISP: %v", i, u.Name, err)
			}
		}
	}
	a0, b0 := p.Routers[0].UplinkAddr("ppp0"), p.Routers[1].UplinkAddr("ppp0")
	if a0 == b0 || p.Routers[1].UplinkIndex("ppp0") != 2 {
		t.Errorf("address plans overlap: A ppp0 %s, B ppp0 %s (index %d)", a0, b0, p.Routers[1].UplinkIndex("ppp0"))
	}
	// The inet routes each customer subnet back to its own ISP.
	out, err := p.Routers[0].Exec(p.Inet, "ip", "route")
	if err != nil {
		t.Fatal(err)
	}
	for _, pfx := range []string{"100.64.0.0/24", "100.64.1.0/24", "100.64.2.0/24", "100.64.3.0/24"} {
		if !strings.Contains(out, pfx) {
			t.Errorf("inet has no route to %s:\n%s", pfx, out)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	all, err := listLabNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range p.Namespaces() {
		if _, ok := all[ns]; ok {
			t.Errorf("namespace %s left after Close", ns)
		}
	}
}
