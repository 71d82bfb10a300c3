package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/linklog"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

// Kernel is the mirror plus the applier, in one network namespace.
type Kernel struct {
	h       *netlink.Handle // writes
	dump    *mdnetlink.Conn // dumps (a request socket, never subscribed)
	ns      netns.NsHandle  // netnsx.Own: the caller's namespace
	log     *slog.Logger
	m       *mirror
	sysctls map[string]*os.File
	// readBuffer is the subscription's receive buffer (0: the watcher's
	// default). Tests make it small to force overflows.
	readBuffer int
}

// Open opens the netlink sockets in ns (netnsx.IsOwn: the caller's namespace).
// The mirror starts empty and stale: the first Snapshot dumps. Run (the
// event source) must be running for the mirror to stay current; without it
// every Snapshot after the first returns what the last dump saw plus
// uplinkd's own writes (which is what one-shot commands need).
func Open(ns netns.NsHandle, log *slog.Logger) (*Kernel, error) {
	if log == nil {
		log = slog.Default()
	}
	var (
		h   *netlink.Handle
		err error
	)
	if !netnsx.IsOwn(ns) {
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink: %w", err)
	}
	dump, err := mdnetlink.Dial(unix.NETLINK_ROUTE, &mdnetlink.Config{NetNS: netnsx.FD(ns), MessageBufferSize: watcher.ReceiveBuffer})
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open rtnetlink for dumps: %w", err)
	}
	return &Kernel{h: h, dump: dump, ns: ns, log: log, m: newMirror()}, nil
}

// Close releases the sockets and the sysctl files.
func (k *Kernel) Close() error {
	k.h.Close()
	err := k.dump.Close()
	for key := range k.sysctls {
		k.dropSysctl(key)
	}
	return err
}

// Run is the event source: it subscribes to rtnetlink in the kernel's
// namespace (one socket) and sends the watcher's trigger events to out until
// ctx is done. Every notification updates the mirror before its event is
// sent, so a pass triggered by an event sees it; a (re)subscription or an
// overflow marks the mirror stale before the KindResync event goes out.
func (k *Kernel) Run(ctx context.Context, out chan<- watcher.Event) error {
	return watcher.Run(ctx, watcher.Options{NetNS: netnsx.FD(k.ns), Logger: k.log, Sink: k, ReadBuffer: k.readBuffer}, out)
}

// Update applies one notification to the mirror (watcher.Sink) and says
// what it did to it: the echo of a route or rule write Apply made, nothing
// the mirror keeps, or a change.
func (k *Kernel) Update(msg mdnetlink.Message) watcher.Effect {
	k.m.mu.Lock()
	defer k.m.mu.Unlock()
	return k.m.update(msg)
}

// Resync makes the next Snapshot dump the kernel state afresh: after a
// (re)subscription or an overflow (the watcher calls it), and after a
// failed write (Apply calls it; the daemon may too).
func (k *Kernel) Resync() {
	k.m.mu.Lock()
	k.m.stale = true
	k.m.mu.Unlock()
}

// LinkHistory returns the records of the mirror's link history with
// after < Seq <= upTo (see internal/linklog).
func (k *Kernel) LinkHistory(after, upTo uint64) ([]linklog.Record, bool) {
	return k.m.history.Between(after, upTo)
}

// Dumps is how many full dumps the mirror has done: one at start, then one
// per overflow, failed write or newly named table. A hot path that reads
// memory keeps it there.
func (k *Kernel) Dumps() uint64 {
	k.m.mu.Lock()
	defer k.m.mu.Unlock()
	return k.m.dumps
}

// SetTables names the routing tables whose routes the mirror keeps in full,
// besides main (the uplinks' tables). A table not kept before makes the
// next Snapshot dump: its routes were dropped on the way in.
func (k *Kernel) SetTables(tables []int) {
	k.m.mu.Lock()
	defer k.m.mu.Unlock()
	want := map[uint32]bool{unix.RT_TABLE_MAIN: true}
	for _, t := range tables {
		if t > 0 {
			want[uint32(t)] = true
			if !k.m.tables[uint32(t)] {
				k.m.stale = true
			}
		}
	}
	k.m.tables = want
}

// SetIPv6 says whether the mirror keeps IPv6 addresses and foreign IPv6
// routes and rules (some uplink has ipv6 on); uplinkd's own are always
// kept. Turning it on makes the next Snapshot dump: the rest was dropped
// on the way in until now.
func (k *Kernel) SetIPv6(on bool) {
	k.m.mu.Lock()
	defer k.m.mu.Unlock()
	if on && !k.m.v6 {
		k.m.stale = true
	}
	if !on {
		clear(k.m.addrs6)
		k.m.rules = slices.DeleteFunc(k.m.rules, func(r *mrule) bool { return r.v6 && r.proto != policy.Protocol })
		for key, rs := range k.m.routes {
			if key.dst.Addr().Is6() {
				k.m.setSlot(key, slices.DeleteFunc(rs, func(r *mroute) bool { return r.proto != policy.Protocol }))
			}
		}
	}
	k.m.v6 = on
}

// Snapshot returns a copy of the mirror in the shape policy reads. A stale
// mirror is dumped first.
func (k *Kernel) Snapshot() (policy.Observed, error) {
	k.m.mu.Lock()
	defer k.m.mu.Unlock()
	if k.m.stale {
		if err := k.m.load(k.dumpAll); err != nil {
			return policy.Observed{}, err
		}
	}
	return k.m.snapshot(), nil
}

func (k *Kernel) dumpAll(typ mdnetlink.HeaderType, family uint8) ([]mdnetlink.Message, error) {
	var hdr []byte
	switch typ {
	case unix.RTM_GETLINK:
		hdr = make([]byte, unix.SizeofIfInfomsg)
	case unix.RTM_GETADDR:
		hdr = make([]byte, unix.SizeofIfAddrmsg)
	default: // rtmsg and fib_rule_hdr have the same size
		hdr = make([]byte, unix.SizeofRtMsg)
	}
	hdr[0] = family
	return k.dump.Execute(mdnetlink.Message{
		Header: mdnetlink.Header{Type: typ, Flags: mdnetlink.Request | mdnetlink.Dump},
		Data:   hdr,
	})
}

// ReadSysctls reads /proc/sys values in the kernel's namespace; a key whose
// file does not exist (an interface that is gone) is left out.
func (k *Kernel) ReadSysctls(keys []string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	buf := make([]byte, 64)
	for _, key := range keys {
		if name, ok := rpFilterKey(key); ok {
			// From the mirror: no file to open in the namespace for a link
			// that a redial has just re-created.
			k.m.mu.Lock()
			l := k.m.linkByName(name)
			rp := int32(-1)
			if l != nil {
				rp = l.rpFilter
			}
			k.m.mu.Unlock()
			if l == nil {
				continue // the interface is gone
			}
			if rp >= 0 {
				out[key] = strconv.Itoa(int(rp))
				continue
			}
		}
		f, err := k.sysctlFile(key)
		if err != nil {
			continue
		}
		n, err := f.ReadAt(buf, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			// The file belonged to a device that is gone (a redial re-creates
			// ppp1 under the same name): reopen once.
			k.dropSysctl(key)
			if f, err = k.sysctlFile(key); err != nil {
				continue
			}
			if n, err = f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
				continue
			}
		}
		out[key] = strings.TrimSpace(string(buf[:n]))
	}
	return out, nil
}

// sysctlFile returns an open file for a /proc/sys key. Files are kept open:
// a sysctl file stays bound to the namespace it was opened in, so later
// reads and writes need neither a path lookup nor a namespace switch.
func (k *Kernel) sysctlFile(key string) (*os.File, error) {
	if f, ok := k.sysctls[key]; ok {
		return f, nil
	}
	var f *os.File
	err := netnsx.Do(k.ns, func() (err error) {
		f, err = os.OpenFile(filepath.Join("/proc/sys", key), os.O_RDWR, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	if k.sysctls == nil {
		k.sysctls = map[string]*os.File{}
	}
	k.sysctls[key] = f
	return f, nil
}

func (k *Kernel) dropSysctl(key string) {
	if f, ok := k.sysctls[key]; ok {
		f.Close()
		delete(k.sysctls, key)
	}
}

// rpFilterKey tells a link's own rp_filter key (not "all" or "default"),
// which the mirror knows and netlink writes.
func rpFilterKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "net/ipv4/conf/")
	if !ok {
		return "", false
	}
	name, ok := strings.CutSuffix(rest, "/rp_filter")
	if !ok || name == "all" || name == "default" || strings.Contains(name, "/") {
		return "", false
	}
	return name, true
}

// setRPFilter writes a link's rp_filter over rtnetlink (RTM_SETLINK with
// IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF), which sets the same devconf value
// the sysctl file does, without a namespace switch to open the file of a
// link a redial has just re-created. ok is false when the mirror does not
// know the link (the caller falls back to the file).
func (k *Kernel) setRPFilter(name, value string) (ok bool, err error) {
	v, err := strconv.ParseUint(strings.TrimSpace(value), 10, 32)
	if err != nil {
		return false, nil
	}
	k.m.mu.Lock()
	l := k.m.linkByName(name)
	var index int32
	if l != nil {
		index = l.index
	}
	k.m.mu.Unlock()
	if l == nil {
		return false, nil
	}
	ae := mdnetlink.NewAttributeEncoder()
	ae.Nested(unix.IFLA_AF_SPEC, func(spec *mdnetlink.AttributeEncoder) error {
		spec.Nested(unix.AF_INET, func(inet *mdnetlink.AttributeEncoder) error {
			inet.Nested(unix.IFLA_INET_CONF, func(conf *mdnetlink.AttributeEncoder) error {
				conf.Uint32(devconfRPFilter, uint32(v))
				return nil
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return true, err
	}
	hdr := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(hdr[4:], uint32(index))
	_, err = k.dump.Execute(mdnetlink.Message{
		Header: mdnetlink.Header{Type: unix.RTM_SETLINK, Flags: mdnetlink.Request | mdnetlink.Acknowledge},
		Data:   append(hdr, attrs...),
	})
	if errors.Is(err, unix.ENODEV) {
		return true, ErrStale
	}
	if err != nil {
		return true, err
	}
	k.m.mu.Lock()
	if l := k.m.links[index]; l != nil {
		l.rpFilter = int32(v) // write-through; the RTM_NEWLINK that follows says the same
	}
	k.m.mu.Unlock()
	return true, nil
}

func (k *Kernel) writeSysctl(s policy.Sysctl) error {
	if name, ok := rpFilterKey(s.Key); ok {
		if done, err := k.setRPFilter(name, s.Value); done {
			return err
		}
	}
	for try := 0; ; try++ {
		f, err := k.sysctlFile(s.Key)
		if errors.Is(err, fs.ErrNotExist) {
			return ErrStale // the interface went away after the snapshot
		}
		if err != nil {
			return err
		}
		if _, err = f.WriteAt([]byte(s.Value), 0); err == nil || try > 0 {
			return err
		}
		k.dropSysctl(s.Key) // stale file of a re-created device: reopen once
	}
}

// ForgetNeighbor deletes the neighbour entry of ip on dev; none there is fine.
func (k *Kernel) ForgetNeighbor(dev string, ip netip.Addr, obs policy.Observed) error {
	link, ok := obs.Links[dev]
	if !ok || !ip.IsValid() {
		return nil
	}
	err := k.h.NeighDel(&netlink.Neigh{LinkIndex: link.Index, Family: unix.AF_INET, IP: ip.AsSlice()})
	return ignore(err, unix.ENOENT, unix.ENODEV)
}

// Apply carries out the changes in order. It goes on after a failed change
// (one bad route must not keep the others out) and returns all errors joined.
// Races with other actors are not errors: an add that finds the object there
// and a delete that finds it gone both count as done. Each successful write
// updates the mirror at once; a failed one (other than a device that
// vanished or a link not up yet, which the mirror knows of) makes the next
// Snapshot dump.
func (k *Kernel) Apply(changes []policy.Change, obs policy.Observed) error {
	var errs []error
	for _, c := range changes {
		if c.Op != policy.OpSetSysctl {
			continue
		}
		if err := k.writeSysctl(c.Sysctl); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s=%s: %w", c.Sysctl.Key, c.Sysctl.Value, err))
		}
	}
	// The mirror stays locked across each write and its write-through, so
	// no notification newer than the write is applied before it.
	k.m.mu.Lock()
	defer k.m.mu.Unlock()
	failed := false
	for _, c := range changes {
		var err error
		switch c.Op {
		case policy.OpAddRoute:
			nr := NetlinkRoute(c.Route, obs)
			err = k.h.RouteAdd(nr)
			switch {
			case err == nil:
				k.m.addRouteWritten(mrouteOf(nr), false)
			case errors.Is(err, unix.EEXIST):
				// Some route holds the slot (ours or not) that the mirror
				// did not show: read the truth rather than assume ours.
				err, k.m.stale = nil, true
			}
		case policy.OpReplaceRoute:
			nr := NetlinkRoute(c.Route, obs)
			if err = k.h.RouteReplace(nr); err == nil {
				k.m.addRouteWritten(mrouteOf(nr), true)
			}
		case policy.OpAddRule:
			raw := k.h.RuleAdd(NetlinkRule(c.Rule))
			if err = ignore(raw, unix.EEXIST); err == nil {
				// Only an add that happened sends a notification.
				k.m.addRuleWritten(mruleOf(c.Rule), raw == nil)
			}
		case policy.OpDelRule:
			raw := k.h.RuleDel(NetlinkRule(c.Rule))
			if err = ignore(raw, unix.ENOENT); err == nil {
				// Only a delete that happened sends a notification.
				k.m.delRuleWritten(mruleOf(c.Rule), raw == nil)
			}
		case policy.OpDelRoute, policy.OpDelForeignRoute:
			nr := NetlinkRoute(c.Route, obs)
			raw := k.h.RouteDel(nr)
			if err = ignore(raw, unix.ESRCH, unix.ENOENT); err == nil {
				k.m.delRouteWritten(mrouteOf(nr), raw == nil)
			}
		default:
			continue
		}
		if errors.Is(err, unix.ENODEV) {
			err = ErrStale
		}
		if err != nil {
			// A vanished device (ErrStale) and a link not up yet (ENETDOWN,
			// an address that arrives before the link-up) say nothing the
			// mirror does not know; any other refusal may mean it is wrong.
			failed = failed || !errors.Is(err, ErrStale) && !errors.Is(err, unix.ENETDOWN)
			errs = append(errs, fmt.Errorf("%s: %w", c.Command(), err))
		}
	}
	if failed {
		k.m.stale = true
	}
	return errors.Join(errs...)
}

func ignore(err error, codes ...unix.Errno) error {
	for _, c := range codes {
		if errors.Is(err, c) {
			return nil
		}
	}
	return err
}

// NetlinkRoute is the request Apply sends for r (its devices' indexes from
// obs). Exported so the redial benchmark's floor reactor sends byte for byte
// the routes a pass sends.
func NetlinkRoute(r policy.Route, obs policy.Observed) *netlink.Route {
	nr := &netlink.Route{
		Family:   family(r.IPv6()),
		Table:    r.Table,
		Priority: r.Metric,
		Protocol: netlink.RouteProtocol(r.Protocol),
		Type:     unix.RTN_UNICAST,
		Scope:    netlink.SCOPE_UNIVERSE,
	}
	if r.ScopeLink {
		nr.Scope = netlink.SCOPE_LINK
	}
	// Always explicit, also for the default route: netlink wants a
	// destination (0.0.0.0/0) when the route has no gateway.
	nr.Dst = &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())}
	if len(r.Nexthops) == 1 {
		nh := r.Nexthops[0]
		nr.LinkIndex = obs.Links[nh.Dev].Index
		if nh.Gateway.IsValid() {
			nr.Gw = nh.Gateway.AsSlice()
		}
		return nr
	}
	for _, nh := range sortedNexthops(r.Nexthops) {
		info := &netlink.NexthopInfo{LinkIndex: obs.Links[nh.Dev].Index, Hops: max(nh.Weight, 1) - 1}
		if nh.Gateway.IsValid() {
			info.Gw = nh.Gateway.AsSlice()
		}
		nr.MultiPath = append(nr.MultiPath, info)
	}
	return nr
}

// sortedNexthops orders the paths by device and gateway, so the same
// route is always written the same way.
func sortedNexthops(in []policy.Nexthop) []policy.Nexthop {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b policy.Nexthop) int {
		if c := strings.Compare(a.Dev, b.Dev); c != 0 {
			return c
		}
		return a.Gateway.Compare(b.Gateway)
	})
	return out
}

// mrouteOf is the mirror's form of a route uplinkd writes: what the
// kernel's notification of the write will say.
func mrouteOf(nr *netlink.Route) *mroute {
	ones, _ := nr.Dst.Mask.Size()
	dst := ipOf(nr.Dst.IP, nr.Family)
	r := &mroute{
		key:   rkey{table: uint32(nr.Table), dst: netip.PrefixFrom(dst, ones), metric: uint32(nr.Priority)},
		typ:   unix.RTN_UNICAST,
		proto: uint8(nr.Protocol),
		scope: uint8(nr.Scope),
	}
	if len(nr.MultiPath) == 0 {
		r.nhs = []mnexthop{{gw: ipOf(nr.Gw, nr.Family), oif: int32(nr.LinkIndex)}}
		return r
	}
	for _, nh := range nr.MultiPath {
		r.nhs = append(r.nhs, mnexthop{gw: ipOf(nh.Gw, nr.Family), oif: int32(nh.LinkIndex), hops: uint8(nh.Hops)})
	}
	return r
}

// family is the address family of a route or rule.
func family(v6 bool) int {
	if v6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// ipOf is a net.IP of the given family as the mirror keeps it; the zero
// Addr for none.
func ipOf(ip net.IP, fam int) netip.Addr {
	if fam == unix.AF_INET {
		ip = ip.To4()
	}
	a, _ := netip.AddrFromSlice(ip)
	return a
}

func effectiveMask(r policy.Rule) uint32 {
	if r.Mark != 0 && r.Mask == 0 {
		return 0xffffffff
	}
	return r.Mask
}

// NetlinkRule is the request Apply sends for r (see NetlinkRoute).
func NetlinkRule(r policy.Rule) *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family = family(r.IPv6)
	nr.Priority = r.Priority
	nr.Table = r.Table
	nr.Protocol = uint8(r.Protocol)
	if r.SuppressDefault {
		nr.SuppressPrefixlen = 0
	}
	if r.Src.IsValid() {
		nr.Src = &net.IPNet{IP: r.Src.Addr().AsSlice(), Mask: net.CIDRMask(r.Src.Bits(), r.Src.Addr().BitLen())}
	}
	if r.Mark != 0 {
		nr.Mark = r.Mark
		m := effectiveMask(r)
		nr.Mask = &m
	}
	return nr
}

// mruleOf is the mirror's form of a rule uplinkd writes or deletes.
func mruleOf(r policy.Rule) *mrule {
	return &mrule{v6: r.IPv6, prio: uint32(r.Priority), table: uint32(r.Table), src: r.Src, mark: r.Mark,
		mask: effectiveMask(r), proto: uint8(r.Protocol), suppress: r.SuppressDefault, extra: r.Extra}
}
