package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs ServeListener on 127.0.0.1:0 until the test ends and returns
// the scrape URL.
func serve(t *testing.T, r *Registry) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, r) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeListener: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeListener did not return")
		}
	})
	return "http://" + ln.Addr().String() + "/metrics"
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(body)
}

// sample is a valid line of the Prometheus text format: name, optional
// labels, value.
var sample = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(, ?)?)*\})? \S+$`)

func TestScrape(t *testing.T) {
	r := New()
	url := serve(t, r)

	r.SetUplink("dsl", "up", 0.25, 31500*time.Microsecond)
	r.SetUplink("lte", "checking", -1, -1) // no probe round yet
	r.SetUplink(`we"ird`, "down", -1, -1)
	r.Transition("dsl")
	r.Transition("dsl")
	r.Reconnect("lte")
	r.PassDone(400*time.Microsecond, false)
	r.PassDone(3*time.Millisecond, false)
	r.PassDone(40*time.Millisecond, true)
	r.Repair()
	r.Overflow()
	r.Overflow()

	body := scrape(t, url)
	for _, want := range []string{
		`uplinkd_uplink_state{uplink="dsl",state="up"} 1`,
		`uplinkd_uplink_state{uplink="dsl",state="down"} 0`,
		`uplinkd_uplink_state{uplink="dsl",state="checking"} 0`,
		`uplinkd_uplink_state{uplink="dsl",state="failed"} 0`,
		`uplinkd_uplink_state{uplink="lte",state="checking"} 1`,
		`uplinkd_uplink_state{uplink="we\"ird",state="down"} 1`,
		`uplinkd_uplink_loss_ratio{uplink="dsl"} 0.25`,
		`uplinkd_uplink_rtt_seconds{uplink="dsl"} 0.0315`,
		`uplinkd_uplink_transitions_total{uplink="dsl"} 2`,
		`uplinkd_uplink_transitions_total{uplink="lte"} 0`,
		`uplinkd_uplink_reconnects_total{uplink="lte"} 1`,
		`uplinkd_passes_total 3`,
		`uplinkd_pass_failures_total 1`,
		`uplinkd_pass_duration_seconds_bucket{le="0.0005"} 1`,
		`uplinkd_pass_duration_seconds_bucket{le="0.005"} 2`,
		`uplinkd_pass_duration_seconds_bucket{le="0.05"} 3`,
		`uplinkd_pass_duration_seconds_bucket{le="+Inf"} 3`,
		`uplinkd_pass_duration_seconds_count 3`,
		`uplinkd_repairs_total 1`,
		`uplinkd_netlink_overflows_total 2`,
		`# TYPE uplinkd_passes_total counter`,
		`# TYPE uplinkd_pass_duration_seconds histogram`,
		`# TYPE uplinkd_uplink_state gauge`,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("missing %q", want)
		}
	}
	for _, absent := range []string{`uplinkd_uplink_loss_ratio{uplink="lte"}`, `uplinkd_uplink_rtt_seconds{uplink="lte"}`} {
		if strings.Contains(body, absent) {
			t.Errorf("unknown value exported: %s", absent)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		if !strings.HasPrefix(l, "#") && !sample.MatchString(l) {
			t.Errorf("not a valid sample line: %q", l)
		}
	}

	// Loss becomes unknown again, and a reload removes an uplink.
	r.SetUplink("dsl", "failed", -1, -1)
	r.RemoveUplink("lte")
	body = scrape(t, url)
	for _, gone := range []string{`uplinkd_uplink_loss_ratio{uplink="dsl"}`, `uplink="lte"`} {
		if strings.Contains(body, gone) {
			t.Errorf("still exported after removal: %s", gone)
		}
	}
	if !strings.Contains(body, `uplinkd_uplink_state{uplink="dsl",state="failed"} 1`) {
		t.Error("dsl state not updated to failed")
	}
}

// TestOffIsFree: with metrics off the daemon holds a nil *Registry, and
// recording costs no allocation.
func TestOffIsFree(t *testing.T) {
	var r *Registry
	allocs := testing.AllocsPerRun(100, func() {
		r.PassDone(time.Millisecond, true)
		r.Repair()
		r.Overflow()
		r.SetUplink("dsl", "up", 0.1, time.Millisecond)
		r.Transition("dsl")
		r.Reconnect("dsl")
		r.RemoveUplink("dsl")
	})
	if allocs != 0 {
		t.Errorf("%v allocations per recording with metrics off", allocs)
	}
}

func TestServeErrors(t *testing.T) {
	if err := Serve(context.Background(), "127.0.0.1:99999", New()); err == nil {
		t.Error("Serve on a bad port did not fail")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ServeListener(context.Background(), ln, nil); err == nil {
		t.Error("ServeListener without a registry did not fail")
	}
}

// TestServeStopsMidScrape: a scraper that holds its connection open does
// not keep Serve from returning.
func TestServeStopsMidScrape(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, New()) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /metr")) // and nothing more
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}
