package remote

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/publish"
)

// TestPublishLab publishes through the lab: the publishers run "on the
// router" (their connections are made in the router namespace and leave
// through the ppp-like uplink), the dyndns2 server (HTTPS, test CA) and a
// real knotd listen on inet hosts. After a redial, each server gets the new
// address exactly once, from the new address, and a real DNS query in the
// inet namespace returns it.
func TestPublishLab(t *testing.T) {
	knotBinary(t) // skips without knotd, before the lab is built
	l := lab.NewT(t, lab.Spec{Uplinks: []lab.UplinkSpec{{Name: "ppp0", Kind: lab.KindPPP}}})
	// What the daemon's routing would do: leave through the uplink.
	route := func() {
		t.Helper()
		if _, err := l.Exec(l.Router, "ip", "route", "replace", "default", "dev", "ppp0"); err != nil {
			t.Fatal(err)
		}
	}
	route()

	rig := newPublishRig(t, l, "ppp0", false)
	m, srv, k := rig.m, rig.srv, rig.k
	expect := func(addr netip.Addr) {
		t.Helper()
		rig.expect(t, addr)
		if a, err := k.query(t, "home.example.test.", dns.TypeA); err != nil || !slices.Equal(a, []string{addr.String() + " 60"}) {
			t.Fatalf("inet resolves %q %v, want %s", a, err, addr)
		}
	}

	first := l.UplinkAddr("ppp0")
	m.Update("ppp0", first)
	expect(first)

	// Redial: the link goes away and comes back with the next address.
	m.Update("ppp0", netip.Addr{})
	res, err := l.Redial("ppp0")
	if err != nil {
		t.Fatal(err)
	}
	route()
	m.Update("ppp0", res.New)
	expect(res.New)
	// No extra publish: every attempt has finished (its event sent) and
	// nothing is scheduled (min_interval and refresh are 0), so none can
	// come without a new address.
	waitAttempts(t, m)
	select {
	case ev := <-rig.events:
		t.Fatalf("extra publish %+v", ev)
	default:
	}
	for _, st := range m.Status() {
		if st.Result != "ok" || !st.NextTry.IsZero() {
			t.Errorf("%s after the publish: %+v, want ok and nothing scheduled", st.Name, st)
		}
	}
	srv.mu.Lock()
	from, reqs := slices.Clone(srv.from), slices.Clone(srv.requests)
	srv.mu.Unlock()
	if len(reqs) != 2 || reqs[0].myip != first.String() || reqs[1].myip != res.New.String() ||
		!slices.Equal(from, []string{first.String(), res.New.String()}) {
		t.Fatalf("dyndns2 server saw %+v from %q", reqs, from)
	}
}

// TestPublishLabIPv6: publishers with family ipv6 publish the uplink's IPv6
// address over IPv6 to real servers on inet IPv6 hosts: an AAAA record in
// knotd (the A record untouched) and a dyndns2 myipv6 (no myip); a new
// address is published once, and UpdateIPv6 alone feeds them.
func TestPublishLabIPv6(t *testing.T) {
	knotBinary(t)
	l := lab.NewT(t, lab.Spec{IPv6: true, Uplinks: []lab.UplinkSpec{{Name: "eth1", Kind: lab.KindEthernet}}})
	// What the daemon's IPv6 routing would do: leave through the uplink.
	if _, err := l.Exec(l.Router, "ip", "-6", "route", "replace", "default", "via", lab.ISPLinkLocal.String(), "dev", "eth1"); err != nil {
		t.Fatal(err)
	}
	rig := newPublishRig(t, l, "eth1", true)
	m, srv, k := rig.m, rig.srv, rig.k
	expect := func(addr netip.Addr) {
		t.Helper()
		rig.expect(t, addr)
		if a, err := k.query(t, "home.example.test.", dns.TypeAAAA); err != nil || !slices.Equal(a, []string{addr.String() + " 60"}) {
			t.Fatalf("inet resolves AAAA %q %v, want %s", a, err, addr)
		}
		if a, err := k.query(t, "home.example.test.", dns.TypeA); err != nil || !slices.Equal(a, []string{"192.0.2.99 3600"}) {
			t.Fatalf("the A record changed: %q %v", a, err)
		}
	}
	// The IPv4 address is not what these publish.
	m.Update("eth1", l.UplinkAddr("eth1"))
	first := l.UplinkAddr6("eth1")
	m.UpdateIPv6("eth1", first)
	expect(first)

	// Renumbered: a new global address takes over.
	n := lab.CustomerPrefix6(l.UplinkIndex("eth1")).Addr().As16()
	n[15] = 0x99
	renum := netip.AddrFrom16(n)
	if _, err := l.Exec(l.Router, "ip", "addr", "add", renum.String()+"/64", "dev", "eth1", "nodad"); err != nil {
		t.Fatal(err)
	}
	m.UpdateIPv6("eth1", renum)
	expect(renum)
	waitAttempts(t, m)
	select {
	case ev := <-rig.events:
		t.Fatalf("extra publish %+v", ev)
	default:
	}
	reqs := srv.got()
	if len(reqs) != 2 || reqs[0].myipv6 != first.String() || reqs[1].myipv6 != renum.String() || reqs[0].myip != "" || reqs[1].myip != "" {
		t.Fatalf("dyndns2 server saw %+v", reqs)
	}
}

// publishRig is knotd (on the first inet host) and an HTTPS dyndns2 server
// (on the second), of the family asked for, in a lab's inet namespace, and
// a manager with one publisher of each for uplink, whose connections are
// made in the router namespace.
type publishRig struct {
	k      *knot
	srv    *dynServer
	m      *publish.Manager
	events chan publish.Event
}

func newPublishRig(t *testing.T, l *lab.Lab, uplink string, ipv6 bool) *publishRig {
	t.Helper()
	bin := knotBinary(t)
	hosts := lab.InetHosts
	if ipv6 {
		hosts = lab.InetHosts6
	}
	k, cf := knotConfig(t, hosts[0].String(), 53)
	kcmd, err := l.Start(l.Inet, bin, "-c", cf)
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { l.Wait(kcmd); close(exited) }()
	k.dial = func(network, address string) (net.Conn, error) {
		return l.DialIn(l.Inet, network, "", address, time.Second)
	}
	k.waitReady(t, exited, func() string { return lab.Output(kcmd) })
	ln, err := l.ListenIn(l.Inet, "tcp", net.JoinHostPort(hosts[1].String(), "443"))
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t)
	dir := t.TempDir()
	srv := newDynServerOn(t, ca, ln)
	dyn, dnsSpec := dynSpec(t, srv, dir, ca.file(t, dir, "ca.pem")), k.spec()
	for _, s := range []*publish.Spec{&dyn, &dnsSpec} {
		s.Uplink, s.Iface, s.Settle, s.MinInterval, s.Refresh, s.IPv6 = uplink, uplink, 300*time.Millisecond, 0, 0, ipv6
	}
	r := &publishRig{k: k, srv: srv, events: make(chan publish.Event, 10)}
	r.m, err = publish.NewManager([]publish.Spec{dyn, dnsSpec}, publish.Options{StateDir: t.TempDir(), Log: quiet(),
		OnResult: func(ev publish.Event) { r.events <- ev },
		// In-process, to dial from the router namespace: the helper
		// path is TestDynDNS2Manager's and TestRFC2136KnotManager's.
		NewPublisher: New,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			return l.DialIn(l.Router, network, "", address, 5*time.Second)
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.m.Close)
	return r
}

// expect waits for both publishers' successful publish of addr (with the
// family of addr in their hook event).
func (r *publishRig) expect(t *testing.T, addr netip.Addr) {
	t.Helper()
	got := map[string]publish.Event{}
	for len(got) < 2 {
		select {
		case ev := <-r.events:
			got[ev.Publisher] = ev
		case <-time.After(20 * time.Second):
			t.Fatalf("publish of %s: got only %+v", addr, got)
		}
	}
	family := "ipv4"
	if addr.Is6() {
		family = "ipv6"
	}
	for name, ev := range got {
		if ev.Result != "ok" || ev.NewIP != addr || ev.HookEvent().Family != family {
			t.Fatalf("%s: %+v", name, ev)
		}
	}
}
