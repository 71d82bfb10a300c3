package kernel

import (
	"net"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	mdnetlink "github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// BenchmarkDecode compares the mirror's decoder (mdlayher's
// AttributeDecoder walked once, only the fields the mirror keeps) with
// jsimonetti/rtnetlink's message types on the same real kernel messages: a
// dump of a lab router's links (with stats, AF_SPEC, link info) and of its
// routes. Per op: every message of the dump decoded once.
//
// Run: go test -run '^$' -bench Decode -benchmem ./internal/kernel
func BenchmarkDecode(b *testing.B) {
	l := lab.NewT(b, lab.Spec{Uplinks: []lab.UplinkSpec{{Name: "ppp0", Kind: lab.KindPPP}, {Name: "eth1", Kind: lab.KindEthernet}}})
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	// Some uplinkd-like routes: a default route in a table above 255 and
	// host routes, so that RTA_TABLE and the common attributes are there.
	h, err := vnl.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	eth1, err := h.LinkByName("eth1")
	if err != nil {
		b.Fatal(err)
	}
	for i := range 8 {
		r := vnl.Route{LinkIndex: eth1.Attrs().Index, Table: 300 + i, Protocol: 99,
			Dst: &net.IPNet{IP: net.IPv4(10, 99, 0, byte(i)), Mask: net.CIDRMask(32, 32)}}
		if err := h.RouteAdd(&r); err != nil {
			b.Fatal(err)
		}
	}
	c, err := mdnetlink.Dial(unix.NETLINK_ROUTE, &mdnetlink.Config{NetNS: netnsx.FD(ns)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	dump := func(typ mdnetlink.HeaderType, body []byte) [][]byte {
		msgs, err := c.Execute(mdnetlink.Message{Header: mdnetlink.Header{Type: typ, Flags: mdnetlink.Request | mdnetlink.Dump}, Data: body})
		if err != nil {
			b.Fatal(err)
		}
		out := make([][]byte, len(msgs))
		for i, m := range msgs {
			out[i] = m.Data
		}
		return out
	}
	links := dump(unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg))
	routes := dump(unix.RTM_GETROUTE, []byte{unix.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	b.Logf("%d links, %d routes", len(links), len(routes))

	cases := []struct {
		name   string
		msgs   [][]byte
		decode func([]byte) error
	}{
		{"links/uplinkd", links, func(m []byte) error { _, _, err := decodeLink(m); return err }},
		{"links/rtnetlink", links, func(m []byte) error { var lm rtnetlink.LinkMessage; return lm.UnmarshalBinary(m) }},
		{"routes/uplinkd", routes, func(m []byte) error {
			rh, err := decodeRouteHeader(m)
			if err != nil {
				return err
			}
			_, err = decodeRoute(m, rh, routeTable(m, rh))
			return err
		}},
		{"routes/rtnetlink", routes, func(m []byte) error { var rm rtnetlink.RouteMessage; return rm.UnmarshalBinary(m) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, m := range c.msgs {
					if err := c.decode(m); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
