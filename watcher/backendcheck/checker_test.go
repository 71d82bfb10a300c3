package backendcheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

func TestStateObserve(t *testing.T) {
	fail := errors.New("connection refused")
	tests := []struct {
		name     string
		down, up int
		results  []error
		// want is healthy after each result; changes where it flips.
		want []bool
	}{
		{"stays healthy", 2, 2, []error{nil, nil, nil}, []bool{true, true, true}},
		{"one failure is not enough", 2, 2, []error{fail, nil, fail, nil}, []bool{true, true, true, true}},
		{"down after two in a row", 2, 2, []error{fail, fail, fail}, []bool{true, false, false}},
		{"up after two in a row", 2, 2, []error{fail, fail, nil, fail, nil, nil}, []bool{true, false, false, false, false, true}},
		{"down=1 up=1", 1, 1, []error{fail, nil, fail}, []bool{false, true, false}},
		{"up=3", 1, 3, []error{fail, nil, nil, nil}, []bool{false, false, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := state{healthy: true}
			prev := true
			for i, err := range tt.results {
				changed := s.observe(err, tt.down, tt.up, time.Unix(int64(i), 0))
				if s.healthy != tt.want[i] {
					t.Fatalf("after result %d healthy = %v, want %v", i, s.healthy, tt.want[i])
				}
				if changed != (s.healthy != prev) {
					t.Fatalf("after result %d changed = %v, healthy went %v -> %v", i, changed, prev, s.healthy)
				}
				prev = s.healthy
			}
		})
	}
}

// fakeDial answers from a table that the test flips.
type fakeDial struct {
	mu   sync.Mutex
	down map[netip.AddrPort]bool
	n    atomic.Int64
}

func (f *fakeDial) dial(_ context.Context, _ string, a netip.AddrPort) error {
	f.n.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[a] {
		return errors.New("connection refused")
	}
	return nil
}

func (f *fakeDial) set(a netip.AddrPort, down bool) {
	f.mu.Lock()
	f.down[a] = down
	f.mu.Unlock()
}

// waitLong bounds every wait: generous, so that a busy machine makes the
// tests slower, never failing.
const waitLong = 20 * time.Second

func waitNotify(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLong):
		t.Fatal("no notification")
	}
}

// waitStopped waits until every check goroutine of c has returned.
func waitStopped(t *testing.T, c *Checker) {
	t.Helper()
	stopped := make(chan struct{})
	go func() { c.wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(waitLong):
		t.Fatal("check goroutines still running")
	}
}

func TestCheckerNotifiesAndReportsHealthy(t *testing.T) {
	a := netip.MustParseAddrPort("10.0.0.2:80")
	b := netip.MustParseAddrPort("10.0.0.3:80")
	f := &fakeDial{down: map[netip.AddrPort]bool{}}
	notify := make(chan struct{}, 16)
	c := New([]Spec{{Service: "web", Backends: []netip.AddrPort{a, b}, Interval: 5 * time.Millisecond, Timeout: time.Second, Down: 2, Up: 2}},
		Options{Dial: f.dial, Notify: func() { notify <- struct{}{} }})
	defer c.Close()
	if got := c.Healthy()["web"]; !reflect.DeepEqual(got, []netip.AddrPort{a, b}) {
		t.Fatalf("at start Healthy = %v, want both", got)
	}
	f.set(b, true)
	waitNotify(t, notify)
	if got := c.Healthy()["web"]; !reflect.DeepEqual(got, []netip.AddrPort{a}) {
		t.Fatalf("after b died Healthy = %v, want [a]", got)
	}
	st := c.Status()
	if len(st) != 1 || len(st[0].Backends) != 2 || st[0].Backends[1].Healthy || st[0].Backends[1].LastError == "" || !st[0].Backends[0].Healthy {
		t.Errorf("Status = %+v", st)
	}
	f.set(b, false)
	waitNotify(t, notify)
	if got := c.Healthy()["web"]; !reflect.DeepEqual(got, []netip.AddrPort{a, b}) {
		t.Fatalf("after b came back Healthy = %v, want both", got)
	}
}

func TestCheckerUpdateKeepsStateAndStopsRemoved(t *testing.T) {
	a := netip.MustParseAddrPort("10.0.0.2:80")
	b := netip.MustParseAddrPort("10.0.0.3:80")
	f := &fakeDial{down: map[netip.AddrPort]bool{a: true}}
	notify := make(chan struct{}, 16)
	spec := Spec{Service: "web", Backends: []netip.AddrPort{a}, Interval: 5 * time.Millisecond, Timeout: time.Second, Down: 1, Up: 1}
	c := New([]Spec{spec}, Options{Dial: f.dial, Notify: func() { notify <- struct{}{} }})
	defer c.Close()
	waitNotify(t, notify)
	spec.Backends = []netip.AddrPort{a, b}
	c.Update([]Spec{spec})
	if got := c.Healthy()["web"]; !reflect.DeepEqual(got, []netip.AddrPort{b}) {
		t.Fatalf("after Update Healthy = %v, want [b] (a stays down, b starts healthy)", got)
	}
	c.Update([]Spec{{Service: "web", Backends: []netip.AddrPort{a, b}, Unchecked: true}})
	if got := c.Healthy(); len(got) != 0 {
		t.Fatalf("with the check off Healthy = %v, want nothing (all in the set)", got)
	}
	if st := c.Status(); len(st) != 1 || st[0].Checked || len(st[0].Backends) != 2 || !st[0].Backends[0].Healthy || st[0].Backends[0].Checked {
		t.Fatalf("with the check off Status = %+v", st)
	}
	// The checks of the removed backends end: every goroutine returns
	// (a check that went on would keep Wait from returning).
	waitStopped(t, c)
}

// TestCheckerRealConnect: the default dialer is a real TCP connect; a
// closed listener is a failure (not an answer, as for uplink probes).
func TestCheckerRealConnect(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	notify := make(chan struct{}, 16)
	c := New([]Spec{{Service: "s", Backends: []netip.AddrPort{addr}, Interval: 10 * time.Millisecond, Timeout: time.Second, Down: 1, Up: 1}},
		Options{Notify: func() { notify <- struct{}{} }})
	defer c.Close()
	for deadline := time.Now().Add(waitLong); !c.Status()[0].Backends[0].Checked; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the backend was never checked")
		}
	}
	if st := c.Status(); !st[0].Backends[0].Healthy {
		t.Fatalf("listening backend: %+v", st)
	}
	ln.Close()
	waitNotify(t, notify)
	if got := c.Healthy()["s"]; len(got) != 0 {
		t.Fatalf("closed listener still healthy: %v", got)
	}
}

func TestSpecs(t *testing.T) {
	ap := netip.MustParseAddrPort
	check := policy.ServiceCheck{Enabled: true, Interval: time.Second, Timeout: 500 * time.Millisecond, Down: 2, Up: 3, Port: 22}
	svc := []policy.Service{
		{Name: "ssh", Backends: []policy.ServiceBackend{{Address: ap("10.0.0.2:22"), Weight: 1}, {Address: ap("10.0.0.3:22"), Weight: 2}}, Check: check},
		{Name: "dns", Proto: policy.ProtoUDP, Backends: []policy.ServiceBackend{{Address: ap("10.0.0.4:53"), Weight: 1}}},
	}
	for _, tc := range []struct {
		name string
		lan  policy.LAN
		want []Spec
	}{
		{"backends on the LAN: bound to it", policy.LAN{Interface: "eth0", Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}, []Spec{
			{Service: "ssh", Backends: []netip.AddrPort{ap("10.0.0.2:22"), ap("10.0.0.3:22")}, Port: 22, Iface: "eth0", Interval: time.Second, Timeout: 500 * time.Millisecond, Down: 2, Up: 3},
			{Service: "dns", Backends: []netip.AddrPort{ap("10.0.0.4:53")}, Iface: "eth0", Unchecked: true},
		}},
		{"no LAN networks: not bound", policy.LAN{Interface: "eth0"}, []Spec{
			{Service: "ssh", Backends: []netip.AddrPort{ap("10.0.0.2:22"), ap("10.0.0.3:22")}, Port: 22, Interval: time.Second, Timeout: 500 * time.Millisecond, Down: 2, Up: 3},
			{Service: "dns", Backends: []netip.AddrPort{ap("10.0.0.4:53")}, Unchecked: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Specs(&policy.Config{LAN: tc.lan, Services: svc}); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestCheckerLastError: the status names the check's own error; only a
// dial that ran out of time is "no answer within TIMEOUT".
func TestCheckerLastError(t *testing.T) {
	a := netip.MustParseAddrPort("10.0.0.2:80")
	for _, tc := range []struct {
		name string
		dial DialFunc
		want string
	}{
		{"refused", func(context.Context, string, netip.AddrPort) error {
			return errors.New("dial tcp4 10.0.0.2:80: connect: connection refused")
		}, "dial tcp4 10.0.0.2:80: connect: connection refused"},
		{"no answer", func(ctx context.Context, _ string, _ netip.AddrPort) error {
			<-ctx.Done()
			return ctx.Err()
		}, "no answer within 20ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notify := make(chan struct{}, 16)
			c := New([]Spec{{Service: "web", Backends: []netip.AddrPort{a}, Interval: 5 * time.Millisecond, Timeout: 20 * time.Millisecond, Down: 1, Up: 1}},
				Options{Dial: tc.dial, Notify: func() { notify <- struct{}{} }})
			defer c.Close()
			waitNotify(t, notify)
			if b := c.Status()[0].Backends[0]; b.Healthy || b.LastError != tc.want {
				t.Errorf("backend %+v, want unhealthy with last error %q", b, tc.want)
			}
		})
	}
}
