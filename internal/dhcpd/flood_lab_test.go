package dhcpd

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// syncBuffer is a log sink the server's goroutines write while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// lines returns the logged lines that contain s.
func (w *syncBuffer) lines(s string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, l := range strings.Split(w.b.String(), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// A LAN host asking a full pool again and again (issue 17: 5,022 WARN lines
// in 4 s) gets one warning per interval, and the next one says how many
// were suppressed. Real DISCOVERs over UDP from the lab's LAN namespace.
func TestLabPoolExhaustedFloodRateLimited(t *testing.T) {
	d := newDHCPLab(t)
	var logs syncBuffer
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	s := d.startWith(d.spec("10.0.0.100", "10.0.0.100"), slog.New(slog.NewTextHandler(&logs, nil)), func(s *Server) {
		s.h.lanWarn.Now = func() time.Time { return time.Unix(0, now.Load()) }
	})
	var conn net.Conn
	if err := d.Do(d.LAN, func() (err error) {
		conn, err = net.Dial("udp4", "10.0.0.1:67")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	exhausted := func() uint64 { return s.Status().Counters["pool_exhausted"] }

	// The only pool address is offered to the first host...
	if _, err := conn.Write(msg(t, dhcpv4.MessageTypeDiscover, hw(1))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an offer to the first host", func() bool { return s.Status().Counters["offer"] >= 1 })
	// ... and a second one floods the server with DISCOVERs.
	const flood = 2000
	discover := msg(t, dhcpv4.MessageTypeDiscover, hw(2))
	deadline := time.Now().Add(60 * time.Second)
	for exhausted() < flood {
		if time.Now().After(deadline) {
			t.Fatalf("the server saw %d of %d DISCOVERs on a full pool", exhausted(), flood)
		}
		for range 50 {
			if _, err := conn.Write(discover); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond) // pace the flood so the socket buffer keeps up
	}
	n := exhausted()
	got := logs.lines("dhcp_pool_exhausted")
	if len(got) != 1 {
		t.Fatalf("%d DISCOVERs on a full pool logged %d warnings, want 1 per interval:\n%s", n, len(got), strings.Join(got[:min(len(got), 5)], "\n"))
	}
	t.Logf("%d DISCOVERs on a full pool: %d log line", n, len(got))

	// After the interval the next one is logged with the count.
	now.Add(int64(warnEvery))
	if _, err := conn.Write(discover); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a second warning", func() bool { return len(logs.lines("dhcp_pool_exhausted")) == 2 })
	second := logs.lines("dhcp_pool_exhausted")[1]
	// Every DISCOVER since the first warning was suppressed: at least the
	// n-1 counted above (more may have arrived after n was read).
	var suppressed uint64
	for _, f := range strings.Fields(second) {
		if v, ok := strings.CutPrefix(f, "suppressed="); ok {
			for _, c := range v {
				suppressed = suppressed*10 + uint64(c-'0')
			}
		}
	}
	if suppressed < n-1 || suppressed >= exhausted() {
		t.Errorf("second warning says suppressed=%d, want %d..%d: %s", suppressed, n-1, exhausted()-1, second)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
