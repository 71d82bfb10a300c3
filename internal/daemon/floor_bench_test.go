package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/internal/kernel"
	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

// floorReactor is the least any program can do to issue the kernel writes
// uplinkd issues when an uplink redials: the same routing requests (rules,
// table routes, the main default; built by the same kernel.NetlinkRule and
// kernel.NetlinkRoute), the same nftables transaction (the chains of table
// ip uplinkd a pass rewrites, flushed and refilled with the same rules) or,
// on the iptables backends, one iptables-*-restore of an SNAT rule, and the
// conntrack deletes by mark the passes sent (SyncResult.ConntrackDeletes),
// routing and firewall side by side as a pass runs them. The writes are recorded from uplinkd's own passes in the same
// run (floorWrites) with the addresses swapped for each redial, and sent over
// sockets opened once, with no state read back, no diffing and no logging.
// It is the floor uplinkd's redial latency is compared with.
type floorReactor struct {
	iface   string
	mark    uint32
	backend string
	ns      netns.NsHandle
	w       floorWrites

	events *mdnetlink.Conn // subscribed to links and IPv4 addresses
	h      *netlink.Handle
	rt     *mdnetlink.Conn // RTM_SETLINK for an rp_filter change
	ct     *mdnetlink.Conn // NETLINK_NETFILTER for the conntrack delete
	nft    *nftables.Conn  // lasting (nftables backend)
	ipt    string          // iptables-*-restore (iptables backends)

	links    policy.Observed // the indexes of the devices the routes name
	cur      netip.Addr      // the uplink's address, before the drop
	index    int32           // the uplink's link
	linkDone bool            // the link passes' writes were sent for index
}

// floorWrites is what uplinkd wrote for one redial, recorded from its passes
// in the same run (passRecorder.redial), for the addresses oldAddr (before the drop)
// and newAddr (after the dial), in three groups: the passes from the link's
// delete to the one that took the uplink out (drop), those between that and
// the address's pass (link: the new device), and the address's pass (dial,
// the one measured).
type floorWrites struct {
	oldAddr, newAddr netip.Addr
	drop, link, dial passWrites
}

// passWrites is the writes of a group of passes: the routing changes in
// order and, for nftables, the chains of table ip uplinkd they rewrote with
// the rules they left there.
type passWrites struct {
	changes   []policy.Change
	chains    map[string][]*nftables.Rule
	conntrack int // conntrack deletes by the uplink's mark
}

type floorSample struct {
	dropped     bool // the drop's writes were sent (not measured)
	event, done time.Time
	err         error
}

func newFloorReactor(b *testing.B, l *lab.Lab, backend, iface string, mark uint32, w floorWrites) *floorReactor {
	b.Helper()
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		b.Fatal(err)
	}
	f := &floorReactor{iface: iface, mark: mark, backend: backend, ns: ns, w: w, cur: l.UplinkAddr(iface),
		links: policy.Observed{Links: map[string]policy.Link{}}}
	b.Cleanup(f.close)
	fd := int(ns)
	if f.events, err = mdnetlink.Dial(unix.NETLINK_ROUTE, &mdnetlink.Config{Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR, NetNS: fd}); err != nil {
		b.Fatal(err)
	}
	if f.h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE); err != nil {
		b.Fatal(err)
	}
	if f.rt, err = mdnetlink.Dial(unix.NETLINK_ROUTE, &mdnetlink.Config{NetNS: fd}); err != nil {
		b.Fatal(err)
	}
	if f.ct, err = mdnetlink.Dial(unix.NETLINK_NETFILTER, &mdnetlink.Config{NetNS: fd}); err != nil {
		b.Fatal(err)
	}
	links, err := f.h.LinkList()
	if err != nil {
		b.Fatal(err)
	}
	for _, link := range links {
		a := link.Attrs()
		f.links.Links[a.Name] = policy.Link{Index: a.Index, Name: a.Name}
		if a.Name == iface {
			f.index, f.linkDone = int32(a.Index), true
		}
	}
	switch backend {
	case "nftables":
		if f.nft, err = nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(fd)); err != nil {
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
	for _, c := range []interface{ Close() error }{f.events, f.rt, f.ct} {
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

// run reads events until ctx is done: it sends the drop's writes when the
// uplink's link goes, the link passes' writes when it comes back, and the
// dial's (measured) on its new IPv4 address.
func (f *floorReactor) run(ctx context.Context, out chan<- floorSample) {
	stop := context.AfterFunc(ctx, func() { _ = f.events.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	// A reader of its own takes each event off the socket as it comes and
	// stamps it then, as uplinkd's watcher does (an event's trigger is when
	// it was read): an address event that comes while the link's writes are
	// being sent is timed from its arrival, not from when those writes are
	// done, so both sides count the wait behind the link's writes.
	type read struct {
		msgs []mdnetlink.Message
		at   time.Time
		err  error
	}
	reads := make(chan read, 64)
	go func() {
		defer close(reads)
		for {
			msgs, err := f.events.Receive()
			reads <- read{msgs, time.Now(), err}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		_ = f.events.SetReadDeadline(time.Unix(1, 0))
		for range reads { // until the reader is gone
		}
	}()
	for r := range reads {
		msgs, now, err := r.msgs, r.at, r.err
		if err != nil {
			if ctx.Err() == nil {
				out <- floorSample{err: err}
			}
			return
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.RTM_DELLINK:
				if len(m.Data) >= unix.SizeofIfInfomsg && int32(binary.NativeEndian.Uint32(m.Data[4:])) == f.index {
					f.index, f.linkDone = -1, false
					err := f.send(f.w.drop, f.cur, netip.Addr{})
					out <- floorSample{dropped: true, err: err}
				}
			case unix.RTM_NEWLINK:
				if len(m.Data) < unix.SizeofIfInfomsg || linkName(m.Data) != f.iface {
					continue
				}
				index := int32(binary.NativeEndian.Uint32(m.Data[4:]))
				f.links.Links[f.iface] = policy.Link{Index: int(index), Name: f.iface}
				// Once it is up (a route via a device that is down is
				// refused), as uplinkd's passes for the new link ran.
				up := binary.NativeEndian.Uint32(m.Data[8:])&unix.IFF_UP != 0
				if up && (index != f.index || !f.linkDone) {
					f.index, f.linkDone = index, true
					if err := f.send(f.w.link, f.cur, netip.Addr{}); err != nil {
						out <- floorSample{err: err}
					}
				}
			case unix.RTM_NEWADDR:
				if len(m.Data) < unix.SizeofIfAddrmsg || int32(binary.NativeEndian.Uint32(m.Data[4:])) != f.index {
					continue
				}
				addr, ok := addrLocal(m.Data)
				if !ok {
					continue
				}
				err := f.send(f.w.dial, f.cur, addr)
				f.cur = addr
				out <- floorSample{event: now, done: time.Now(), err: err}
			}
		}
	}
}

// send issues one pass's writes with the recorded addresses swapped for old
// and new: sysctls, then the routing changes in order beside the firewall
// (as a pass's applyBoth runs them), then as many conntrack deletes as
// uplinkd's passes sent.
func (f *floorReactor) send(w passWrites, old, new netip.Addr) error {
	swap := func(a netip.Addr) netip.Addr {
		switch {
		case a == f.w.oldAddr && old.IsValid():
			return old
		case a == f.w.newAddr && new.IsValid():
			return new
		}
		return a
	}
	for _, c := range w.changes {
		if c.Op == policy.OpSetSysctl {
			if err := f.setRPFilter(c.Sysctl); err != nil {
				return err
			}
		}
	}
	fwDone := make(chan error, 1)
	switch {
	case f.nft != nil && len(w.chains) > 0:
		go func() { fwDone <- f.sendNFT(w.chains, swap) }()
	case f.nft == nil && new.IsValid():
		go func() {
			fwDone <- f.restore(fmt.Sprintf("*nat\n-F FLOOR\n-A FLOOR -o %s -j SNAT --to-source %s\nCOMMIT\n", f.iface, new))
		}()
	default:
		fwDone <- nil
	}
	var errs []error
	for _, c := range w.changes {
		if err := f.route(c, swap); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Command(), err))
		}
	}
	if err := <-fwDone; err != nil {
		errs = append(errs, err)
	}
	for range w.conntrack {
		if err := f.deleteConntrack(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// route issues one routing change as kernel.Apply does, with the same
// tolerance for races (an add that finds its object, a delete that does not,
// a device that already went).
func (f *floorReactor) route(c policy.Change, swap func(netip.Addr) netip.Addr) error {
	rule := c.Rule
	if rule.Src.IsValid() {
		rule.Src = netip.PrefixFrom(swap(rule.Src.Addr()), rule.Src.Bits())
	}
	var err error
	switch c.Op {
	case policy.OpAddRoute:
		err = ignore(f.h.RouteAdd(kernel.NetlinkRoute(c.Route, f.links)), unix.EEXIST)
	case policy.OpReplaceRoute:
		err = f.h.RouteReplace(kernel.NetlinkRoute(c.Route, f.links))
	case policy.OpAddRule:
		err = ignore(f.h.RuleAdd(kernel.NetlinkRule(rule)), unix.EEXIST)
	case policy.OpDelRule:
		err = ignore(f.h.RuleDel(kernel.NetlinkRule(rule)), unix.ENOENT)
	case policy.OpDelRoute, policy.OpDelForeignRoute:
		err = ignore(f.h.RouteDel(kernel.NetlinkRoute(c.Route, f.links)), unix.ESRCH, unix.ENOENT)
	}
	return ignore(err, unix.ENODEV)
}

func ignore(err error, codes ...unix.Errno) error {
	for _, c := range codes {
		if errors.Is(err, c) {
			return nil
		}
	}
	return err
}

// sendNFT flushes and refills the recorded chains of table ip uplinkd in one
// transaction, as a pass's incremental sync does.
func (f *floorReactor) sendNFT(chains map[string][]*nftables.Rule, swap func(netip.Addr) netip.Addr) error {
	t := &nftables.Table{Name: firewall.TableName, Family: nftables.TableFamilyIPv4}
	for name, rules := range chains {
		c := &nftables.Chain{Name: name, Table: t}
		f.nft.FlushChain(c)
		for _, r := range rules {
			f.nft.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: swapExprs(r.Exprs, swap), UserData: r.UserData})
		}
	}
	if err := f.nft.Flush(); err != nil {
		return fmt.Errorf("nft: %w", err)
	}
	return nil
}

// swapExprs copies a rule's expressions with every IPv4 address in a
// comparison or an immediate swapped.
func swapExprs(in []expr.Any, swap func(netip.Addr) netip.Addr) []expr.Any {
	out := make([]expr.Any, len(in))
	for i, e := range in {
		out[i] = e
		switch e := e.(type) {
		case *expr.Cmp:
			if a, ok := netip.AddrFromSlice(e.Data); ok && a.Is4() {
				c := *e
				c.Data = swap(a).AsSlice()
				out[i] = &c
			}
		case *expr.Immediate:
			if a, ok := netip.AddrFromSlice(e.Data); ok && a.Is4() {
				c := *e
				c.Data = swap(a).AsSlice()
				out[i] = &c
			}
		}
	}
	return out
}

// setRPFilter writes an interface's rp_filter over netlink, as uplinkd does.
func (f *floorReactor) setRPFilter(s policy.Sysctl) error {
	dev, ok := strings.CutPrefix(s.Key, "net/ipv4/conf/")
	dev, ok2 := strings.CutSuffix(dev, "/rp_filter")
	v, err := strconv.ParseUint(s.Value, 10, 32)
	link, ok3 := f.links.Links[dev]
	if !ok || !ok2 || !ok3 || err != nil {
		return fmt.Errorf("floor: a pass wrote sysctl %s=%s, which the floor does not issue", s.Key, s.Value)
	}
	ae := mdnetlink.NewAttributeEncoder()
	ae.Nested(unix.IFLA_AF_SPEC, func(spec *mdnetlink.AttributeEncoder) error {
		spec.Nested(unix.AF_INET, func(inet *mdnetlink.AttributeEncoder) error {
			inet.Nested(unix.IFLA_INET_CONF, func(conf *mdnetlink.AttributeEncoder) error {
				conf.Uint32(8, uint32(v)) // IPV4_DEVCONF_RP_FILTER
				return nil
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	hdr := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(hdr[4:], uint32(link.Index))
	_, err = f.rt.Execute(mdnetlink.Message{
		Header: mdnetlink.Header{Type: unix.RTM_SETLINK, Flags: mdnetlink.Request | mdnetlink.Acknowledge},
		Data:   append(hdr, attrs...),
	})
	return ignore(err, unix.ENODEV)
}

// deleteConntrack sends IPCTNL_MSG_CT_DELETE without a tuple, filtered by
// CTA_MARK/CTA_MARK_MASK: the kernel deletes the matching entries itself.
func (f *floorReactor) deleteConntrack() error {
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

// floorRedials runs n redials of iface against the floor reactor, which
// sends the writes w recorded from uplinkd's passes, and returns the
// event→applied and address-added→applied latencies of the dials.
func floorRedials(b *testing.B, l *lab.Lab, backend, iface string, mark uint32, w floorWrites, n int) (event, dial []time.Duration) {
	b.Helper()
	f := newFloorReactor(b, l, backend, iface, mark, w)
	ctx, cancel := context.WithCancel(context.Background())
	samples := make(chan floorSample, 16)
	done := make(chan struct{})
	go func() { defer close(done); f.run(ctx, samples) }()
	defer func() { cancel(); <-done }()
	next := func(dropped bool) floorSample {
		select {
		case s := <-samples:
			if s.err != nil {
				b.Fatalf("floor reactor: %v", s.err)
			}
			if s.dropped != dropped {
				b.Fatalf("floor reactor: got a sample with dropped=%v, want %v", s.dropped, dropped)
			}
			return s
		case <-time.After(5 * time.Second):
			b.Fatal("floor reactor did not react")
		}
		panic("unreachable")
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs, allocBytes := ms.Mallocs, ms.TotalAlloc
	defer func() {
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.Mallocs-mallocs)/float64(n), "floor_allocs/redial")
		b.ReportMetric(float64(ms.TotalAlloc-allocBytes)/float64(n), "floor_B/redial")
	}()
	for range n {
		if _, err := l.DropLink(iface); err != nil {
			b.Fatal(err)
		}
		next(true) // as uplinkd's run waits for the drop pass
		res, err := l.Dial(iface)
		if err != nil {
			b.Fatal(err)
		}
		s := next(false)
		event = append(event, s.done.Sub(s.event))
		dial = append(dial, s.done.Sub(res.AddrAdded))
	}
	return event, dial
}

// listenLikeUplinkd joins, in the lab router's namespace, the multicast
// groups uplinkd's watchers join (watcher.Groups, and nftables'
// notifications as firewall.WatchNFTables does) and reads and drops what
// comes until stop is called. During a floor run it makes the kernel do
// for each floor write what it does for each of uplinkd's own: build a
// notification for a subscribed socket and wake its reader. It decodes
// nothing: the figure it gives is what being subscribed costs the writes,
// not uplinkd's handling of the echoes.
func listenLikeUplinkd(b *testing.B, l *lab.Lab) (stop func()) {
	b.Helper()
	rt := subscribeRouter(b, l, unix.NETLINK_ROUTE, watcher.Groups)
	nf := subscribeRouter(b, l, unix.NETLINK_NETFILTER, 0)
	if err := nf.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	drain := func(c *mdnetlink.Conn) {
		defer wg.Done()
		for {
			// An overrun (ENOBUFS) is no reason to stop listening.
			if _, err := c.Receive(); err != nil && !errors.Is(err, unix.ENOBUFS) {
				return // closed
			}
		}
	}
	wg.Add(2)
	go drain(rt)
	go drain(nf)
	return func() {
		// Closing ends the reads; the cleanup's second Close is harmless.
		rt.Close()
		nf.Close()
		wg.Wait()
	}
}

// routerNFT is a lasting connection to nftables in the lab router's
// namespace (opened before the namespace handle closes; the caller closes
// it) and uplinkd's table there.
func routerNFT(l *lab.Lab) (*nftables.Conn, *nftables.Table, error) {
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		return nil, nil, err
	}
	defer ns.Close()
	c, err := nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return nil, nil, err
	}
	return c, &nftables.Table{Name: firewall.TableName, Family: nftables.TableFamilyIPv4}, nil
}

// nftState is every chain of table ip uplinkd with its rules, and its
// named sets with their elements as text, as the kernel holds them.
func nftState(l *lab.Lab) (chains map[string][]*nftables.Rule, sets string, err error) {
	c, t, err := routerNFT(l)
	if err != nil {
		return nil, "", err
	}
	defer c.CloseLasting()
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, "", err
	}
	chains = map[string][]*nftables.Rule{}
	for _, ch := range all {
		if ch.Table.Name != t.Name {
			continue
		}
		if chains[ch.Name], err = c.GetRules(t, ch); err != nil {
			return nil, "", err
		}
	}
	named, err := c.GetSets(t)
	if err != nil {
		return nil, "", err
	}
	var sb strings.Builder
	for _, set := range named {
		if set.Anonymous || set.Dynamic {
			continue
		}
		elems, err := c.GetSetElements(set)
		if err != nil {
			return nil, "", err
		}
		fmt.Fprintf(&sb, "%s %v\n", set.Name, elems)
	}
	return chains, sb.String(), nil
}

// passRecorder keeps, while on, each pass's result and (nftables) the state
// of table ip uplinkd as the pass left it: the loop calls pass (its OnSync)
// right after the apply and before its next pass, so a snapshot taken there
// is exactly what that pass wrote.
type passRecorder struct {
	lab    *lab.Lab
	nft    bool
	on     atomic.Bool
	mu     sync.Mutex
	passes []recordedPass
	err    error
}

type recordedPass struct {
	res    SyncResult
	chains map[string][]*nftables.Rule
	sets   string
}

func (r *passRecorder) pass(s SyncResult) {
	if !r.on.Load() {
		return
	}
	rp := recordedPass{res: s}
	var err error
	if r.nft {
		rp.chains, rp.sets, err = nftState(r.lab)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.passes = append(r.passes, rp)
	r.err = errors.Join(r.err, err)
}

// redial drops and dials ppp1 once more with the recorder on, and returns
// what uplinkd's passes wrote in the floor's three groups.
func (r *passRecorder) redial(b *testing.B, syncs <-chan SyncResult) floorWrites {
	b.Helper()
	w := floorWrites{oldAddr: r.lab.UplinkAddr("ppp1")}
	var start recordedPass
	if r.nft {
		var err error
		if start.chains, start.sets, err = nftState(r.lab); err != nil {
			b.Fatal(err)
		}
	}
	r.on.Store(true)
	if _, err := r.lab.DropLink("ppp1"); err != nil {
		b.Fatal(err)
	}
	waitFor(b, syncs, isDropPass)
	res, err := r.lab.Dial("ppp1")
	if err != nil {
		b.Fatal(err)
	}
	waitFor(b, syncs, isDialPass(res.New))
	r.on.Store(false)
	w.newAddr = res.New
	r.mu.Lock()
	passes, rerr := r.passes, r.err
	r.mu.Unlock()
	if rerr != nil {
		b.Fatalf("floor: recording the passes' nftables state: %v", rerr)
	}
	dropAt := slices.IndexFunc(passes, func(p recordedPass) bool { return isDropPass(p.res) })
	dialAt := slices.IndexFunc(passes, func(p recordedPass) bool { return isDialPass(res.New)(p.res) })
	if dropAt < 0 || dialAt <= dropAt {
		b.Fatalf("floor: recorded %d passes, drop pass at %d, dial pass at %d", len(passes), dropAt, dialAt)
	}
	group := func(before recordedPass, ps []recordedPass) passWrites {
		var g passWrites
		for _, p := range ps {
			g.changes = append(g.changes, p.res.Changes...)
			g.conntrack += p.res.ConntrackDeletes
		}
		if r.nft && len(ps) > 0 {
			after := ps[len(ps)-1]
			if after.sets != before.sets {
				b.Fatal("floor: a pass changed a set; the floor replays chains only")
			}
			g.chains = rewrittenChains(b, before.chains, after.chains)
		}
		return g
	}
	linkEnd := passes[dropAt]
	if dialAt-1 > dropAt {
		linkEnd = passes[dialAt-1]
	}
	w.drop = group(start, passes[:dropAt+1])
	w.link = group(passes[dropAt], passes[dropAt+1:dialAt])
	w.dial = group(linkEnd, passes[dialAt:dialAt+1])
	for _, g := range []struct {
		name string
		w    passWrites
	}{{"drop", w.drop}, {"link", w.link}, {"dial", w.dial}} {
		var cmds []string
		for _, c := range g.w.changes {
			cmds = append(cmds, c.Command())
		}
		b.Logf("floor writes for %s: %q; nftables chains rewritten: %v; conntrack deletes: %d", g.name, cmds, slices.Sorted(maps.Keys(g.w.chains)), g.w.conntrack)
	}
	return w
}

// rewrittenChains is the chains of after whose rules differ from before's
// (counters aside): those a pass between the two flushed and refilled. A
// lookup in an anonymous set cannot be replayed and stops the benchmark.
func rewrittenChains(b *testing.B, before, after map[string][]*nftables.Rule) map[string][]*nftables.Rule {
	b.Helper()
	norm := func(rules []*nftables.Rule) [][]expr.Any {
		var out [][]expr.Any
		for _, r := range rules {
			var ex []expr.Any
			for _, e := range r.Exprs {
				switch e := e.(type) {
				case *expr.Counter:
					ex = append(ex, &expr.Counter{})
					continue
				case *expr.Lookup:
					if strings.HasPrefix(e.SetName, "__set") {
						b.Fatalf("floor: a rewritten rule looks up an anonymous set (%s)", e.SetName)
					}
				}
				ex = append(ex, e)
			}
			out = append(out, append(ex, &expr.Immediate{Data: r.UserData}))
		}
		return out
	}
	if len(before) != len(after) {
		b.Fatalf("floor: a pass added or deleted chains (%d → %d); the floor replays rule changes only", len(before), len(after))
	}
	out := map[string][]*nftables.Rule{}
	for name, rules := range after {
		if _, ok := before[name]; !ok {
			b.Fatalf("floor: chain %s appeared; the floor replays rule changes only", name)
		}
		if !reflect.DeepEqual(norm(before[name]), norm(rules)) {
			out[name] = rules
		}
	}
	return out
}

// reportFloor reports the floor and uplinkd side by side, in ms, and the
// ratio of the p99s; watched is the floor's run with listenLikeUplinkd
// subscribed (floor_watched_*, ratio_p99_watched).
func reportFloor(b *testing.B, floor, watched, uplinkd []time.Duration) {
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
	if len(watched) > 0 {
		b.ReportMetric(q(watched, 0.5), "floor_watched_p50_ms")
		b.ReportMetric(q(watched, 0.99), "floor_watched_p99_ms")
		b.ReportMetric(q(uplinkd, 0.99)/q(watched, 0.99), "ratio_p99_watched")
	}
}
