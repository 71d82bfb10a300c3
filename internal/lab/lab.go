// Package lab builds throw-away network topologies in Linux network
// namespaces so that uplinkd can be exercised against a real kernel without
// touching the host's own network namespace (docs/design.md, Testing).
//
// Every lab is a set of uniquely named namespaces:
//
//	router  where uplinkd runs: lan0 10.0.0.1/24 plus one interface per uplink
//	lan     a LAN client: eth0 10.0.0.2/24, default via 10.0.0.1
//	ispN    the far end of uplink N: cust0 (customer side), wan0 198.18.N.1/24
//	inet    "the internet": hosts on lo (192.0.2.1, 192.0.2.2, 198.51.100.1,
//	        203.0.113.1) and ispN 198.18.N.2/24 towards every ISP
//	sideN   only with AddSideNet6 (ipv6.go): an IPv6 network behind the
//	        router that no ISP routes
//
// Uplink N gets the customer subnet 100.64.N.0/24; the ISP end is 100.64.N.1
// and the router side starts at 100.64.N.10 and moves to .11, .12, ... on
// every redial. A "ppp" uplink is a veth pair addressed the way pppd does it
// (local/32 peer remote/32, no ARP); an "ethernet" uplink is a plain /24 veth.
//
// NewPair (ha.go) builds two such routers on one LAN bridge with a shared
// inet, for two-gateway (VRRP) tests.
//
// Namespace names are "ul-<pid>-<n>-<role>". The PID lets SweepStale remove
// labs whose creating process died without cleaning up (a test binary killed
// by a timeout, for instance). No interface is ever created in the host
// namespace: veth pairs are created by netlink sockets that live inside the
// lab namespaces, with the peer placed directly into its target namespace.
//
// The lab is IPv4-only: IPv6 is disabled in every lab namespace so that
// link-local addresses and router solicitations do not add noise to the
// netlink event streams that uplinkd (and its tests) observe, and because a
// real ppp link without IPv6CP has no IPv6 address either.
package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Uplink kinds understood by the lab.
const (
	KindPPP      = "ppp"
	KindEthernet = "ethernet"
)

// Fixed names of the topology. They are package-level rather than Lab fields
// because they are the same in every lab.
const (
	// LANIface is the router's LAN interface.
	LANIface = "lan0"
	// ClientIface is the LAN client's interface in the lan namespace.
	ClientIface = "eth0"
	// CustIface is the ISP-side end of every uplink (in the isp namespace).
	CustIface = "cust0"
	// WANIface is the ISP's link towards the inet namespace.
	WANIface = "wan0"
	// MaxUplinks is the largest number of uplinks the address plan allows
	// (100.64.N.0/24 and 198.18.N.0/24 with N a single octet).
	MaxUplinks = 256
)

var (
	// LANRouterAddr is the router's address on the LAN (the client's gateway).
	LANRouterAddr = netip.MustParseAddr("10.0.0.1")
	// LANClientAddr is the LAN client's address.
	LANClientAddr = netip.MustParseAddr("10.0.0.2")
	// LANPrefix is the LAN subnet.
	LANPrefix = netip.MustParsePrefix("10.0.0.0/24")
	// InetHosts are the addresses that answer in the inet namespace (on lo).
	InetHosts = []netip.Addr{
		netip.MustParseAddr("192.0.2.1"),
		netip.MustParseAddr("192.0.2.2"),
		netip.MustParseAddr("198.51.100.1"),
		netip.MustParseAddr("203.0.113.1"),
	}
)

// UplinkSpec describes one uplink of the router.
type UplinkSpec struct {
	Name string // router interface, e.g. "ppp0"
	Kind string // KindPPP | KindEthernet
}

// Spec describes the topology to build.
type Spec struct {
	Uplinks []UplinkSpec
	// IPv6 keeps IPv6 on in every namespace and gives every uplink a
	// global IPv6 address too (ipv6.go); off, the lab is IPv4 only.
	IPv6 bool
}

// Lab is one built topology. Its exported fields are namespace names that
// can be passed to `ip netns exec` or to the methods below.
type Lab struct {
	Router, LAN, Inet string
	ISPs              []string // same order as Spec.Uplinks

	// KillGrace is how long Close waits after SIGTERM before it SIGKILLs the
	// processes started with Start. Tests can shorten it; the lab runner
	// wants the daemon to have time to clean up.
	KillGrace time.Duration

	id     string
	spec   Spec
	router *nsState
	lan    *nsState
	inet   *nsState
	isps   []*nsState

	mu       sync.Mutex // guards everything below and serialises link changes
	closed   bool
	closeErr error
	created  []string // namespaces created so far, for cleanup
	handles  []*nsState
	farIndex int // last ifindex handed out by nextFarIndex
	sides    int // side networks added (AddSideNet6)
	uplinks  map[string]*uplink
	procs    map[*exec.Cmd]*proc

	// member is set on the labs of a Pair (ha.go): a router lab shares the
	// pair's LAN and inet namespaces, the pair's own lab holds only those.
	member *pairMember
}

// nsState is a lab namespace with the netlink handle opened inside it. The
// handle is kept for the lab's life so link events cost one syscall, and the
// namespace fd is kept so veth peers can be moved into it by fd.
type nsState struct {
	name string
	fd   netns.NsHandle
	h    *netlink.Handle
}

var (
	runCounter atomic.Uint64
	sweepOnce  sync.Once

	registryMu sync.Mutex
	registry   = map[*Lab]struct{}{}
)

// Prefix is the common prefix of every lab namespace name.
const Prefix = "ul-"

// New builds the topology described by spec. On error, everything created so
// far is removed again.
func New(spec Spec) (*Lab, error) { return newLab(spec, nil) }

// newLab is New for a lone lab (m nil) or one lab of a Pair.
func newLab(spec Spec, m *pairMember) (*Lab, error) {
	if err := validate(spec); err != nil {
		return nil, err
	}
	// A process that builds labs also clears what dead processes left behind,
	// so a crashed test run does not pile up namespaces forever.
	sweepOnce.Do(func() { _, _ = SweepStale() })

	id := fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), runCounter.Add(1))
	l := &Lab{
		Router:    id + "-router",
		LAN:       id + "-lan",
		Inet:      id + "-inet",
		KillGrace: 2 * time.Second,
		id:        id,
		spec:      spec,
		uplinks:   map[string]*uplink{},
		procs:     map[*exec.Cmd]*proc{},
		member:    m,
	}
	if m != nil {
		m.adopt(l)
	}
	for i := range spec.Uplinks {
		l.ISPs = append(l.ISPs, id+"-isp"+strconv.Itoa(i))
	}
	registryMu.Lock()
	registry[l] = struct{}{}
	registryMu.Unlock()

	// The lock is held for the whole build so that a concurrent Close (from
	// CloseAll in a signal handler) waits instead of closing netlink handles
	// under our feet; it then removes the finished lab.
	l.mu.Lock()
	err := l.build()
	l.mu.Unlock()
	if err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup after failed build: %w", cerr))
		}
		return nil, fmt.Errorf("lab: build %s: %w", id, err)
	}
	return l, nil
}

// NewT is New for tests: the lab is closed by t.Cleanup, and the test is
// skipped when the environment cannot build labs (not root, no iproute2, no
// permission to create network namespaces). A build failure in a capable
// environment fails the test.
func NewT(t testing.TB, spec Spec) *Lab {
	t.Helper()
	if reason := Unsupported(); reason != "" {
		t.Skip("lab: " + reason)
	}
	l, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return l
}

var (
	unsupportedOnce   sync.Once
	unsupportedReason string
)

// Unsupported returns why labs cannot be built here, or "" if they can.
func Unsupported() string {
	unsupportedOnce.Do(func() {
		if os.Geteuid() != 0 {
			unsupportedReason = "needs root"
			return
		}
		if _, err := exec.LookPath("ip"); err != nil {
			unsupportedReason = "iproute2 `ip` not found"
			return
		}
		if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
			unsupportedReason = fmt.Sprintf("`ip netns list` failed: %v: %s", err, out)
			return
		}
		if err := probeUnshare(); err != nil {
			unsupportedReason = fmt.Sprintf("cannot create network namespaces: %v", err)
		}
	})
	return unsupportedReason
}

func validate(spec Spec) error {
	if len(spec.Uplinks) > MaxUplinks {
		return fmt.Errorf("lab: %d uplinks, at most %d supported", len(spec.Uplinks), MaxUplinks)
	}
	seen := map[string]bool{LANIface: true, "lo": true}
	for i, u := range spec.Uplinks {
		if u.Name == "" || len(u.Name) >= unix.IFNAMSIZ {
			return fmt.Errorf("lab: uplink %d: bad interface name %q", i, u.Name)
		}
		if seen[u.Name] {
			return fmt.Errorf("lab: uplink %d: interface name %q used twice or reserved", i, u.Name)
		}
		seen[u.Name] = true
		if u.Kind != KindPPP && u.Kind != KindEthernet {
			return fmt.Errorf("lab: uplink %s: unknown kind %q (want %q or %q)", u.Name, u.Kind, KindPPP, KindEthernet)
		}
	}
	return nil
}

// build creates namespaces and links; l.mu is held. It records each namespace
// as soon as it exists so that Close can remove a half-built lab.
func (l *Lab) build() error {
	if l.member != nil {
		return l.buildMember()
	}
	var err error
	if l.router, err = l.addNS(l.Router); err != nil {
		return err
	}
	if l.lan, err = l.addNS(l.LAN); err != nil {
		return err
	}
	if l.inet, err = l.addNS(l.Inet); err != nil {
		return err
	}
	return l.buildRest()
}

// buildRest is build after the router, LAN and inet namespaces exist.
func (l *Lab) buildRest() error {
	for _, name := range l.ISPs {
		s, err := l.addNS(name)
		if err != nil {
			return err
		}
		l.isps = append(l.isps, s)
	}

	// ISPs and the internet forward between their links; strict reverse
	// path filtering there would only produce confusing drops. The router is
	// left at kernel defaults: configuring it is uplinkd's job.
	for _, s := range append([]*nsState{l.inet}, l.isps...) {
		if err := sysctlIn(s.name, map[string]string{
			"net.ipv4.ip_forward":             "1",
			"net.ipv4.conf.all.rp_filter":     "0",
			"net.ipv4.conf.default.rp_filter": "0",
		}); err != nil {
			return err
		}
	}

	if l.member != nil {
		if err := l.buildPairLAN(); err != nil {
			return fmt.Errorf("lan: %w", err)
		}
	} else {
		if err := l.buildLAN(); err != nil {
			return fmt.Errorf("lan: %w", err)
		}
		if err := l.buildInet(); err != nil {
			return fmt.Errorf("inet: %w", err)
		}
		if l.spec.IPv6 {
			if err := l.buildInet6(); err != nil {
				return fmt.Errorf("inet: %w", err)
			}
		}
	}
	for i, us := range l.spec.Uplinks {
		u := &uplink{spec: us, idx: l.uplinkBase() + i, isp: l.isps[i]}
		if err := l.buildISP(u); err != nil {
			return fmt.Errorf("isp %d (%s): %w", i, us.Name, err)
		}
		l.uplinks[us.Name] = u
		if _, err := l.dialLocked(u); err != nil {
			return fmt.Errorf("uplink %s: %w", us.Name, err)
		}
	}
	return nil
}

// addNS creates a namespace, opens a netlink handle inside it, brings lo up
// and disables IPv6 (see the package comment). l.mu is held.
func (l *Lab) addNS(name string) (*nsState, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	l.created = append(l.created, name)
	fd, err := netns.GetFromPath(nsPath(name))
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(fd, unix.NETLINK_ROUTE)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	s := &nsState{name: name, fd: fd, h: h}
	// Registered before anything can fail so Close releases fd and handle.
	l.handles = append(l.handles, s)
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("%s: lo: %w", name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("%s: lo up: %w", name, err)
	}
	if l.spec.IPv6 {
		if err := sysctlIn(name, ipv6Sysctls); err != nil {
			return nil, fmt.Errorf("%s: IPv6: %w", name, err)
		}
		return s, nil
	}
	// Missing IPv6 support in the kernel is not an error: the lab is IPv4.
	_ = sysctlIn(name, map[string]string{
		"net.ipv6.conf.all.disable_ipv6":     "1",
		"net.ipv6.conf.default.disable_ipv6": "1",
	})
	return s, nil
}

func (l *Lab) buildLAN() error {
	mac := net.HardwareAddr{0x02, 0x75, 0x6c, 0x0a, 0x00, 0x01}
	peerMAC := net.HardwareAddr{0x02, 0x75, 0x6c, 0x0a, 0x00, 0x02}
	v, peer, err := addVeth(l.router, LANIface, mac, l.lan, ClientIface, peerMAC, l.nextFarIndex())
	if err != nil {
		return err
	}
	if err := addrUp(l.router.h, v, prefixOf(LANRouterAddr, 24), netip.Addr{}); err != nil {
		return err
	}
	if err := addrUp(l.lan.h, peer, prefixOf(LANClientAddr, 24), netip.Addr{}); err != nil {
		return err
	}
	return addRoute(l.lan.h, &netlink.Route{
		LinkIndex: peer.Attrs().Index,
		Gw:        LANRouterAddr.AsSlice(),
	})
}

func (l *Lab) buildInet() error {
	lo, err := l.inet.h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	for _, a := range InetHosts {
		if err := l.inet.h.AddrAdd(lo, &netlink.Addr{IPNet: ipnet(prefixOf(a, 32))}); err != nil {
			return fmt.Errorf("add %s to lo: %w", a, err)
		}
	}
	return nil
}

// buildISP connects ISP i to the inet namespace and routes the customer
// subnet back through it. The ISP does not NAT: customer addresses are
// routable "public" addresses, like a real ISP hands out.
func (l *Lab) buildISP(u *uplink) error {
	i := byte(u.idx)
	inetName := "isp" + strconv.Itoa(u.idx)
	inetMAC := net.HardwareAddr{0x02, 0x75, 0x6c, 0xc6, i, 0x02}
	ispMAC := net.HardwareAddr{0x02, 0x75, 0x6c, 0xc6, i, 0x01}
	iv, wan, err := addVeth(l.inet, inetName, inetMAC, u.isp, WANIface, ispMAC, l.nextFarIndex())
	if err != nil {
		return err
	}
	ispWAN := netip.AddrFrom4([4]byte{198, 18, i, 1})
	inetSide := netip.AddrFrom4([4]byte{198, 18, i, 2})
	if err := addrUp(u.isp.h, wan, prefixOf(ispWAN, 24), netip.Addr{}); err != nil {
		return err
	}
	if err := addrUp(l.inet.h, iv, prefixOf(inetSide, 24), netip.Addr{}); err != nil {
		return err
	}
	if err := addRoute(u.isp.h, &netlink.Route{LinkIndex: wan.Attrs().Index, Gw: inetSide.AsSlice()}); err != nil {
		return err
	}
	if err := addRoute(l.inet.h, &netlink.Route{
		LinkIndex: iv.Attrs().Index,
		Dst:       ipnet(CustomerPrefix(u.idx)),
		Gw:        ispWAN.AsSlice(),
	}); err != nil {
		return err
	}
	if l.spec.IPv6 {
		return l.buildISP6(u, wan, iv)
	}
	return nil
}

// farIndexBase is where explicit ifindexes of far veth ends start (see
// addVeth); kernel-chosen indexes in a lab namespace never get near it.
const farIndexBase = 1 << 20

// nextFarIndex returns a fresh ifindex for a far veth end; l.mu is held.
// Indexes are never reused so that a redial cannot collide with a device the
// kernel is still tearing down.
func (l *Lab) nextFarIndex() int {
	l.farIndex++
	return farIndexBase + l.farIndex
}

// ErrClosed is returned by operations on a closed lab.
var ErrClosed = errors.New("lab: closed")

// Close stops the processes started with Start (SIGTERM, then SIGKILL after
// KillGrace), kills anything else still running inside the lab namespaces,
// and deletes the namespaces. It is idempotent and safe to call from a
// signal handler goroutine.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.closeErr
	}
	l.closed = true
	procs := make([]*proc, 0, len(l.procs))
	for _, p := range l.procs {
		procs = append(procs, p)
	}
	grace := l.KillGrace
	l.mu.Unlock()

	var errs []error
	stopProcs(procs, grace)

	l.mu.Lock()
	defer l.mu.Unlock()
	// Processes the daemon spawned (hooks, reconnect commands) are not ours
	// to track individually, but they must not keep a namespace alive.
	if err := killInNamespaces(l.created); err != nil {
		errs = append(errs, err)
	}
	// Sockets and fds pin a namespace; release them before unmounting.
	for _, s := range l.handles {
		s.h.Close()
		s.fd.Close()
	}
	l.handles = nil
	for i := len(l.created) - 1; i >= 0; i-- {
		if err := deleteNS(l.created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	l.created = nil
	registryMu.Lock()
	delete(registry, l)
	registryMu.Unlock()
	l.closeErr = errors.Join(errs...)
	return l.closeErr
}

// CloseAll closes every lab this process has open. Signal handlers (the lab
// runner, GuardMain) call it so that an interrupted run leaves nothing behind.
func CloseAll() error {
	registryMu.Lock()
	labs := make([]*Lab, 0, len(registry))
	for l := range registry {
		labs = append(labs, l)
	}
	registryMu.Unlock()
	var errs []error
	for _, l := range labs {
		if err := l.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// openLabs reports how many labs are still open (GuardMain flags leaks).
func openLabs() int {
	registryMu.Lock()
	defer registryMu.Unlock()
	return len(registry)
}

// ID returns the lab's run id, the common prefix of its namespace names.
func (l *Lab) ID() string { return l.id }

// Namespaces returns the names of all namespaces of the lab.
func (l *Lab) Namespaces() []string {
	return append([]string{l.Router, l.LAN, l.Inet}, l.ISPs...)
}

// NsHandle opens the namespace ns (a /run/netns name). The caller closes it;
// an open handle keeps the namespace alive even after Close.
func (l *Lab) NsHandle(ns string) (netns.NsHandle, error) {
	h, err := netns.GetFromPath(nsPath(ns))
	if err != nil {
		return h, fmt.Errorf("lab: open namespace %s: %w", ns, err)
	}
	return h, nil
}
