package probe

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/helper/helpertest"
	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// The kernel tests build their own pair of namespaces per test, named
// pr-<pid>-<n>, and never configure anything in the test process's own
// namespace. TestMain removes namespaces of dead runs, checks that this run
// left none behind, and compares the host's routing and firewall state
// before and after (lab.HostState).

const nsDir = "/run/netns"

var nsCounter atomic.Int64

// TestMain: lab.GuardMain compares the host state around the run, and its
// sweep (shared with every other package's test namespaces) removes pr-
// namespaces of dead runs and reports any this run left behind.
// TestMain builds uplinkd-helper, which runs the http probes, and guards
// the host namespace (lab.GuardMain).
func TestMain(m *testing.M) {
	os.Exit(helpertest.HelperMain(func() int { return lab.GuardMain(m) }))
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces, raw sockets)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("needs %s", tool)
		}
	}
}

func run(tb testing.TB, argv ...string) string {
	tb.Helper()
	var out bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out.String())
	}
	return out.String()
}

// netNS is one test namespace and an open descriptor of it.
type netNS struct {
	name string
	fd   int
}

// newNS creates a namespace whose deletion is registered before anything
// else can fail.
func newNS(tb testing.TB) *netNS {
	tb.Helper()
	name := fmt.Sprintf("pr-%d-%d", os.Getpid(), nsCounter.Add(1))
	run(tb, "ip", "netns", "add", name)
	ns := &netNS{name: name, fd: -1}
	tb.Cleanup(func() {
		if ns.fd >= 0 {
			_ = unix.Close(ns.fd)
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v %s", name, err, out)
		}
	})
	fd, err := unix.Open(filepath.Join(nsDir, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("open namespace %s: %v", name, err)
	}
	ns.fd = fd
	run(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return ns
}

// ip runs `ip -n NS args...`.
func (ns *netNS) ip(tb testing.TB, args ...string) string {
	tb.Helper()
	return run(tb, append([]string{"ip", "-n", ns.name}, args...)...)
}

// nft feeds a script to nft inside the namespace.
func (ns *netNS) nft(tb testing.TB, script string) string {
	tb.Helper()
	var out bytes.Buffer
	cmd := exec.Command("ip", "netns", "exec", ns.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tb.Fatalf("nft in %s: %v\n%s\nscript:\n%s", ns.name, err, out.String(), script)
	}
	return out.String()
}

var packetsRe = regexp.MustCompile(`packets (\d+)`)

// counter reads the named nft counter of table inet probe.
func (ns *netNS) counter(tb testing.TB, name string) int {
	tb.Helper()
	out := run(tb, "ip", "netns", "exec", ns.name, "nft", "list", "counter", "inet", "probe", name)
	m := packetsRe.FindStringSubmatch(out)
	if m == nil {
		tb.Fatalf("no packet count in %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// do runs fn on a thread inside the namespace (to open listeners there).
func (ns *netNS) do(tb testing.TB, fn func() error) {
	tb.Helper()
	if err := netnsx.Do(ns.fd, fn); err != nil {
		tb.Fatalf("in %s: %v", ns.name, err)
	}
}

// topo is the test network:
//
//	client ns                         server ns
//	va 10.77.0.2/24  <--- veth --->  sa 10.77.0.1/24
//	vb 10.78.0.2/24  <--- veth --->  sb 10.78.0.1/24
//	                                 lo 192.0.2.1/32 (the "internet" host)
//
// The client's main default route goes via va; like uplinkd's per-uplink
// tables, table 101 (va) and 102 (vb) hold a default route each and source
// rules select them. Table inet probe in the server counts echo requests per
// arrival interface and has a chain where tests add drop rules.
type topo struct {
	client, server *netNS
}

var (
	srcA   = netip.MustParseAddr("10.77.0.2")
	srcB   = netip.MustParseAddr("10.78.0.2")
	inetIP = "192.0.2.1"
)

func newTopo(tb testing.TB) *topo {
	tb.Helper()
	requireRoot(tb)
	c, s := newNS(tb), newNS(tb)
	c.ip(tb, "link", "add", "va", "type", "veth", "peer", "name", "sa", "netns", s.name)
	c.ip(tb, "link", "add", "vb", "type", "veth", "peer", "name", "sb", "netns", s.name)
	c.ip(tb, "addr", "add", "10.77.0.2/24", "dev", "va")
	c.ip(tb, "addr", "add", "10.78.0.2/24", "dev", "vb")
	s.ip(tb, "addr", "add", "10.77.0.1/24", "dev", "sa")
	s.ip(tb, "addr", "add", "10.78.0.1/24", "dev", "sb")
	s.ip(tb, "addr", "add", inetIP+"/32", "dev", "lo")
	for _, l := range []string{"va", "vb"} {
		c.ip(tb, "link", "set", l, "up")
	}
	for _, l := range []string{"sa", "sb"} {
		s.ip(tb, "link", "set", l, "up")
	}
	c.ip(tb, "route", "add", "default", "via", "10.77.0.1", "dev", "va")
	c.ip(tb, "route", "add", "default", "via", "10.77.0.1", "dev", "va", "table", "101")
	c.ip(tb, "route", "add", "default", "via", "10.78.0.1", "dev", "vb", "table", "102")
	c.ip(tb, "rule", "add", "from", "10.77.0.2", "lookup", "101", "pref", "100")
	c.ip(tb, "rule", "add", "from", "10.78.0.2", "lookup", "102", "pref", "101")
	s.nft(tb, `
table inet probe {
	counter echo_a {}
	counter echo_b {}
	chain count {
		type filter hook input priority -10; policy accept;
		iifname "sa" icmp type echo-request counter name echo_a
		iifname "sb" icmp type echo-request counter name echo_b
	}
	chain blackhole {
		type filter hook input priority 0; policy accept;
	}
}
`)
	return &topo{client: c, server: s}
}

// drop adds a rule (nft syntax, e.g. `iifname "sa" icmp type echo-request`)
// that drops matching packets arriving at the server; it returns a function
// that removes it again.
func (tp *topo) drop(tb testing.TB, match string) (undo func()) {
	tb.Helper()
	tp.server.nft(tb, "add rule inet probe blackhole "+match+" drop comment \"t\"\n")
	return func() { tp.server.nft(tb, "flush chain inet probe blackhole\n") }
}

// spec is an icmp Spec for the client side of uplink a or b.
func (tp *topo) spec(uplink, method string, targets ...string) Spec {
	s := Spec{
		Uplink:   uplink,
		Method:   method,
		Targets:  targets,
		Interval: 200 * time.Millisecond,
		Timeout:  150 * time.Millisecond,
		NetNS:    tp.client.fd,
	}
	switch uplink {
	case "a":
		s.Source, s.Iface = srcA, "va"
	case "b":
		s.Source, s.Iface = srcB, "vb"
	}
	return s
}

// running is a Run in the background.
type running struct {
	spec    Spec
	out     chan arrival
	errc    chan error
	cancel  context.CancelFunc
	partial map[uint64][]arrival // rounds not complete yet
}

type arrival struct {
	Result
	at time.Time
}

func start(tb testing.TB, s Spec) *running {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{spec: s, out: make(chan arrival, 64), errc: make(chan error, 1), cancel: cancel,
		partial: map[uint64][]arrival{}}
	// Stamps results as Run delivers them: the test reads them later.
	in := make(chan Result)
	go func() {
		for {
			select {
			case res := <-in:
				select {
				case r.out <- arrival{res, time.Now()}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { r.errc <- Run(ctx, s, in) }()
	tb.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	select {
	case <-r.errc:
	case <-time.After(20 * time.Second):
		panic("probe.Run did not return within 20s of cancel")
	}
}

// round waits for the next complete round (one result per target) and
// returns its results in target order, with the time the last one was
// delivered by Run.
func (r *running) round(tb testing.TB) ([]Result, time.Time) {
	tb.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case res := <-r.out:
			rs := append(r.partial[res.Round], res)
			r.partial[res.Round] = rs
			if len(rs) < len(r.spec.Targets) {
				continue
			}
			delete(r.partial, res.Round)
			var last time.Time
			ordered := make([]Result, 0, len(rs))
			for _, t := range r.spec.Targets {
				for _, x := range rs {
					if x.Target == t {
						ordered = append(ordered, x.Result)
					}
					if x.at.After(last) {
						last = x.at
					}
				}
			}
			return ordered, last
		case err := <-r.errc:
			tb.Fatalf("Run returned early: %v", err)
		case <-deadline:
			tb.Fatalf("no complete round within 20s")
		}
	}
}

// roundAfter discards rounds until one that started after t0.
func (r *running) roundAfter(tb testing.TB, t0 time.Time) ([]Result, time.Time) {
	tb.Helper()
	for {
		rs, got := r.round(tb)
		if rs[0].At.After(t0) {
			return rs, got
		}
	}
}
