package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// floorReactor is the least any program can do when an uplink redials: on
// the new address's netlink event, replace the uplink's table route, rewrite
// its SNAT rule and delete its conntrack entries by mark — over sockets
// opened once, without reading any state back (no dumps, no checks). It is
// the floor uplinkd's redial latency is compared with.
type floorReactor struct {
	iface   string
	table   int
	mark    uint32
	backend string
	ns      netns.NsHandle

	events *mdnetlink.Conn // subscribed to links and IPv4 addresses
	h      *netlink.Handle
	ct     *mdnetlink.Conn // NETLINK_NETFILTER for the conntrack delete
	nft    *nftables.Conn  // lasting (nftables backend)
	chain  *nftables.Chain
	ipt    string // iptables-*-restore (iptables backends)
}

type floorSample struct {
	event, done time.Time
	err         error
}

func newFloorReactor(b *testing.B, l *lab.Lab, backend, iface string, table int, mark uint32) *floorReactor {
	b.Helper()
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		b.Fatal(err)
	}
	f := &floorReactor{iface: iface, table: table, mark: mark, backend: backend, ns: ns}
	b.Cleanup(f.close)
	fd := int(ns)
	if f.events, err = mdnetlink.Dial(unix.NETLINK_ROUTE, &mdnetlink.Config{Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR, NetNS: fd}); err != nil {
		b.Fatal(err)
	}
	if f.h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE); err != nil {
		b.Fatal(err)
	}
	if f.ct, err = mdnetlink.Dial(unix.NETLINK_NETFILTER, &mdnetlink.Config{NetNS: fd}); err != nil {
		b.Fatal(err)
	}
	switch backend {
	case "nftables":
		if f.nft, err = nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(fd)); err != nil {
			b.Fatal(err)
		}
		t := f.nft.AddTable(&nftables.Table{Name: "floor", Family: nftables.TableFamilyIPv4})
		f.chain = f.nft.AddChain(&nftables.Chain{Name: "post", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
		if err := f.nft.Flush(); err != nil {
			b.Fatal(err)
		}
	default:
		f.ipt = "iptables-" + map[string]string{"iptables-legacy": "legacy", "iptables-nft": "nft"}[backend] + "-restore"
		if err := f.restore("*nat\n:FLOOR - [0:0]\n-A POSTROUTING -j FLOOR\nCOMMIT\n"); err != nil {
			b.Fatal(err)
		}
	}
	return f
}

func (f *floorReactor) close() {
	for _, c := range []interface{ Close() error }{f.events, f.ct} {
		if c != nil {
			_ = c.Close()
		}
	}
	if f.h != nil {
		f.h.Close()
	}
	if f.nft != nil {
		_ = f.nft.CloseLasting()
	}
	f.ns.Close()
}

func (f *floorReactor) restore(rules string) error {
	return netnsx.Do(f.ns, func() error {
		cmd := exec.Command(f.ipt, "--noflush")
		cmd.Stdin = bytes.NewBufferString(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", f.ipt, err, out)
		}
		return nil
	})
}

// run reads events until ctx is done and reacts to every new IPv4 address
// on the uplink's interface.
func (f *floorReactor) run(ctx context.Context, out chan<- floorSample) {
	stop := context.AfterFunc(ctx, func() { _ = f.events.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	index := int32(-1)
	for {
		msgs, err := f.events.Receive()
		now := time.Now()
		if err != nil {
			if ctx.Err() == nil {
				out <- floorSample{err: err}
			}
			return
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.RTM_NEWLINK:
				if len(m.Data) >= unix.SizeofIfInfomsg && linkName(m.Data) == f.iface {
					index = int32(binary.NativeEndian.Uint32(m.Data[4:]))
				}
			case unix.RTM_NEWADDR:
				if len(m.Data) < unix.SizeofIfAddrmsg || int32(binary.NativeEndian.Uint32(m.Data[4:])) != index {
					continue
				}
				addr, ok := addrLocal(m.Data)
				if !ok {
					continue
				}
				err := f.react(index, addr)
				out <- floorSample{event: now, done: time.Now(), err: err}
			}
		}
	}
}

func (f *floorReactor) react(index int32, addr netip.Addr) error {
	_, dst, _ := net.ParseCIDR("0.0.0.0/0")
	if err := f.h.RouteReplace(&netlink.Route{Family: unix.AF_INET, Table: f.table, Dst: dst, LinkIndex: int(index),
		Scope: netlink.SCOPE_LINK, Protocol: 157}); err != nil {
		return fmt.Errorf("route replace: %w", err)
	}
	if f.nft != nil {
		f.nft.FlushChain(f.chain)
		f.nft.AddRule(&nftables.Rule{Table: f.chain.Table, Chain: f.chain, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(f.iface)},
			&expr.Immediate{Register: 1, Data: addr.AsSlice()},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		}})
		if err := f.nft.Flush(); err != nil {
			return fmt.Errorf("nft: %w", err)
		}
	} else if err := f.restore(fmt.Sprintf("*nat\n-F FLOOR\n-A FLOOR -o %s -j SNAT --to-source %s\nCOMMIT\n", f.iface, addr)); err != nil {
		return err
	}
	// IPCTNL_MSG_CT_DELETE without a tuple, filtered by CTA_MARK/CTA_MARK_MASK:
	// the kernel deletes the matching entries itself.
	attrs, err := mdnetlink.MarshalAttributes([]mdnetlink.Attribute{
		{Type: 8, Data: binary.BigEndian.AppendUint32(nil, f.mark)},                   // CTA_MARK
		{Type: 21, Data: binary.BigEndian.AppendUint32(nil, firewall.UplinkMarkMask)}, // CTA_MARK_MASK
	})
	if err != nil {
		return err
	}
	_, err = f.ct.Execute(mdnetlink.Message{
		Header: mdnetlink.Header{Type: mdnetlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | 2), Flags: mdnetlink.Request | mdnetlink.Acknowledge},
		Data:   append([]byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("conntrack delete: %w", err)
	}
	return nil
}

func linkName(b []byte) string {
	ad, err := mdnetlink.NewAttributeDecoder(b[unix.SizeofIfInfomsg:])
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.IFLA_IFNAME {
			return ad.String()
		}
	}
	return ""
}

func addrLocal(b []byte) (netip.Addr, bool) {
	if b[0] != unix.AF_INET {
		return netip.Addr{}, false
	}
	ad, err := mdnetlink.NewAttributeDecoder(b[unix.SizeofIfAddrmsg:])
	if err != nil {
		return netip.Addr{}, false
	}
	for ad.Next() {
		if ad.Type() == unix.IFA_LOCAL && len(ad.Bytes()) == 4 {
			return netip.AddrFrom4([4]byte(ad.Bytes())), true
		}
	}
	return netip.Addr{}, false
}

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

// floorRedials runs n redials of iface against the floor reactor and returns
// the event→applied and address-added→applied latencies.
func floorRedials(b *testing.B, l *lab.Lab, backend, iface string, table int, mark uint32, n int) (event, dial []time.Duration) {
	b.Helper()
	f := newFloorReactor(b, l, backend, iface, table, mark)
	ctx, cancel := context.WithCancel(context.Background())
	samples := make(chan floorSample, 16)
	done := make(chan struct{})
	go func() { defer close(done); f.run(ctx, samples) }()
	defer func() { cancel(); <-done }()
	for range n {
		if _, err := l.DropLink(iface); err != nil {
			b.Fatal(err)
		}
		res, err := l.Dial(iface)
		if err != nil {
			b.Fatal(err)
		}
		select {
		case s := <-samples:
			if s.err != nil {
				b.Fatalf("floor reactor: %v", s.err)
			}
			event = append(event, s.done.Sub(s.event))
			dial = append(dial, s.done.Sub(res.AddrAdded))
		case <-time.After(5 * time.Second):
			b.Fatal("floor reactor did not react")
		}
	}
	return event, dial
}

// reportFloor reports the floor and uplinkd side by side, in ms, and the
// ratio of the p99s.
func reportFloor(b *testing.B, floor, uplinkd []time.Duration) {
	q := func(ds []time.Duration, p float64) float64 {
		s := append([]time.Duration(nil), ds...)
		slices.Sort(s)
		return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1000
	}
	if len(floor) == 0 || len(uplinkd) == 0 {
		return
	}
	b.ReportMetric(q(floor, 0.5), "floor_p50_ms")
	b.ReportMetric(q(floor, 0.99), "floor_p99_ms")
	b.ReportMetric(q(uplinkd, 0.5), "p50_ms")
	b.ReportMetric(q(uplinkd, 0.99), "p99_ms")
	b.ReportMetric(q(uplinkd, 0.99)/q(floor, 0.99), "ratio_p99")
}
