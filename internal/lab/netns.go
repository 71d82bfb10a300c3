package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// netnsDir is where iproute2 keeps named namespaces (bind mounts of nsfs).
const netnsDir = "/run/netns"

func nsPath(name string) string { return filepath.Join(netnsDir, name) }

// deleteNS does what `ip netns del` does: detach the bind mount and remove
// the file. The kernel frees the namespace (and every link inside it, so both
// ends of any veth pair) once nothing else references it. Done in Go rather
// than by exec so that cleanup is cheap and works even if PATH is odd.
func deleteNS(name string) error {
	p := nsPath(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("lab: unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("lab: remove %s: %w", p, err)
	}
	return nil
}

// inNS runs fn on an OS thread that has joined the namespace at path (see
// netnsx.Do). Sockets created by fn stay in that namespace for their whole
// life, and /proc/sys/net opened by fn refers to it.
func inNS(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", path, err)
	}
	defer target.Close()
	return netnsx.Do(target, fn)
}

// Do runs fn on an OS thread inside namespace ns. Sockets fn creates (net.Listen,
// net.Dial, ...) belong to ns and can then be used from any goroutine. fn must
// not start goroutines that expect to run inside ns.
func (l *Lab) Do(ns string, fn func() error) error {
	if err := inNS(nsPath(ns), fn); err != nil {
		return fmt.Errorf("lab: in %s: %w", ns, err)
	}
	return nil
}

// sysctlIn writes sysctls (dotted names) inside a namespace. /proc/sys/net
// resolves to the namespace of the thread that opens it, so no exec is needed.
func sysctlIn(ns string, kv map[string]string) error {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic error messages
	return inNS(nsPath(ns), func() error {
		var errs []error
		for _, k := range keys {
			p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
			if err := os.WriteFile(p, []byte(kv[k]), 0); err != nil {
				errs = append(errs, fmt.Errorf("sysctl %s=%s in %s: %w", k, kv[k], ns, err))
			}
		}
		return errors.Join(errs...)
	})
}

// Sysctl sets one sysctl (dotted name, e.g. "net.ipv4.ip_forward") in ns.
func (l *Lab) Sysctl(ns, key, value string) error {
	if err := sysctlIn(ns, map[string]string{key: value}); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// probeUnshare checks that this process may create network namespaces. The
// namespace it creates is anonymous: netnsx.Do switches the thread back to
// the namespace it came from (the one it "entered"), and the new namespace
// vanishes with its last reference.
func probeUnshare() error {
	own, err := netns.Get()
	if err != nil {
		return err
	}
	defer own.Close()
	return netnsx.Do(own, func() error { return unix.Unshare(unix.CLONE_NEWNET) })
}

// TestPrefixes are the name prefixes of every test namespace in the
// repository: the lab's own ("ul-") and the single namespaces some packages'
// tests create for themselves (firewall "fw-", watcher "wt-", probes "pr-").
// All are named "<prefix><pid>-<n>[-...]", so one sweep (SweepStale, and
// GuardMain's check for leftovers) serves them all.
var TestPrefixes = []string{Prefix, "fw-", "wt-", "pr-"}

// parseRunPID extracts the creating PID from a test namespace name
// "<prefix><pid>-<n>[-<role>]".
func parseRunPID(name string) (int, bool) {
	for _, prefix := range TestPrefixes {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			return 0, false
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			return 0, false
		}
		return pid, true
	}
	return 0, false
}

func pidAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// listLabNamespaces returns the names in /run/netns that look like lab
// namespaces, with the PID that created them.
func listLabNamespaces() (map[string]int, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: list %s: %w", netnsDir, err)
	}
	out := map[string]int{}
	for _, e := range ents {
		if pid, ok := parseRunPID(e.Name()); ok {
			out[e.Name()] = pid
		}
	}
	return out, nil
}

// SweepStale removes lab namespaces whose creating process is gone (a test
// binary killed by a timeout or SIGKILL never runs its cleanups), killing
// anything still running inside them first. Namespaces of live processes,
// including other test binaries running in parallel, are left alone.
func SweepStale() ([]string, error) {
	all, err := listLabNamespaces()
	if err != nil {
		return nil, err
	}
	// Namespaces carrying our own PID are stale too as long as this process
	// has not built a lab yet: they are from an earlier process that had the
	// same PID (PIDs wrap, and CI containers hand out similar ones), and
	// would make our first `ip netns add` fail.
	ownStale := runCounter.Load() == 0
	var stale []string
	for name, pid := range all {
		if pid == os.Getpid() && ownStale || pid != os.Getpid() && !pidAlive(pid) {
			stale = append(stale, name)
		}
	}
	sort.Strings(stale)
	if len(stale) == 0 {
		return nil, nil
	}
	errs := []error{killInNamespaces(stale)}
	var removed []string
	for _, name := range stale {
		if err := deleteNS(name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// killInNamespaces SIGKILLs every process (other than this one) whose network
// namespace is one of names. It is how processes the lab did not start itself
// (children of the daemon, a shell someone opened with `ip netns exec`) are
// kept from pinning a namespace after the lab is gone.
func killInNamespaces(names []string) error {
	want := map[string]bool{}
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(nsPath(n), &st); err != nil {
			continue // already gone or never mounted
		}
		want[fmt.Sprintf("net:[%d]", st.Ino)] = true
	}
	if len(want) == 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("lab: scan /proc: %w", err)
	}
	self := os.Getpid()
	var errs []error
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		link, err := os.Readlink("/proc/" + e.Name() + "/ns/net")
		if err != nil || !want[link] {
			continue
		}
		if err := unix.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("lab: kill %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// addVeth creates a veth pair between two lab namespaces and returns the
// near end (in near, with a kernel-chosen ifindex) and the far end (in far,
// with ifindex farIndex). The pair is created through far's netlink socket
// with the near end placed directly into near's namespace, so neither end
// ever exists in the host namespace.
//
// The explicit far ifindex is not cosmetic. The kernel's linkwatch treats a
// carrier change as urgent only if the device's ifindex differs from its
// iflink (for a veth: the peer's ifindex). Fresh namespaces number their
// links alike (lo=1, then 2, 3, ...), so both ends of a pair often get the
// same ifindex; their carrier/operstate changes, and the RTM_NEWLINK that
// reports them, are then batched for up to a second. A far index outside the
// range near-side numbering reaches keeps every lab link on the urgent path,
// which the event-latency benchmarks depend on.
func addVeth(near *nsState, nearName string, nearMAC net.HardwareAddr, far *nsState, farName string, farMAC net.HardwareAddr, farIndex int) (nearLink, farLink netlink.Link, err error) {
	la := netlink.NewLinkAttrs()
	la.Name = farName
	la.HardwareAddr = farMAC
	la.Index = farIndex
	v := &netlink.Veth{
		LinkAttrs:        la,
		PeerName:         nearName,
		PeerHardwareAddr: nearMAC,
		PeerNamespace:    netlink.NsFd(int(near.fd)),
		PeerTxQLen:       -1,
	}
	if err := far.h.LinkAdd(v); err != nil {
		return nil, nil, fmt.Errorf("add veth %s/%s <-> %s/%s: %w", near.name, nearName, far.name, farName, err)
	}
	nearLink, err = near.h.LinkByName(nearName)
	if err != nil {
		_ = far.h.LinkDel(v)
		return nil, nil, fmt.Errorf("find veth end %s/%s: %w", near.name, nearName, err)
	}
	return nearLink, v, nil
}

// addrUp adds an address (with a peer when peer is valid, pppd style) and
// brings the link up.
func addrUp(h *netlink.Handle, link netlink.Link, p netip.Prefix, peer netip.Addr) error {
	a := &netlink.Addr{IPNet: ipnet(p)}
	if peer.IsValid() {
		a.Peer = ipnet(prefixOf(peer, 32))
	}
	if err := h.AddrAdd(link, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, link.Attrs().Name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", link.Attrs().Name, err)
	}
	return nil
}

func addRoute(h *netlink.Handle, r *netlink.Route) error {
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("add route %s: %w", r, err)
	}
	return nil
}

func prefixOf(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }

// ipnet converts a prefix, keeping the host bits (netlink.Addr wants the
// interface address, not the network address).
func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
