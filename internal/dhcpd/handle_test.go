package dhcpd

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func newTestHandler(t testing.TB, spec Spec) *handler {
	t.Helper()
	spec, err := spec.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return &handler{
		pool: newPool(spec),
		opts: newReplyOptions(spec, spec.ServerIP, spec.Network),
		net:  spec.Network,
		now:  func() time.Time { return t0 },
		log:  slog.New(slog.DiscardHandler),
	}
}

func hw(i int) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, byte(i)} }

func msg(t testing.TB, typ dhcpv4.MessageType, mac net.HardwareAddr, mods ...dhcpv4.Modifier) []byte {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(typ),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.ToBytes()
}

func reqIP(a string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(a)))
}

func srvID(a string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(a)))
}

func ciaddr(a string) dhcpv4.Modifier { return dhcpv4.WithClientIP(net.ParseIP(a)) }

// exchange runs one packet through the handler and returns the reply's
// type, its yiaddr and destination ("" type: no reply).
func exchange(t testing.TB, h *handler, b []byte, unicast bool) (dhcpv4.MessageType, netip.Addr, netip.AddrPort, *dhcpv4.DHCPv4) {
	t.Helper()
	r := h.handle(context.Background(), b, unicast)
	if r == nil {
		return dhcpv4.MessageTypeNone, netip.Addr{}, netip.AddrPort{}, nil
	}
	// What goes on the wire must parse again.
	m, err := dhcpv4.FromBytes(r.msg.ToBytes())
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return m.MessageType(), addrOf(m.YourIPAddr), r.to, m
}

func TestRequestStates(t *testing.T) {
	bcast := bcastClient
	uni := func(a string) netip.AddrPort { return netip.AddrPortFrom(addr(a), 68) }
	type step struct {
		typ     dhcpv4.MessageType
		mac     int
		mods    []dhcpv4.Modifier
		unicast bool
		want    dhcpv4.MessageType
		wantIP  string
		wantTo  netip.AddrPort
	}
	discover := func(mac int, ip string) step {
		return step{typ: dhcpv4.MessageTypeDiscover, mac: mac, want: dhcpv4.MessageTypeOffer, wantIP: ip, wantTo: bcast}
	}
	selecting := func(mac int, ip string) step {
		return step{typ: dhcpv4.MessageTypeRequest, mac: mac, mods: []dhcpv4.Modifier{srvID("10.0.0.1"), reqIP(ip)},
			want: dhcpv4.MessageTypeAck, wantIP: ip, wantTo: bcast}
	}
	tests := []struct {
		name    string
		steps   []step
		counter func(c *counters) uint64
	}{
		{name: "discover, select, ack", steps: []step{discover(1, "10.0.0.100"), selecting(1, "10.0.0.100")},
			counter: func(c *counters) uint64 { return c.selecting.Load() }},
		{name: "selecting another server drops the offer", steps: []step{
			discover(1, "10.0.0.100"),
			{typ: dhcpv4.MessageTypeRequest, mac: 1, mods: []dhcpv4.Modifier{srvID("10.0.0.9"), reqIP("10.0.0.100")}},
			discover(2, "10.0.0.101"),  // 100 is still remembered for client 1 ...
			selecting(2, "10.0.0.100"), // ... but free to take
		}},
		{name: "selecting an address offered to another client", steps: []step{
			discover(1, "10.0.0.100"),
			{typ: dhcpv4.MessageTypeRequest, mac: 2, mods: []dhcpv4.Modifier{srvID("10.0.0.1"), reqIP("10.0.0.100")},
				want: dhcpv4.MessageTypeNak, wantTo: bcast},
		}},
		{name: "init-reboot on our network", steps: []step{
			{typ: dhcpv4.MessageTypeRequest, mac: 1, mods: []dhcpv4.Modifier{reqIP("10.0.0.101")},
				want: dhcpv4.MessageTypeAck, wantIP: "10.0.0.101", wantTo: bcast},
		}, counter: func(c *counters) uint64 { return c.initReboot.Load() }},
		{name: "init-reboot from another network", steps: []step{
			{typ: dhcpv4.MessageTypeRequest, mac: 1, mods: []dhcpv4.Modifier{reqIP("192.168.1.50")},
				want: dhcpv4.MessageTypeNak, wantTo: bcast},
		}},
		{name: "renewing is unicast and answered to ciaddr", steps: []step{
			discover(1, "10.0.0.100"), selecting(1, "10.0.0.100"),
			{typ: dhcpv4.MessageTypeRequest, mac: 1, mods: []dhcpv4.Modifier{ciaddr("10.0.0.100")}, unicast: true,
				want: dhcpv4.MessageTypeAck, wantIP: "10.0.0.100", wantTo: uni("10.0.0.100")},
		}, counter: func(c *counters) uint64 { return c.renewing.Load() }},
		{name: "rebinding is broadcast", steps: []step{
			discover(1, "10.0.0.100"), selecting(1, "10.0.0.100"),
			{typ: dhcpv4.MessageTypeRequest, mac: 1, mods: []dhcpv4.Modifier{ciaddr("10.0.0.100")},
				want: dhcpv4.MessageTypeAck, wantIP: "10.0.0.100", wantTo: uni("10.0.0.100")},
		}, counter: func(c *counters) uint64 { return c.rebinding.Load() }},
		{name: "rebinding another client's address", steps: []step{
			discover(1, "10.0.0.100"), selecting(1, "10.0.0.100"),
			{typ: dhcpv4.MessageTypeRequest, mac: 2, mods: []dhcpv4.Modifier{ciaddr("10.0.0.100")},
				want: dhcpv4.MessageTypeNak, wantTo: bcast},
		}},
		{name: "fixed host", steps: []step{
			{typ: dhcpv4.MessageTypeDiscover, mac: -1, want: dhcpv4.MessageTypeOffer, wantIP: "10.0.0.2", wantTo: bcast},
			{typ: dhcpv4.MessageTypeRequest, mac: -1, mods: []dhcpv4.Modifier{srvID("10.0.0.1"), reqIP("10.0.0.2")},
				want: dhcpv4.MessageTypeAck, wantIP: "10.0.0.2", wantTo: bcast},
		}},
		{name: "decline takes the address out", steps: []step{
			discover(1, "10.0.0.100"), selecting(1, "10.0.0.100"),
			{typ: dhcpv4.MessageTypeDecline, mac: 1, mods: []dhcpv4.Modifier{reqIP("10.0.0.100"), srvID("10.0.0.1")}},
			discover(1, "10.0.0.101"),
			discover(2, "10.0.0.102"),
		}, counter: func(c *counters) uint64 { return c.declines.Load() }},
		{name: "release frees the address, the client gets it back", steps: []step{
			discover(1, "10.0.0.100"), selecting(1, "10.0.0.100"),
			{typ: dhcpv4.MessageTypeRelease, mac: 1, mods: []dhcpv4.Modifier{ciaddr("10.0.0.100"), srvID("10.0.0.1")}},
			discover(1, "10.0.0.100"),
		}, counter: func(c *counters) uint64 { return c.releases.Load() }},
		{name: "inform", steps: []step{
			{typ: dhcpv4.MessageTypeInform, mac: 1, mods: []dhcpv4.Modifier{ciaddr("10.0.0.50")}, unicast: true,
				want: dhcpv4.MessageTypeAck, wantTo: uni("10.0.0.50")},
		}, counter: func(c *counters) uint64 { return c.informs.Load() }},
		{name: "server messages are ignored", steps: []step{
			{typ: dhcpv4.MessageTypeOffer, mac: 1},
		}, counter: func(c *counters) uint64 { return c.ignored.Load() }},
		{name: "request without address is dropped", steps: []step{
			{typ: dhcpv4.MessageTypeRequest, mac: 1},
		}, counter: func(c *counters) uint64 { return c.malformed.Load() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(t, testSpec("10.0.0.100", "10.0.0.102"))
			for i, s := range tt.steps {
				mac := hw(s.mac)
				if s.mac < 0 {
					mac = fixedMAC
				}
				typ, ip, to, _ := exchange(t, h, msg(t, s.typ, mac, s.mods...), s.unicast)
				if typ != s.want {
					t.Fatalf("step %d (%s): reply %s, want %s", i, s.typ, typ, s.want)
				}
				if s.wantIP != "" && ip != addr(s.wantIP) {
					t.Fatalf("step %d (%s): yiaddr %s, want %s", i, s.typ, ip, s.wantIP)
				}
				if s.want != dhcpv4.MessageTypeNone && to != s.wantTo {
					t.Fatalf("step %d (%s): sent to %s, want %s", i, s.typ, to, s.wantTo)
				}
				checkInvariants(t, h.pool)
			}
			if tt.counter != nil && tt.counter(&h.stats) != 1 {
				t.Errorf("counter = %d, want 1", tt.counter(&h.stats))
			}
		})
	}
}

func TestReplyOptions(t *testing.T) {
	spec := testSpec("10.0.0.100", "10.0.0.102")
	spec.DNS = []netip.Addr{addr("10.0.0.1"), addr("9.9.9.9")}
	spec.NTP = []netip.Addr{addr("10.0.0.5")}
	spec.Domain = "lan.example"
	spec.Lease = 10 * time.Minute
	h := newTestHandler(t, spec)
	_, _, _, m := exchange(t, h, msg(t, dhcpv4.MessageTypeDiscover, fixedMAC), false)
	checks := map[string]bool{
		"server id":  addrOf(m.ServerIdentifier()) == serverIP,
		"mask":       net.IP(m.SubnetMask()).String() == "255.255.255.0",
		"router":     len(m.Router()) == 1 && m.Router()[0].Equal(net.ParseIP("10.0.0.1")),
		"dns":        len(m.DNS()) == 2 && m.DNS()[1].Equal(net.ParseIP("9.9.9.9")),
		"ntp":        len(m.NTPServers()) == 1,
		"domain":     m.DomainName() == "lan.example",
		"hostname":   m.HostName() == "node-2",
		"lease":      m.IPAddressLeaseTime(0) == 10*time.Minute,
		"renewal":    m.IPAddressRenewalTime(0) == 5*time.Minute,
		"rebinding":  m.IPAddressRebindingTime(0) == 10*time.Minute*7/8,
		"broadcast":  m.BroadcastAddress().Equal(net.ParseIP("10.0.0.255")),
		"xid copied": m.TransactionID != [4]byte{},
	}
	for name, ok := range checks {
		if !ok {
			t.Errorf("%s wrong in %s", name, m.Summary())
		}
	}
	// A pool client gets no hostname option.
	_, _, _, m = exchange(t, h, msg(t, dhcpv4.MessageTypeDiscover, hw(1)), false)
	if m.HostName() != "" {
		t.Errorf("pool client got hostname %q", m.HostName())
	}
}

func TestConflictSkipsAddress(t *testing.T) {
	h := newTestHandler(t, testSpec("10.0.0.100", "10.0.0.102"))
	var asked []netip.Addr
	h.conflict = func(_ context.Context, ip netip.Addr, _ net.HardwareAddr) bool {
		asked = append(asked, ip)
		return ip == addr("10.0.0.100")
	}
	typ, ip, _, _ := exchange(t, h, msg(t, dhcpv4.MessageTypeDiscover, hw(1)), false)
	if typ != dhcpv4.MessageTypeOffer || ip != addr("10.0.0.101") {
		t.Fatalf("got %s %s, want an offer of 10.0.0.101", typ, ip)
	}
	// The client's own address is not checked again on its next DISCOVER.
	asked = nil
	if _, ip, _, _ = exchange(t, h, msg(t, dhcpv4.MessageTypeDiscover, hw(1)), false); ip != addr("10.0.0.101") || len(asked) != 0 {
		t.Fatalf("second discover: %s, checked %v", ip, asked)
	}
	if h.stats.conflicts.Load() != 1 {
		t.Errorf("conflicts = %d", h.stats.conflicts.Load())
	}
}
