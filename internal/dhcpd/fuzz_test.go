package dhcpd

import (
	"context"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzHandle feeds arbitrary bytes to the packet handler, as they would
// arrive on port 67. The handler must never panic; whatever it sends back
// must parse; an address it offers or acknowledges must be one the pool
// allows that client; and the pool's indexes must stay consistent (two
// clients never on one address).
//
// `go test` runs the seeds below (and testdata/fuzz/FuzzHandle, if any) as
// a normal test; `go test -fuzz FuzzHandle ./internal/dhcpd` explores.
func FuzzHandle(f *testing.F) {
	seeds := [][]byte{
		msg(f, dhcpv4.MessageTypeDiscover, hw(1)),
		msg(f, dhcpv4.MessageTypeDiscover, fixedMAC, dhcpv4.WithOption(dhcpv4.OptHostName("node"))),
		msg(f, dhcpv4.MessageTypeRequest, hw(1), srvID("10.0.0.1"), reqIP("10.0.0.100")),
		msg(f, dhcpv4.MessageTypeRequest, hw(2), reqIP("10.0.0.101")),
		msg(f, dhcpv4.MessageTypeRequest, hw(1), ciaddr("10.0.0.100")),
		msg(f, dhcpv4.MessageTypeRequest, hw(3), ciaddr("10.0.0.101"), dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(1))),
		msg(f, dhcpv4.MessageTypeDecline, hw(1), reqIP("10.0.0.100")),
		msg(f, dhcpv4.MessageTypeRelease, hw(1), ciaddr("10.0.0.100")),
		msg(f, dhcpv4.MessageTypeInform, hw(4), ciaddr("10.0.0.50")),
		msg(f, dhcpv4.MessageTypeDiscover, hw(5), dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{1, 2, 3}))),
		msg(f, dhcpv4.MessageTypeDiscover, hw(6), dhcpv4.WithRelay([]byte{10, 9, 9, 9})),
		{},
		{1, 1, 6, 0},
		msg(f, dhcpv4.MessageTypeDiscover, hw(1))[:240],
		msg(f, dhcpv4.MessageTypeDiscover, hw(1))[:241],
	}
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, unicast bool) {
		h := newTestHandler(t, testSpec("10.0.0.100", "10.0.0.103"))
		// Some state for the packet to meet.
		_, _, _ = h.pool.ack("mac:"+hw(1).String(), hw(1).String(), "", addr("10.0.0.100"), 0, t0)
		h.pool.offer("mac:"+hw(2).String(), hw(2).String(), "", addr("10.0.0.101"), t0)
		h.pool.markBad(addr("10.0.0.102"), t0)

		before := h.pool.records()
		r := h.handle(context.Background(), b, unicast)
		checkInvariants(t, h.pool)
		if r == nil {
			return
		}
		m, err := dhcpv4.FromBytes(r.msg.ToBytes())
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			t.Fatalf("a reply to a packet that does not parse: %v", err)
		}
		yi := addrOf(m.YourIPAddr)
		switch m.MessageType() {
		case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck:
			if !yi.IsValid() {
				if req.MessageType() != dhcpv4.MessageTypeInform {
					t.Fatalf("%s without an address to a %s", m.MessageType(), req.MessageType())
				}
				return
			}
			client := clientKey(req)
			rec := h.pool.byIP[yi]
			if rec == nil || rec.Client != client {
				t.Fatalf("%s of %s, but the pool holds %+v for it (before: %+v)", m.MessageType(), yi, rec, before)
			}
			if err := h.pool.allowed(client, req.ClientHWAddr.String(), yi, t0); err != nil {
				t.Fatalf("%s of %s not allowed: %v", m.MessageType(), yi, err)
			}
		case dhcpv4.MessageTypeNak:
		default:
			t.Fatalf("unexpected reply %s", m.MessageType())
		}
	})
}
