package lab

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { os.Exit(GuardMain(m)) }

// waitLong bounds the waits for an event or a state: generous, so that a
// busy machine makes the tests slower, never failing (how fast the lab is
// is BenchmarkEventLatency's business).
const waitLong = 20 * time.Second

func mustExec(t *testing.T, l *Lab, ns string, argv ...string) string {
	t.Helper()
	out, err := l.Exec(ns, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// routeVia sends traffic sourced from the uplink's current address out of
// that uplink, the way uplinkd's per-uplink table and source rule will.
func routeVia(t *testing.T, l *Lab, name string) netip.Addr {
	t.Helper()
	idx := l.UplinkIndex(name)
	table := strconv.Itoa(100 + idx)
	addr := l.UplinkAddr(name)
	args := []string{"ip", "route", "replace", "default", "dev", name, "table", table}
	if kindOf(l, name) == KindEthernet {
		args = []string{"ip", "route", "replace", "default", "via", l.ISPAddr(name).String(), "dev", name, "table", table}
	}
	mustExec(t, l, l.Router, args...)
	mustExec(t, l, l.Router, "ip", "rule", "add", "from", addr.String(), "table", table, "pref", strconv.Itoa(1000+idx))
	return addr
}

func kindOf(l *Lab, name string) string {
	for _, u := range l.Uplinks() {
		if u.Name == name {
			return u.Kind
		}
	}
	return ""
}

func ping(l *Lab, src netip.Addr, dst string, wait string) error {
	_, err := l.Exec(l.Router, "ping", "-n", "-c", "1", "-W", wait, "-I", src.String(), dst)
	return err
}

func rxPackets(t *testing.T, l *Lab, ns, iface string) int {
	t.Helper()
	out := mustExec(t, l, ns, "cat", "/sys/class/net/"+iface+"/statistics/rx_packets")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("rx_packets %q: %v", out, err)
	}
	return n
}

func nsExists(name string) bool {
	_, err := os.Stat(nsPath(name))
	return err == nil
}

func linkIn(t *testing.T, l *Lab, ns, name string) (netlink.Link, *netlink.Handle) {
	t.Helper()
	fd, err := l.NsHandle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, ns, err)
	}
	return link, h
}

func TestBuildAndClose(t *testing.T) {
	t.Parallel()
	if r := Unsupported(); r != "" {
		t.Skip(r)
	}
	l, err := New(Spec{Uplinks: []UplinkSpec{{Name: "ppp0", Kind: KindPPP}, {Name: "wan1", Kind: KindEthernet}}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, ns := range l.Namespaces() {
		if !strings.HasPrefix(ns, fmt.Sprintf("ul-%d-", os.Getpid())) || !nsExists(ns) {
			t.Errorf("namespace %s: missing or badly named", ns)
		}
	}

	// ppp-like: NOARP, /32 with peer, the same MAC on both ends.
	ppp, h := linkIn(t, l, l.Router, "ppp0")
	cust, _ := linkIn(t, l, l.ISPs[0], CustIface)
	if f := ppp.Attrs().RawFlags; f&unix.IFF_NOARP == 0 || f&unix.IFF_UP == 0 || f&unix.IFF_LOWER_UP == 0 {
		t.Errorf("ppp0 flags %#x: want UP, LOWER_UP, NOARP", f)
	}
	if cust.Attrs().RawFlags&unix.IFF_NOARP == 0 {
		t.Errorf("cust0 is not NOARP")
	}
	if !bytes.Equal(ppp.Attrs().HardwareAddr, cust.Attrs().HardwareAddr) {
		t.Errorf("ppp MACs differ: %s vs %s", ppp.Attrs().HardwareAddr, cust.Attrs().HardwareAddr)
	}
	addrs, err := h.AddrList(ppp, unix.AF_INET)
	if err != nil || len(addrs) != 1 {
		t.Fatalf("ppp0 addresses %v, %v", addrs, err)
	}
	if a := addrs[0]; a.IPNet.String() != "100.64.0.10/32" || a.Peer == nil || a.Peer.String() != "100.64.0.1/32" {
		t.Errorf("ppp0 address %s peer %s, want 100.64.0.10/32 peer 100.64.0.1/32", a.IPNet, a.Peer)
	}

	// ethernet: /24, ARP on, distinct MACs.
	wan, _ := linkIn(t, l, l.Router, "wan1")
	wcust, _ := linkIn(t, l, l.ISPs[1], CustIface)
	if wan.Attrs().RawFlags&unix.IFF_NOARP != 0 || bytes.Equal(wan.Attrs().HardwareAddr, wcust.Attrs().HardwareAddr) {
		t.Errorf("wan1 should do ARP with distinct MACs")
	}
	if out := mustExec(t, l, l.Router, "ip", "-4", "-o", "addr", "show", "dev", "wan1"); !strings.Contains(out, "100.64.1.10/24") {
		t.Errorf("wan1 address: %s", out)
	}
	if got := l.UplinkAddr("wan1"); got != netip.MustParseAddr("100.64.1.10") {
		t.Errorf("UplinkAddr(wan1) = %s", got)
	}
	if got := l.ISPAddr("ppp0"); got != netip.MustParseAddr("100.64.0.1") {
		t.Errorf("ISPAddr(ppp0) = %s", got)
	}
	// The lab leaves the router's main default route to uplinkd.
	if out := mustExec(t, l, l.Router, "ip", "route", "show", "default"); strings.TrimSpace(out) != "" {
		t.Errorf("router has a default route: %s", out)
	}
	// LAN client reaches the router.
	mustExec(t, l, l.LAN, "ping", "-n", "-c", "1", "-W", "5", LANRouterAddr.String())

	// Close stops started processes and removes every namespace.
	cmd, err := l.Start(l.Router, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	l.KillGrace = 500 * time.Millisecond
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %v", time.Since(start))
	if !l.Exited(cmd) {
		t.Errorf("started process survived Close")
	}
	for _, ns := range l.Namespaces() {
		if nsExists(ns) {
			t.Errorf("namespace %s left after Close", ns)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.Redial("ppp0"); err == nil {
		t.Errorf("Redial after Close succeeded")
	}
}

func TestPingEachUplink(t *testing.T) {
	t.Parallel()
	l := NewT(t, Spec{Uplinks: []UplinkSpec{
		{Name: "ppp0", Kind: KindPPP}, {Name: "ppp1", Kind: KindPPP}, {Name: "eth2", Kind: KindEthernet},
	}})
	for _, u := range l.Uplinks() {
		src := routeVia(t, l, u.Name)
		isp := l.ISP(u.Name)
		before := rxPackets(t, l, isp, CustIface)
		for _, dst := range InetHosts {
			if err := ping(l, src, dst.String(), "5"); err != nil {
				t.Errorf("%s: %v", u.Name, err)
			}
		}
		// The packets really went through this uplink's ISP.
		if got := rxPackets(t, l, isp, CustIface) - before; got < len(InetHosts) {
			t.Errorf("%s: ISP received %d packets, want >= %d", u.Name, got, len(InetHosts))
		}
		// The ISP end itself answers too (what a gateway probe would use).
		if err := ping(l, src, l.ISPAddr(u.Name).String(), "5"); err != nil {
			t.Errorf("%s: ping ISP end: %v", u.Name, err)
		}
	}
}

func TestPPPCarriesTCP(t *testing.T) {
	t.Parallel()
	l := NewT(t, Spec{Uplinks: []UplinkSpec{{Name: "ppp0", Kind: KindPPP}}})
	src := routeVia(t, l, "ppp0")

	// A Go echo server in the inet namespace; 1 MiB both ways exercises
	// full-size segments over the NOARP/same-MAC link.
	ln, err := l.ListenIn(l.Inet, "tcp", "192.0.2.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		peer <- c.RemoteAddr().String()
		_, _ = io.Copy(c, c)
	}()
	c, err := l.DialIn(l.Router, "tcp", src.String()+":0", ln.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	go func() { _, _ = c.Write(payload) }()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("echoed payload differs")
	}
	if p := <-peer; !strings.HasPrefix(p, src.String()+":") {
		t.Errorf("server saw %s, want the uplink address %s (no NAT in the lab)", p, src)
	}

	// The same with external tools, through Start: nc listens in inet.
	srv, err := l.Start(l.Inet, "nc", "-l", "192.0.2.1", "9000")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLong)
	for {
		_, err := l.Exec(l.Router, "sh", "-c", "echo hello-over-ppp | nc -N -w 1 -s "+src.String()+" 192.0.2.1 9000")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // nc -l not listening yet
	}
	if err := l.Wait(srv); err != nil {
		t.Fatalf("nc -l: %v: %s", err, Output(srv))
	}
	if out := Output(srv); !strings.Contains(out, "hello-over-ppp") {
		t.Errorf("nc -l got %q", out)
	}
}

func TestRedial(t *testing.T) {
	t.Parallel()
	l := NewT(t, Spec{Uplinks: []UplinkSpec{{Name: "ppp0", Kind: KindPPP}, {Name: "eth1", Kind: KindEthernet}}})
	for _, name := range []string{"ppp0", "eth1"} {
		old := routeVia(t, l, name)
		if err := ping(l, old, "192.0.2.1", "5"); err != nil {
			t.Fatalf("%s before redial: %v", name, err)
		}
		res, err := l.Redial(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s -> %s, address %v after delete", name, res.Old, res.New, res.AddrAdded.Sub(res.Deleted))
		if res.Old != old || res.New.As4()[3] != old.As4()[3]+1 || res.New.As4()[2] != old.As4()[2] {
			t.Errorf("%s: redial %s -> %s, want the next address after %s", name, res.Old, res.New, old)
		}
		if res.Deleted.IsZero() || !res.AddrAdded.After(res.Deleted) {
			t.Errorf("%s: timestamps deleted=%v added=%v", name, res.Deleted, res.AddrAdded)
		}
		if l.UplinkAddr(name) != res.New {
			t.Errorf("%s: UplinkAddr = %s, want %s", name, l.UplinkAddr(name), res.New)
		}
		if out := mustExec(t, l, l.Router, "ip", "-4", "-o", "addr", "show", "dev", name); !hasAddr(out, res.New) || hasAddr(out, old) {
			t.Errorf("%s: addresses after redial: %s", name, out)
		}
		// The old address is gone, so traffic from it cannot flow.
		if err := ping(l, old, "192.0.2.1", "0.3"); err == nil {
			t.Errorf("%s: ping from old address %s still works", name, old)
		}
		// Routes through the deleted link went with it; re-add for the new one.
		mustExec(t, l, l.Router, "ip", "rule", "del", "from", old.String())
		routeVia(t, l, name)
		if err := ping(l, res.New, "192.0.2.1", "5"); err != nil {
			t.Errorf("%s after redial: %v", name, err)
		}
	}

	// DropLink + Dial is a redial in two steps.
	if _, err := l.DropLink("ppp0"); err != nil {
		t.Fatal(err)
	}
	if a := l.UplinkAddr("ppp0"); a.IsValid() {
		t.Errorf("UplinkAddr after DropLink = %s", a)
	}
	if _, err := l.Exec(l.Router, "ip", "link", "show", "ppp0"); err == nil {
		t.Errorf("ppp0 still exists after DropLink")
	}
	if _, err := l.DropLink("ppp0"); err == nil {
		t.Errorf("second DropLink succeeded")
	}
	if _, err := l.SetCarrier("ppp0", false); err == nil {
		t.Errorf("SetCarrier on a dropped link succeeded")
	}
	res, err := l.Dial("ppp0")
	if err != nil {
		t.Fatal(err)
	}
	if res.Old != netip.MustParseAddr("100.64.0.11") || res.New != netip.MustParseAddr("100.64.0.12") || !res.Deleted.IsZero() {
		t.Errorf("Dial = %+v", res)
	}
	if _, err := l.Dial("ppp0"); err == nil {
		t.Errorf("Dial of an existing link succeeded")
	}
	if _, err := l.Redial("nope"); err == nil {
		t.Errorf("Redial of an unknown uplink succeeded")
	}
}

// hasAddr reports whether `ip -o addr` output lists a as a local address,
// either "inet A/len" or, for a ppp peer address, "inet A peer ...".
func hasAddr(out string, a netip.Addr) bool {
	return strings.Contains(out, "inet "+a.String()+"/") || strings.Contains(out, "inet "+a.String()+" ")
}

func TestRouterAddrWraps(t *testing.T) {
	cases := []struct {
		dials int
		want  string
	}{{0, "100.64.3.10"}, {1, "100.64.3.11"}, {240, "100.64.3.250"}, {241, "100.64.3.10"}, {242, "100.64.3.11"}}
	for _, c := range cases {
		if got := RouterAddrOf(3, c.dials); got.String() != c.want {
			t.Errorf("RouterAddrOf(3, %d) = %s, want %s", c.dials, got, c.want)
		}
	}
}

// waitFlags waits until the link's flags&mask are want and returns the
// flags, or returns the last flags seen when waitLong has passed.
func waitFlags(t *testing.T, l *Lab, name string, mask, want uint32) uint32 {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		f, err := l.LinkFlags(name)
		if err != nil {
			t.Fatal(err)
		}
		if f&mask == want || time.Now().After(deadline) {
			return f
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSetCarrier(t *testing.T) {
	t.Parallel()
	l := NewT(t, Spec{Uplinks: []UplinkSpec{{Name: "ppp0", Kind: KindPPP}, {Name: "eth1", Kind: KindEthernet}}})
	for _, name := range []string{"ppp0", "eth1"} {
		src := routeVia(t, l, name)
		if _, err := l.SetCarrier(name, false); err != nil {
			t.Fatal(err)
		}
		// LOWER_UP follows the peer synchronously; RUNNING (what `ip` shows
		// as NO-CARRIER) goes through linkwatch, hence the short wait.
		if f := waitFlags(t, l, name, unix.IFF_UP|unix.IFF_LOWER_UP|unix.IFF_RUNNING, unix.IFF_UP); f&(unix.IFF_LOWER_UP|unix.IFF_RUNNING) != 0 || f&unix.IFF_UP == 0 {
			t.Errorf("%s flags after carrier loss %#x: want UP without LOWER_UP/RUNNING", name, f)
		}
		if out := mustExec(t, l, l.Router, "ip", "link", "show", name); !strings.Contains(out, "NO-CARRIER") {
			t.Errorf("%s: ip link does not show NO-CARRIER: %s", name, out)
		}
		if err := ping(l, src, "192.0.2.1", "0.3"); err == nil {
			t.Errorf("%s: ping works without carrier", name)
		}
		if _, err := l.SetCarrier(name, true); err != nil {
			t.Fatal(err)
		}
		if up, err := l.Carrier(name); err != nil || !up {
			t.Errorf("%s: carrier after restore = %v, %v", name, up, err)
		}
		waitFlags(t, l, name, unix.IFF_RUNNING, unix.IFF_RUNNING)
		// For eth1 this takes ~0.7 s: the ping during the outage left the
		// gateway's neighbour entry mid-resolution, and the kernel only
		// retries ARP after retrans_time (what uplinkd must work around).
		if err := ping(l, src, "192.0.2.1", "5"); err != nil {
			t.Errorf("%s: ping after carrier restored: %v", name, err)
		}
	}
}

func TestBlackhole(t *testing.T) {
	t.Parallel()
	l := NewT(t, Spec{Uplinks: []UplinkSpec{{Name: "ppp0", Kind: KindPPP}, {Name: "eth1", Kind: KindEthernet}}})
	for _, name := range []string{"ppp0", "eth1"} {
		src := routeVia(t, l, name)
		if err := ping(l, src, "192.0.2.1", "5"); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := l.Blackhole(name, true); err != nil {
			t.Fatal(err)
		}
		if err := ping(l, src, "192.0.2.1", "0.3"); err == nil {
			t.Errorf("%s: ping through a blackholed ISP works", name)
		}
		if err := ping(l, src, l.ISPAddr(name).String(), "0.3"); err == nil {
			t.Errorf("%s: the blackholed ISP end still answers", name)
		}
		if up, err := l.Carrier(name); err != nil || !up {
			t.Errorf("%s: carrier during blackhole = %v, %v", name, up, err)
		}
		if err := l.Blackhole(name, true); err != nil {
			t.Errorf("%s: repeated Blackhole(true): %v", name, err)
		}
		if err := l.Blackhole(name, false); err != nil {
			t.Fatal(err)
		}
		if err := ping(l, src, "192.0.2.1", "5"); err != nil {
			t.Errorf("%s: ping after blackhole removed: %v", name, err)
		}
	}

	// A blackhole outlives a redial (cust0 is re-created).
	if err := l.Blackhole("ppp0", true); err != nil {
		t.Fatal(err)
	}
	res, err := l.Redial("ppp0")
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, l, l.Router, "ip", "rule", "del", "from", res.Old.String())
	src := routeVia(t, l, "ppp0")
	if err := ping(l, src, "192.0.2.1", "0.3"); err == nil {
		t.Errorf("blackhole lost by redial")
	}
	if err := l.Blackhole("ppp0", false); err != nil {
		t.Fatal(err)
	}
	if err := ping(l, src, "192.0.2.1", "5"); err != nil {
		t.Errorf("after redial and unblackhole: %v", err)
	}
}

func TestSweepStale(t *testing.T) {
	t.Parallel()
	l := NewT(t, Spec{})
	// A reaped child's PID stands in for a dead test binary.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	dead := c.Process.Pid
	if pidAlive(dead) {
		t.Skipf("pid %d reused already", dead)
	}
	stale := fmt.Sprintf("%s%d-1-router", Prefix, dead)
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = deleteNS(stale) })
	// Something still running inside, as a crashed run's daemon would be.
	sleeper := exec.Command("ip", "netns", "exec", stale, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(exited) }()
	t.Cleanup(func() { _ = sleeper.Process.Kill() })
	for deadline := time.Now().Add(waitLong); !inNamespace(sleeper.Process.Pid, stale); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) { // else the sweep below would prove nothing
			t.Fatalf("ip netns exec did not enter %s", stale)
		}
	}

	removed, err := SweepStale()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range removed {
		found = found || n == stale
		if strings.HasPrefix(n, l.ID()) {
			t.Errorf("swept a live lab's namespace %s", n)
		}
	}
	if !found || nsExists(stale) {
		t.Errorf("stale namespace %s not swept (removed %v)", stale, removed)
	}
	select {
	case <-exited:
	case <-time.After(waitLong):
		t.Errorf("process in the stale namespace survived the sweep")
	}
	for _, ns := range l.Namespaces() {
		if !nsExists(ns) {
			t.Errorf("live namespace %s was removed", ns)
		}
	}
}

func inNamespace(pid int, ns string) bool {
	var st unix.Stat_t
	if unix.Stat(nsPath(ns), &st) != nil {
		return false
	}
	link, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	return link == fmt.Sprintf("net:[%d]", st.Ino)
}

func TestSixtyFourUplinks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 67 namespaces")
	}
	t.Parallel()
	if Unsupported() != "" {
		t.Skip(Unsupported())
	}
	var spec Spec
	for i := range 64 {
		spec.Uplinks = append(spec.Uplinks, UplinkSpec{Name: "ppp" + strconv.Itoa(i), Kind: KindPPP})
	}
	start := time.Now()
	l := NewT(t, spec)
	t.Logf("built 64 uplinks in %v", time.Since(start))
	src := routeVia(t, l, "ppp63")
	if src != netip.MustParseAddr("100.64.63.10") {
		t.Errorf("ppp63 address %s", src)
	}
	if err := ping(l, src, "203.0.113.1", "5"); err != nil {
		t.Error(err)
	}
	var worst time.Duration
	for i := range 64 {
		res, err := l.Redial("ppp" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		worst = max(worst, res.AddrAdded.Sub(res.Deleted))
	}
	t.Logf("64 redials, slowest delete->address %v", worst)
}

func TestValidate(t *testing.T) {
	bad := []Spec{
		{Uplinks: []UplinkSpec{{Name: "", Kind: KindPPP}}},
		{Uplinks: []UplinkSpec{{Name: "averyveryverylongname", Kind: KindPPP}}},
		{Uplinks: []UplinkSpec{{Name: "ppp0", Kind: KindPPP}, {Name: "ppp0", Kind: KindPPP}}},
		{Uplinks: []UplinkSpec{{Name: "lan0", Kind: KindEthernet}}},
		{Uplinks: []UplinkSpec{{Name: "wlan0", Kind: "wlan"}}},
	}
	for _, s := range bad {
		if l, err := New(s); err == nil {
			l.Close()
			t.Errorf("New(%+v) succeeded", s)
		}
	}
}

func TestParseRunPID(t *testing.T) {
	for name, want := range map[string]int{"ul-123-4-router": 123, "ul-9-1-isp12": 9, "ul-x-1-a": 0, "other": 0, "ul-": 0,
		"fw-77-3": 77, "wt-5-1": 5, "pr-42-9": 42, "zz-42-9": 0, "wt-": 0} {
		got, ok := parseRunPID(name)
		if ok != (want != 0) || got != want {
			t.Errorf("parseRunPID(%q) = %d, %v", name, got, ok)
		}
	}
}

func TestHostStateStable(t *testing.T) {
	a, err := HostState()
	if err != nil {
		t.Logf("HostState: %v", err)
	}
	b, _ := HostState()
	if a != b {
		t.Errorf("HostState not stable:\n%s", Diff(a, b))
	}
	if !strings.Contains(a, "## ip -4 rule") || !strings.Contains(a, "lookup main") {
		t.Errorf("HostState lacks rules:\n%s", a)
	}
}

func TestDiff(t *testing.T) {
	a := "h\n1\n2\n3\n4\n5\n6\n7\n8\n"
	b := "h\n1\n2\nX\n4\n5\n6\n7\n8\nY\n"
	got := Diff(a, b)
	want := "  1\n  2\n- 3\n+ X\n  4\n  5\n@@\n  7\n  8\n+ Y\n"
	if got != want {
		t.Errorf("Diff:\n%s\nwant:\n%s", got, want)
	}
	if Diff(a, a) != "" {
		t.Errorf("Diff of equal texts not empty")
	}
}

// TestEvents checks that link and address events reach a netlink listener
// in the router namespace with the right state: uplinkd's reaction to the
// lab depends on them. How promptly they come (linkwatch batching would
// delay carrier events by up to a second) is BenchmarkEventLatency's.
func TestEvents(t *testing.T) {
	t.Parallel()
	l := NewT(t, Spec{Uplinks: []UplinkSpec{{Name: "ppp0", Kind: KindPPP}, {Name: "eth1", Kind: KindEthernet}}})
	ev := subscribe(t, l)
	for _, name := range []string{"ppp0", "eth1"} {
		at, err := l.SetCarrier(name, false)
		if err != nil {
			t.Fatal(err)
		}
		down, err := ev.link(name, false, at, waitLong)
		if err != nil {
			t.Fatal(err)
		}
		at, err = l.SetCarrier(name, true)
		if err != nil {
			t.Fatal(err)
		}
		up, err := ev.link(name, true, at, waitLong)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: carrier-down event after %v, carrier-up event after %v", name, down, up)
	}
	ev.drainAddrs()
	res, err := l.Redial("ppp0")
	if err != nil {
		t.Fatal(err)
	}
	lat, err := ev.newAddr(res, waitLong)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new address event %v after AddrAdded", lat)
}

// BenchmarkEventLatency reports how long after the lab's change a listener
// in the router namespace gets the carrier-down, carrier-up and new-address
// events (ms each): benchmarks of uplinkd's reaction time are meaningless if
// the lab's own events are batched by the kernel.
func BenchmarkEventLatency(b *testing.B) {
	l, err := New(Spec{Uplinks: []UplinkSpec{{Name: "ppp0", Kind: KindPPP}}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ev := subscribe(b, l)
	var down, up, addr time.Duration
	for b.Loop() {
		at, err := l.SetCarrier("ppp0", false)
		if err != nil {
			b.Fatal(err)
		}
		d, err := ev.link("ppp0", false, at, waitLong)
		if err != nil {
			b.Fatal(err)
		}
		if at, err = l.SetCarrier("ppp0", true); err != nil {
			b.Fatal(err)
		}
		u, err := ev.link("ppp0", true, at, waitLong)
		if err != nil {
			b.Fatal(err)
		}
		ev.drainAddrs()
		res, err := l.Redial("ppp0")
		if err != nil {
			b.Fatal(err)
		}
		a, err := ev.newAddr(res, waitLong)
		if err != nil {
			b.Fatal(err)
		}
		down, up, addr = down+d, up+u, addr+a
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(b.N) }
	b.ReportMetric(ms(down), "carrier-down-ms")
	b.ReportMetric(ms(up), "carrier-up-ms")
	b.ReportMetric(ms(addr), "new-addr-ms")
}

// events is a link and an address subscription in the lab's router
// namespace.
type events struct {
	links chan netlink.LinkUpdate
	addrs chan netlink.AddrUpdate
}

func subscribe(tb testing.TB, l *Lab) *events {
	tb.Helper()
	fd, err := l.NsHandle(l.Router)
	if err != nil {
		tb.Fatal(err)
	}
	defer fd.Close()
	done := make(chan struct{})
	tb.Cleanup(func() { close(done) })
	ev := &events{links: make(chan netlink.LinkUpdate, 64), addrs: make(chan netlink.AddrUpdate, 64)}
	if err := netlink.LinkSubscribeWithOptions(ev.links, done, netlink.LinkSubscribeOptions{Namespace: &fd}); err != nil {
		tb.Fatal(err)
	}
	if err := netlink.AddrSubscribeWithOptions(ev.addrs, done, netlink.AddrSubscribeOptions{Namespace: &fd}); err != nil {
		tb.Fatal(err)
	}
	return ev
}

// link waits for a new-link event of name with the given LOWER_UP state
// and returns how long after since it came.
func (ev *events) link(name string, lowerUp bool, since time.Time, within time.Duration) (time.Duration, error) {
	timeout := time.After(within)
	for {
		select {
		case u := <-ev.links:
			if u.Attrs().Name == name && (u.Attrs().RawFlags&unix.IFF_LOWER_UP != 0) == lowerUp && u.Header.Type == unix.RTM_NEWLINK {
				return time.Since(since), nil
			}
		case <-timeout:
			return 0, fmt.Errorf("%s: no link event with lower_up=%v within %v", name, lowerUp, within)
		}
	}
}

func (ev *events) drainAddrs() {
	for len(ev.addrs) > 0 {
		<-ev.addrs
	}
}

// newAddr waits for the RTM_NEWADDR of a redial's new address and returns
// how long after res.AddrAdded it came.
func (ev *events) newAddr(res RedialResult, within time.Duration) (time.Duration, error) {
	timeout := time.After(within)
	for {
		select {
		case u := <-ev.addrs:
			if u.NewAddr && u.LinkAddress.IP.Equal(res.New.AsSlice()) {
				return time.Since(res.AddrAdded), nil
			}
		case <-timeout:
			return 0, fmt.Errorf("no RTM_NEWADDR for the redialed address %s within %v", res.New, within)
		}
	}
}
