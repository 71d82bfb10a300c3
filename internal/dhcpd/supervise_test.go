package dhcpd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// startSupervised runs a mode-service server whose restart action is
// replaced by a recorder.
func startSupervised(t *testing.T, svc Service, restart func(ctx context.Context, start bool) error) *Server {
	t.Helper()
	s, err := New(Spec{Mode: ModeService, Interface: "lan0", Service: svc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if restart != nil {
		s.sup.restart = restart
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return")
		}
	})
	return s
}

type recorder struct {
	mu    sync.Mutex
	calls []bool // start flags
	at    []time.Time
}

func (r *recorder) restart(_ context.Context, start bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, start)
	r.at = append(r.at, time.Now())
	return nil
}

func (r *recorder) waitCalls(t *testing.T, n int, within time.Duration) []bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r.mu.Lock()
		c := append([]bool(nil), r.calls...)
		r.mu.Unlock()
		if len(c) >= n || time.Now().After(deadline) {
			return c
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSupervisorWhenToRestart(t *testing.T) {
	tests := []struct {
		name   string
		svc    Service
		events []bool
		want   []bool // start flag of each action
	}{
		{name: "unit: first up starts it if needed", svc: Service{Unit: "x.service"}, events: []bool{true}, want: []bool{true}},
		{name: "command: first up runs nothing", svc: Service{Command: []string{"true"}}, events: []bool{true}, want: nil},
		{name: "down then up restarts", svc: Service{Command: []string{"true"}}, events: []bool{false, true}, want: []bool{false}},
		{name: "up, down, up: start then restart", svc: Service{Unit: "x.service", MinInterval: time.Millisecond}, events: []bool{true, false, true}, want: []bool{true, false}},
		{name: "down only", svc: Service{Command: []string{"true"}}, events: []bool{false}, want: nil},
		{name: "repeated up is no flap", svc: Service{Command: []string{"true"}}, events: []bool{false, true, true, true}, want: []bool{false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r recorder
			s := startSupervised(t, tt.svc, r.restart)
			for _, up := range tt.events {
				s.LinkChanged(up)
				time.Sleep(20 * time.Millisecond) // let each event be seen on its own
			}
			got := r.waitCalls(t, len(tt.want)+1, 300*time.Millisecond)
			if len(got) != len(tt.want) {
				t.Fatalf("actions %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("actions %v, want %v", got, tt.want)
				}
			}
		})
	}
}

// A flapping link gets one restart at once and one more when MinInterval
// has passed, not one per flap; LinkChanged never waits for a restart.
func TestSupervisorRateLimit(t *testing.T) {
	var r recorder
	slow := func(ctx context.Context, start bool) error {
		time.Sleep(200 * time.Millisecond) // a slow unit restart
		return r.restart(ctx, start)
	}
	s := startSupervised(t, Service{Command: []string{"true"}, MinInterval: 700 * time.Millisecond}, slow)
	begin := time.Now()
	for range 10 {
		s.LinkChanged(false)
		time.Sleep(5 * time.Millisecond)
		s.LinkChanged(true)
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(begin); d > 150*time.Millisecond+10*10*time.Millisecond {
		t.Errorf("LinkChanged blocked: 20 calls took %s", d)
	}
	got := r.waitCalls(t, 3, 2*time.Second)
	if len(got) != 2 {
		t.Fatalf("%d restarts for 10 flaps, want 2 (one now, one after the interval)", len(got))
	}
	if gap := r.at[1].Sub(r.at[0]); gap < 700*time.Millisecond-50*time.Millisecond {
		t.Errorf("second restart %s after the first, want >= MinInterval", gap)
	}
	if st := s.Status(); st.Restarts != 2 {
		t.Errorf("status restarts %d", st.Restarts)
	}
}

// The configured command really runs, as argv without a shell, with the
// interface in its environment; a failing command shows in status.
func TestSupervisorRunsCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	s := startSupervised(t, Service{Command: []string{"/bin/sh", "-c", `echo "$UPLINKD_IFACE $UPLINKD_EVENT" > "$0"`, out}}, nil)
	s.LinkChanged(false)
	s.LinkChanged(true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		if strings.TrimSpace(string(b)) == "lan0 lan-up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("command output %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}

	f := startSupervised(t, Service{Command: []string{"/bin/false"}}, nil)
	f.LinkChanged(false)
	f.LinkChanged(true)
	deadline = time.Now().Add(5 * time.Second)
	for f.Status().LastError == "" {
		if time.Now().After(deadline) {
			t.Fatal("failed command not in status")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := f.Status(); st.Restarts != 0 {
		t.Errorf("failed restart counted: %+v", st)
	}
}
