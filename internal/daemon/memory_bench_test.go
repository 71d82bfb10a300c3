package daemon

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/lab"
)

var shippedBinary builtBinary

// releaseBinary is uplinkd built as the package ships it (Makefile
// release-build: static, no symbol table or DWARF, trimmed paths): the
// binary whose memory a user sees.
func releaseBinary(b *testing.B) string {
	return shippedBinary.get(b, []string{"CGO_ENABLED=0"}, "-trimpath", "-ldflags", "-s -w")
}

// BenchmarkRedialStormRSS runs the release binary in the lab, warms it up
// with 200 redials of ppp1, then redials it 1000 times more, each time
// waiting for the from-rule of the new address (an RTM_NEWRULE event, no
// polling), and reports VmRSS before and after the storm and its growth.
//
// Run: go test -run '^$' -bench RedialStormRSS -benchtime 1x ./internal/daemon
func BenchmarkRedialStormRSS(b *testing.B) {
	const warmUp, storm = 200, 1000
	l := benchLab(b, 2)
	rules := subscribeRules(b, l)
	cmd, err := l.Start(l.Router, releaseBinary(b), "run", "--config", writeBenchConfig(b, 2, "nftables"))
	if err != nil {
		b.Fatal(err)
	}
	waitRuleFrom(b, rules, l.UplinkAddr("ppp1"))
	pid := uplinkdPID(b, cmd)
	redial := func() {
		b.Helper()
		if _, err := l.DropLink("ppp1"); err != nil {
			b.Fatal(err)
		}
		res, err := l.Dial("ppp1")
		if err != nil {
			b.Fatal(err)
		}
		waitRuleFrom(b, rules, res.New)
	}
	for range b.N {
		for range warmUp {
			redial()
		}
		time.Sleep(2 * time.Second) // settle: the last pass's garbage, a GC
		before := statusKB(b, pid, "VmRSS")
		for range storm {
			redial()
		}
		time.Sleep(2 * time.Second)
		after := statusKB(b, pid, "VmRSS")
		b.ReportMetric(float64(before)/1024, "RSS-before-MB")
		b.ReportMetric(float64(after)/1024, "RSS-after-MB")
		b.ReportMetric(float64(after-before)/1024, "RSS-growth-MB")
		b.ReportMetric(float64(statusKB(b, pid, "VmHWM"))/1024, "RSS-peak-MB")
	}
}

// subscribeRules listens to the lab router's IPv4 rule notifications.
func subscribeRules(b *testing.B, l *lab.Lab) *mdnetlink.Conn {
	return subscribeRouter(b, l, unix.NETLINK_ROUTE, unix.RTMGRP_IPV4_RULE)
}

// subscribeRouter opens a netlink socket of family in the lab router's
// namespace, joined to groups (a bitmask), closed when the benchmark ends.
func subscribeRouter(b *testing.B, l *lab.Lab, family int, groups uint32) *mdnetlink.Conn {
	b.Helper()
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	c, err := mdnetlink.Dial(family, &mdnetlink.Config{Groups: groups, NetNS: int(ns)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// waitRuleFrom reads rule notifications until a new rule from addr/32 is
// added (the pass that makes the uplink's new address usable).
func waitRuleFrom(b *testing.B, c *mdnetlink.Conn, addr netip.Addr) {
	b.Helper()
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		b.Fatal(err)
	}
	for {
		msgs, err := c.Receive()
		if err != nil {
			b.Fatalf("waiting for the rule from %s: %v", addr, err)
		}
		for _, m := range msgs {
			if m.Header.Type == unix.RTM_NEWRULE && ruleSrc(m.Data) == addr {
				return
			}
		}
	}
}

// ruleSrc is the FRA_SRC of an IPv4 rule message (fib_rule_hdr, then
// attributes).
func ruleSrc(data []byte) netip.Addr {
	const sizeofFibRuleHdr = 12
	if len(data) < sizeofFibRuleHdr || data[0] != unix.AF_INET {
		return netip.Addr{}
	}
	ad, err := mdnetlink.NewAttributeDecoder(data[sizeofFibRuleHdr:])
	if err != nil {
		return netip.Addr{}
	}
	ad.ByteOrder = binary.NativeEndian
	for ad.Next() {
		if ad.Type() == unix.FRA_SRC && len(ad.Bytes()) == 4 {
			return netip.AddrFrom4([4]byte(ad.Bytes()))
		}
	}
	return netip.Addr{}
}
