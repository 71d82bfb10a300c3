package daemon

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/watcher/backendcheck"
)

// fakeChecks is the backend checker as the loop sees it: the test decides
// who is healthy and calls notify as the real checker does.
type fakeChecks struct {
	mu      sync.Mutex
	specs   []backendcheck.Spec
	healthy map[string][]netip.AddrPort
	notify  func()
	closed  bool
}

func (f *fakeChecks) start(specs []backendcheck.Spec, notify func()) ServiceChecks {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs, f.notify = specs, notify
	return f
}

func (f *fakeChecks) Healthy() map[string][]netip.AddrPort {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.healthy
}

func (f *fakeChecks) Status() []backendcheck.ServiceStatus { return nil }

func (f *fakeChecks) Update(specs []backendcheck.Spec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs = specs
}

func (f *fakeChecks) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

func (f *fakeChecks) set(service string, up ...netip.AddrPort) {
	f.mu.Lock()
	f.healthy = map[string][]netip.AddrPort{service: up}
	notify := f.notify
	f.mu.Unlock()
	notify()
}

const loopService = `
[[service]]
name = "web"
uplinks = ["ppp0"]
port = 80
balance = "weighted"
backends = ["10.0.0.3:8080", "10.0.0.4:8080"]
`

func webBackends(rs *firewall.Ruleset) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range rs.Services {
		for _, b := range s.Backends {
			out = append(out, b.Addr)
		}
	}
	return out
}

// TestLoopServiceHealthTriggersPass: a change of a healthy set is a trigger
// like a netlink event; the pass hands the set to the firewall; a reload
// updates the checks; Run closes the checker.
func TestLoopServiceHealthTriggersPass(t *testing.T) {
	verifyNoLeaks(t)
	fc := &fakeChecks{}
	l := startLoop(t, loopOpts{config: fakeConfig("", loopService), obs: twoPPP(), services: fc.start})
	a, b := netip.MustParseAddrPort("10.0.0.3:8080"), netip.MustParseAddrPort("10.0.0.4:8080")
	l.fw.mu.Lock()
	got := webBackends(l.fw.last)
	l.fw.mu.Unlock()
	if !slices.Equal(got, []netip.AddrPort{a, b}) {
		t.Fatalf("first pass: backends %v, want both", got)
	}
	fc.mu.Lock()
	specs := fc.specs
	fc.mu.Unlock()
	if len(specs) != 1 || specs[0].Service != "web" || specs[0].Iface != "lan0" {
		t.Fatalf("checks started with %+v", specs)
	}

	fc.set("web", a)
	if s := l.pass(); !s.FirewallChanged {
		t.Error("the pass after a health change rewrote no firewall state")
	}
	l.fw.mu.Lock()
	got = webBackends(l.fw.last)
	l.fw.mu.Unlock()
	if !slices.Equal(got, []netip.AddrPort{a}) {
		t.Fatalf("after b failed: backends %v, want [a]", got)
	}

	l.writeConfig(fakeConfig("", loopService+"\n[[service]]\nname = \"ssh\"\nuplinks = [\"ppp1\"]\nport = 22\nbackends = [\"10.0.0.5:22\"]\n"))
	if err := l.d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.pass()
	fc.mu.Lock()
	n := len(fc.specs)
	fc.mu.Unlock()
	if n != 2 {
		t.Errorf("after the reload the checks have %d services, want 2", n)
	}
	l.stop()
	if !fc.closed {
		t.Error("Run did not close the checker")
	}
}
