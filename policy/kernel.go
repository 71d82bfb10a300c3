package policy

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel is the seam between policy and the kernel: a snapshot of what is
// there and the application of a diff. The netlink implementation is
// NetlinkKernel; logic tests use a fake.
type Kernel interface {
	Snapshot() (Observed, error)
	ReadSysctls(keys []string) (map[string]string, error)
	Apply(changes []Change, obs Observed) error
	// ForgetNeighbor deletes the neighbour entry of ip on dev, so a gateway
	// that comes back is resolved afresh instead of through a stale entry.
	ForgetNeighbor(dev string, ip netip.Addr, obs Observed) error
	Close() error
}

// NetlinkKernel talks rtnetlink over one long-lived handle, in one network
// namespace (the daemon's own, or a lab namespace in tests).
type NetlinkKernel struct {
	h       *netlink.Handle
	ns      netns.NsHandle // -1: the caller's namespace
	sysctls map[string]*os.File
}

// OpenKernel opens a netlink handle in ns; ns < 0 means the current namespace.
func OpenKernel(ns netns.NsHandle) (*NetlinkKernel, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if ns >= 0 {
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink: %w", err)
	}
	return &NetlinkKernel{h: h, ns: ns}, nil
}

// Close releases the netlink handle.
func (k *NetlinkKernel) Close() error {
	k.h.Close()
	for key := range k.sysctls {
		k.dropSysctl(key)
	}
	return nil
}

// Snapshot reads links, IPv4 addresses, routes of all tables and rules.
func (k *NetlinkKernel) Snapshot() (Observed, error) {
	obs := Observed{Links: map[string]Link{}, Addrs: map[string][]Addr{}}
	links, err := k.h.LinkList()
	if err != nil {
		return obs, fmt.Errorf("list links: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		obs.Links[a.Name] = Link{
			Index:        a.Index,
			Name:         a.Name,
			Up:           a.Flags&net.FlagUp != 0,
			Carrier:      a.RawFlags&unix.IFF_LOWER_UP != 0,
			PointToPoint: a.RawFlags&unix.IFF_POINTOPOINT != 0,
		}
	}

	addrs, err := k.h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return obs, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		name := names[a.LinkIndex]
		p, ok := prefixOf(a.IPNet)
		if name == "" || !ok {
			continue
		}
		ad := Addr{Prefix: p}
		if a.Peer != nil {
			ad.Peer, _ = netip.AddrFromSlice(a.Peer.IP.To4())
		}
		if a.Flags&unix.IFA_F_SECONDARY != 0 {
			obs.Addrs[name] = append(obs.Addrs[name], ad)
		} else {
			obs.Addrs[name] = append([]Addr{ad}, obs.Addrs[name]...)
		}
	}

	routes, err := k.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return obs, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		obs.Routes = append(obs.Routes, routeFromNetlink(r, names))
	}

	rules, err := k.h.RuleList(unix.AF_INET)
	if err != nil {
		return obs, fmt.Errorf("list rules: %w", err)
	}
	for _, r := range rules {
		obs.Rules = append(obs.Rules, ruleFromNetlink(r))
	}
	return obs, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

func routeFromNetlink(r netlink.Route, names map[int]string) Route {
	out := Route{Table: r.Table, Metric: r.Priority, Protocol: int(r.Protocol),
		ScopeLink: r.Scope == netlink.SCOPE_LINK, Dst: defaultRoute}
	if p, ok := prefixOf(r.Dst); ok {
		out.Dst = p
	}
	if len(r.MultiPath) > 0 {
		for _, nh := range r.MultiPath {
			gw, _ := netip.AddrFromSlice(nh.Gw.To4())
			out.Nexthops = append(out.Nexthops, Nexthop{Gateway: gw, Dev: names[nh.LinkIndex], Weight: nh.Hops + 1})
		}
		return out
	}
	gw, _ := netip.AddrFromSlice(r.Gw.To4())
	out.Nexthops = []Nexthop{{Gateway: gw, Dev: names[r.LinkIndex], Weight: 1}}
	return out
}

func ruleFromNetlink(r netlink.Rule) Rule {
	out := Rule{Priority: r.Priority, Table: r.Table, Mark: r.Mark, Protocol: int(r.Protocol)}
	if r.Mask != nil {
		out.Mask = *r.Mask
	}
	if p, ok := prefixOf(r.Src); ok {
		out.Src = p
	}
	var extra []string
	if r.Dst != nil {
		extra = append(extra, "to "+r.Dst.String())
	}
	if r.IifName != "" {
		extra = append(extra, "iif "+r.IifName)
	}
	if r.OifName != "" {
		extra = append(extra, "oif "+r.OifName)
	}
	if r.UIDRange != nil {
		extra = append(extra, fmt.Sprintf("uidrange %d-%d", r.UIDRange.Start, r.UIDRange.End))
	}
	if r.Dport != nil || r.Sport != nil || r.IPProto != 0 {
		extra = append(extra, "l4")
	}
	switch {
	case r.SuppressPrefixlen == 0:
		out.SuppressDefault = true
	case r.SuppressPrefixlen > 0:
		extra = append(extra, fmt.Sprintf("suppress_prefixlength %d", r.SuppressPrefixlen))
	}
	if r.Tos != 0 || r.Invert || r.Goto > 0 || r.SuppressIfgroup >= 0 ||
		(r.Type != 0 && r.Type != unix.FR_ACT_TO_TBL) {
		extra = append(extra, "other")
	}
	out.Extra = strings.Join(extra, ",")
	return out
}

// ReadSysctls reads /proc/sys values in the kernel's namespace; a key whose
// file does not exist (an interface that is gone) is left out.
func (k *NetlinkKernel) ReadSysctls(keys []string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	buf := make([]byte, 64)
	for _, key := range keys {
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
func (k *NetlinkKernel) sysctlFile(key string) (*os.File, error) {
	if f, ok := k.sysctls[key]; ok {
		return f, nil
	}
	var f *os.File
	err := k.inNS(func() (err error) {
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

func (k *NetlinkKernel) dropSysctl(key string) {
	if f, ok := k.sysctls[key]; ok {
		f.Close()
		delete(k.sysctls, key)
	}
}

func (k *NetlinkKernel) writeSysctl(s Sysctl) error {
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

// inNS runs fn on a thread inside the kernel's namespace: /proc/sys/net
// resolves against the namespace of the thread that opens the file.
func (k *NetlinkKernel) inNS(fn func() error) error {
	if k.ns < 0 {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(k.ns); err != nil {
		return fmt.Errorf("enter netns: %w", err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// A thread stuck in the wrong namespace must never run other
			// goroutines: keep it locked so the runtime discards it.
			runtime.LockOSThread()
		}
	}()
	return fn()
}

// ForgetNeighbor deletes the neighbour entry of ip on dev; none there is fine.
func (k *NetlinkKernel) ForgetNeighbor(dev string, ip netip.Addr, obs Observed) error {
	link, ok := obs.Links[dev]
	if !ok || !ip.IsValid() {
		return nil
	}
	err := k.h.NeighDel(&netlink.Neigh{LinkIndex: link.Index, Family: unix.AF_INET, IP: ip.AsSlice()})
	return ignore(err, unix.ENOENT, unix.ENODEV)
}

// ErrStale marks an apply that raced with the kernel: a device in the
// snapshot vanished before the change reached it. Not a failure: the event
// that removed the device triggers the next pass.
var ErrStale = errors.New("kernel changed during the pass")

// Apply carries out the changes in order. It goes on after a failed change
// (one bad route must not keep the others out) and returns all errors joined.
// Races with other actors are not errors: an add that finds the object there
// and a delete that finds it gone both count as done.
func (k *NetlinkKernel) Apply(changes []Change, obs Observed) error {
	var errs []error
	for _, c := range changes {
		if c.Op != OpSetSysctl {
			continue
		}
		if err := k.writeSysctl(c.Sysctl); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s=%s: %w", c.Sysctl.Key, c.Sysctl.Value, err))
		}
	}
	for _, c := range changes {
		var err error
		switch c.Op {
		case OpAddRoute:
			err = ignore(k.h.RouteAdd(toNetlinkRoute(c.Route, obs)), unix.EEXIST)
		case OpReplaceRoute:
			err = k.h.RouteReplace(toNetlinkRoute(c.Route, obs))
		case OpAddRule:
			err = ignore(k.h.RuleAdd(toNetlinkRule(c.Rule)), unix.EEXIST)
		case OpDelRule:
			err = ignore(k.h.RuleDel(toNetlinkRule(c.Rule)), unix.ENOENT)
		case OpDelRoute, OpDelForeignRoute:
			err = ignore(k.h.RouteDel(toNetlinkRoute(c.Route, obs)), unix.ESRCH, unix.ENOENT)
		default:
			continue
		}
		if errors.Is(err, unix.ENODEV) {
			err = ErrStale
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Command(), err))
		}
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

func toNetlinkRoute(r Route, obs Observed) *netlink.Route {
	nr := &netlink.Route{
		Family:   unix.AF_INET,
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
	nr.Dst = &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)}
	if len(r.Nexthops) == 1 {
		nh := r.Nexthops[0]
		nr.LinkIndex = obs.Links[nh.Dev].Index
		if nh.Gateway.IsValid() {
			nr.Gw = nh.Gateway.AsSlice()
		}
		return nr
	}
	for _, nh := range normNexthops(r.Nexthops) {
		info := &netlink.NexthopInfo{LinkIndex: obs.Links[nh.Dev].Index, Hops: nh.Weight - 1}
		if nh.Gateway.IsValid() {
			info.Gw = nh.Gateway.AsSlice()
		}
		nr.MultiPath = append(nr.MultiPath, info)
	}
	return nr
}

func toNetlinkRule(r Rule) *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family = unix.AF_INET
	nr.Priority = r.Priority
	nr.Table = r.Table
	nr.Protocol = uint8(r.Protocol)
	if r.SuppressDefault {
		nr.SuppressPrefixlen = 0
	}
	if r.Src.IsValid() {
		nr.Src = &net.IPNet{IP: r.Src.Addr().AsSlice(), Mask: net.CIDRMask(r.Src.Bits(), 32)}
	}
	if r.Mark != 0 {
		nr.Mark = r.Mark
		m := r.effectiveMask()
		nr.Mask = &m
	}
	return nr
}

// FlushChanges is the diff that removes everything owned in obs: rules
// first, so no rule points at a table while it empties.
func FlushChanges(obs Observed) []Change {
	var out []Change
	for _, r := range obs.Rules {
		if r.Protocol == Protocol {
			out = append(out, Change{Op: OpDelRule, Rule: r})
		}
	}
	for _, r := range obs.Routes {
		if r.Protocol == Protocol {
			out = append(out, Change{Op: OpDelRoute, Route: r})
		}
	}
	return out
}
