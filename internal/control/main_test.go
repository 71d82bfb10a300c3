package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// clientEnv makes the test binary act as a control client (re-executed as
// another user by the permission tests) instead of running tests.
const clientEnv = "UPLINKD_CONTROL_TEST_CLIENT"

func TestMain(m *testing.M) {
	if path := os.Getenv(clientEnv); path != "" {
		os.Exit(clientMain(path))
	}
	if path := os.Getenv(hostileEnv); path != "" {
		os.Exit(hostileMain(path))
	}
	goleak.VerifyTestMain(m)
}

// clientMain asks for the status and prints how it went in one line:
// "ok", "remote: MSG" (the daemon refused) or "transport: MSG".
func clientMain(path string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Call(ctx, path, Request{Cmd: CmdStatus})
	var re *RemoteError
	switch {
	case err == nil:
		fmt.Println("ok")
	case errors.As(err, &re):
		fmt.Println("remote: " + re.Msg)
	default:
		fmt.Println("transport: " + err.Error())
	}
	return 0
}

// fakeHandler answers like a daemon with two uplinks. block, when set, makes
// Status wait for it (or ctx) after announcing itself on entered.
type fakeHandler struct {
	problems []string
	block    chan struct{}
	entered  chan struct{}

	mu     sync.Mutex
	events []Event
	drains []Drain
}

func (f *fakeHandler) Status(ctx context.Context) (Status, error) {
	if f.block != nil {
		f.entered <- struct{}{}
		select {
		case <-f.block:
		case <-ctx.Done():
			return Status{}, ctx.Err()
		}
	}
	return sampleStatus(), nil
}

func (f *fakeHandler) Reconnect(_ context.Context, uplink string) error {
	if uplink != "ppp0" && uplink != "wlan" {
		return fmt.Errorf("no uplink named %q", uplink)
	}
	return nil
}

func (f *fakeHandler) Reload(context.Context) ([]string, error) { return f.problems, nil }

func (f *fakeHandler) Event(_ context.Context, ev Event) error {
	if ev.Role != "" {
		return errors.New("ha roles are not supported yet")
	}
	f.mu.Lock()
	f.events = append(f.events, ev)
	f.mu.Unlock()
	return nil
}

func (f *fakeHandler) Drain(_ context.Context, d Drain) error {
	if d.Uplink != "ppp0" && d.Uplink != "wlan" {
		return fmt.Errorf("no uplink named %q", d.Uplink)
	}
	if d.Uplink == "ppp0" && !d.Undrain && !d.Force {
		return errors.New("ppp0 is the last uplink that carries the default route")
	}
	f.mu.Lock()
	f.drains = append(f.drains, d)
	f.mu.Unlock()
	return nil
}

func answers(path string) bool {
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func f64(v float64) *float64 { return &v }

// sampleStatus covers every field of the schema, optional ones set on one
// uplink and absent on the other.
func sampleStatus() Status {
	t0 := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	return Status{
		Daemon: Daemon{
			Version: "0.3.0", PID: 4242, Started: t0, Config: "/etc/uplinkd/uplinkd.toml",
			ConfigLoaded: t0.Add(90 * time.Minute), LastPass: t0.Add(2*time.Hour - 3*time.Second),
			Passes: 1234, Repairs: 2,
		},
		Uplinks: []Uplink{
			{
				Name: "ppp0", Interface: "ppp0", Kind: "ppp", State: StateUp, Reason: "probes answer",
				Address: netip.MustParseAddr("203.0.113.7"), Gateway: netip.MustParseAddr("198.51.100.1"),
				Table: 201, Tier: 1, Weight: 2, Default: true, Loss: f64(0), RTTms: f64(12.25),
				Since: t0.Add(30 * time.Minute), Reconnects: 1,
				LastEvent: &LastEvent{Name: "probe-up", At: t0.Add(30 * time.Minute)},
			},
			{
				Name: "wlan", Interface: "wlan0", Kind: "wlan", State: StateDown, Reason: "no carrier",
				Table: 202, Tier: 2, Weight: 1, Since: t0.Add(118 * time.Minute), Reconnects: 3,
				LastEvent: &LastEvent{Name: "link-down", At: t0.Add(118 * time.Minute)},
			},
		},
		Publishers: []Publisher{{
			Uplink: "ppp0", Name: "dyn", Kind: "dyndns2", Address: netip.MustParseAddr("203.0.113.7"),
			PublishedAt: t0.Add(31 * time.Minute), Result: "ok", Reply: "good", LastAttempt: t0.Add(31 * time.Minute),
		}, {
			Uplink: "wlan", Name: "command-1", Kind: "command", Pending: netip.MustParseAddr("192.0.2.10"),
			Result: "retry", Reply: "exit 1", Reason: "command exited with status 1",
			LastAttempt: t0.Add(119 * time.Minute), NextTry: t0.Add(121 * time.Minute),
		}},
		DHCP: &DHCP{
			Mode: "embedded", Interface: "lan0", Listening: true, Binds: 2, InUse: 1, Free: 99, StaticHosts: 1,
			Leases: []DHCPLease{{IP: netip.MustParseAddr("10.0.0.100"), MAC: "dc:a6:32:90:31:cc", Hostname: "pi",
				State: "bound", Expires: t0.Add(150 * time.Minute)}},
		},
	}
}

// serveT runs Serve in the background until the test ends, and fails the
// test if Serve fails or does not return.
func serveT(t testing.TB, opts Options, h Handler) (path string, stop func()) {
	t.Helper()
	if opts.Path == "" {
		opts.Path = t.TempDir() + "/uplinkd.sock"
	}
	if opts.Group == 0 {
		opts.Group = -1
	}
	// A stale socket may already be there (and its inode number be reused):
	// then only an answer shows the new one. Looked at before Serve starts:
	// after, its own new socket would count as stale, and the probe's
	// connection would hold one of the server's slots for a moment (TestBusy,
	// with two slots, then found its second request refused as busy).
	_, err := os.Lstat(opts.Path)
	stale := err == nil
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, opts, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Serve did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	for i := 0; ; i++ {
		if fi, err := os.Lstat(opts.Path); err == nil && fi.Mode().Type() == os.ModeSocket && (!stale || answers(opts.Path)) {
			return opts.Path, stop
		}
		select {
		case err := <-done:
			t.Fatalf("Serve: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if i > 1000 {
			t.Fatal("socket never appeared")
		}
	}
}
