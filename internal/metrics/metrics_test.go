package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
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

// unknown is a Probe without a finished round.
var unknown = Probe{Loss: -1, RTT: -1, Jitter: -1}

func TestScrape(t *testing.T) {
	r := New()
	url := serve(t, r)

	r.SetUplink("dsl", "up", Probe{Loss: 0.25, RTT: 31500 * time.Microsecond, Jitter: 2 * time.Millisecond})
	r.SetUplink("lte", "checking", unknown) // no probe round yet
	r.SetUplink(`we"ird`, "down", unknown)
	r.Transition("dsl")
	r.Transition("dsl")
	r.Reconnect("lte")
	r.SetDrained("dsl", true)
	r.SetDrained("lte", true)
	r.SetDrained("lte", false)
	r.SetDegraded("dsl", true)
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
		`uplinkd_uplink_jitter_seconds{uplink="dsl"} 0.002`,
		`uplinkd_uplink_transitions_total{uplink="dsl"} 2`,
		`uplinkd_uplink_transitions_total{uplink="lte"} 0`,
		`uplinkd_uplink_reconnects_total{uplink="lte"} 1`,
		`uplinkd_uplink_drained{uplink="dsl"} 1`,
		`uplinkd_uplink_drained{uplink="lte"} 0`,
		`uplinkd_uplink_drained{uplink="we\"ird"} 0`,
		`uplinkd_uplink_degraded{uplink="dsl"} 1`,
		`uplinkd_uplink_degraded{uplink="lte"} 0`,
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
	for _, absent := range []string{`uplinkd_uplink_loss_ratio{uplink="lte"}`, `uplinkd_uplink_rtt_seconds{uplink="lte"}`, `uplinkd_uplink_jitter_seconds{uplink="lte"}`} {
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
	r.SetUplink("dsl", "failed", unknown)
	r.RemoveUplink("lte")
	body = scrape(t, url)
	for _, gone := range []string{`uplinkd_uplink_loss_ratio{uplink="dsl"}`, `uplinkd_uplink_jitter_seconds{uplink="dsl"}`, `uplink="lte"`} {
		if strings.Contains(body, gone) {
			t.Errorf("still exported after removal: %s", gone)
		}
	}
	if !strings.Contains(body, `uplinkd_uplink_state{uplink="dsl",state="failed"} 1`) {
		t.Error("dsl state not updated to failed")
	}
}

// TestScrapeIPv6: an uplink's IPv6 side has series of its own, counts its
// own transitions, and loses them when ipv6 is turned off or the uplink
// goes; the IPv4 series are untouched by it.
func TestScrapeIPv6(t *testing.T) {
	r := New()
	url := serve(t, r)
	r.SetUplink("dsl", "up", Probe{Loss: 0, RTT: time.Millisecond, Jitter: -1})
	r.SetUplinkIPv6("dsl", "checking", unknown)
	r.SetUplinkIPv6("dsl", "checking", unknown) // no change: no transition
	r.SetUplinkIPv6("dsl", "failed", Probe{Loss: 1, RTT: -1, Jitter: -1})
	r.SetUplinkIPv6("dsl", "up", Probe{Loss: 0.5, RTT: 2 * time.Millisecond, Jitter: -1})
	r.SetUplink("lte", "up", unknown)
	r.SetUplinkIPv6("lte", "", unknown) // ipv6 off
	body := scrape(t, url)
	for _, want := range []string{
		`uplinkd_uplink_ipv6_state{uplink="dsl",state="up"} 1`,
		`uplinkd_uplink_ipv6_state{uplink="dsl",state="failed"} 0`,
		`uplinkd_uplink_ipv6_loss_ratio{uplink="dsl"} 0.5`,
		`uplinkd_uplink_ipv6_rtt_seconds{uplink="dsl"} 0.002`,
		`uplinkd_uplink_ipv6_transitions_total{uplink="dsl"} 2`,
		`uplinkd_uplink_transitions_total{uplink="dsl"} 0`,
		`uplinkd_uplink_rtt_seconds{uplink="dsl"} 0.001`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("missing %q in\n%s", want, body)
		}
	}
	for _, absent := range []string{`uplinkd_uplink_ipv6_jitter_seconds`, `uplinkd_uplink_ipv6_state{uplink="lte"`} {
		if strings.Contains(body, absent) {
			t.Errorf("exported: %s", absent)
		}
	}
	r.SetUplinkIPv6("dsl", "", unknown) // a reload turned ipv6 off
	if body := scrape(t, url); strings.Contains(body, "uplinkd_uplink_ipv6_") || !strings.Contains(body, `uplinkd_uplink_state{uplink="dsl",state="up"} 1`) {
		t.Errorf("after ipv6 off:\n%s", body)
	}
	r.SetUplinkIPv6("dsl", "up", unknown)
	r.RemoveUplink("dsl")
	if body := scrape(t, url); strings.Contains(body, `uplink="dsl"`) {
		t.Errorf("after the uplink went:\n%s", body)
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
		r.SetUplink("dsl", "up", Probe{Loss: 0.1, RTT: time.Millisecond})
		r.PublishResult("dsl", "dyn", "ok")
		r.SetSources(Sources{})
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

// TestLiveSources: services, publishers and DHCP are read from their
// sources at every scrape, one HELP/TYPE per family, and what a source no
// longer reports is gone from the next scrape.
func TestLiveSources(t *testing.T) {
	r := New()
	url := serve(t, r)
	var (
		mu       sync.Mutex
		backends = []Backend{{"web", "10.0.0.3:8080", true}, {"web", "10.0.0.4:8080", false}, {`d"ns`, "10.0.0.5:53", true}}
		pubs     = []Publisher{{Uplink: "dsl", Name: "dyn", Result: "ok", PublishedAt: time.Unix(1700000000, 500e6)}, {Uplink: "lte", Name: "command-1"}}
		dhcp     = DHCP{Mode: "embedded", Listening: true, Binds: 2, InUse: 3, Free: 97, Resting: 1, Dropped: 5}
		dhcpOn   = true
	)
	r.SetSources(Sources{
		Services:   func() []Backend { mu.Lock(); defer mu.Unlock(); return slices.Clone(backends) },
		Publishers: func() []Publisher { mu.Lock(); defer mu.Unlock(); return slices.Clone(pubs) },
		DHCP:       func() (DHCP, bool) { mu.Lock(); defer mu.Unlock(); return dhcp, dhcpOn },
		Traffic: func() []Traffic {
			return []Traffic{{Uplink: "dsl", Direction: "in", Packets: 10, Bytes: 12345}, {Uplink: "dsl", Direction: "out", Packets: 7, Bytes: 700}}
		},
	})
	r.PublishResult("dsl", "dyn", "retry")
	r.PublishResult("dsl", "dyn", "ok")
	r.PublishResult("dsl", "dyn", "ok")

	body := scrape(t, url)
	for _, want := range []string{
		`uplinkd_service_backend_healthy{service="web",backend="10.0.0.3:8080"} 1`,
		`uplinkd_service_backend_healthy{service="web",backend="10.0.0.4:8080"} 0`,
		`uplinkd_service_backend_healthy{service="d\"ns",backend="10.0.0.5:53"} 1`,
		`uplinkd_publisher_last_result{uplink="dsl",publisher="dyn",result="ok"} 1`,
		`uplinkd_publisher_last_result{uplink="dsl",publisher="dyn",result="retry"} 0`,
		`uplinkd_publisher_last_result{uplink="lte",publisher="command-1",result="none"} 1`,
		`uplinkd_publisher_published_timestamp_seconds{uplink="dsl",publisher="dyn"} 1.7000000005e+09`,
		`uplinkd_publisher_attempts_total{uplink="dsl",publisher="dyn",result="ok"} 2`,
		`uplinkd_publisher_attempts_total{uplink="dsl",publisher="dyn",result="retry"} 1`,
		`uplinkd_dhcp_up{mode="embedded"} 1`,
		`uplinkd_dhcp_listening 1`,
		`uplinkd_dhcp_binds_total 2`,
		`uplinkd_dhcp_leases_in_use 3`,
		`uplinkd_dhcp_leases_free 97`,
		`uplinkd_dhcp_addresses_resting 1`,
		`uplinkd_dhcp_dropped_packets_total 5`,
		`# TYPE uplinkd_service_backend_healthy gauge`,
		`# TYPE uplinkd_dhcp_dropped_packets_total counter`,
		`# TYPE uplinkd_publisher_attempts_total counter`,
		`uplinkd_uplink_traffic_bytes_total{uplink="dsl",direction="in"} 12345`,
		`uplinkd_uplink_traffic_packets_total{uplink="dsl",direction="out"} 7`,
		`# TYPE uplinkd_uplink_traffic_bytes_total counter`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("missing %q", want)
		}
	}
	if strings.Contains(body, `published_timestamp_seconds{uplink="lte"`) {
		t.Error("a publisher that never published has a publish time")
	}
	types := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		if f, ok := strings.CutPrefix(l, "# TYPE "); ok {
			types[strings.Fields(f)[0]]++
			continue
		}
		if !strings.HasPrefix(l, "#") && !sample.MatchString(l) {
			t.Errorf("not a valid sample line: %q", l)
		}
	}
	for name, n := range types {
		if n != 1 {
			t.Errorf("%d TYPE lines for %s", n, name)
		}
	}

	// The sources change: the next scrape follows.
	mu.Lock()
	backends = backends[:1]
	dhcp = DHCP{Mode: "service", Restarts: 4}
	mu.Unlock()
	body = scrape(t, url)
	for _, want := range []string{`uplinkd_dhcp_up{mode="service"} 1`, `uplinkd_dhcp_service_restarts_total 4`} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("missing %q", want)
		}
	}
	for _, gone := range []string{`backend="10.0.0.4:8080"`, `uplinkd_dhcp_leases_in_use`} {
		if strings.Contains(body, gone) {
			t.Errorf("still exported: %s", gone)
		}
	}
	mu.Lock()
	dhcpOn = false
	mu.Unlock()
	if body = scrape(t, url); strings.Contains(body, "uplinkd_dhcp_") {
		t.Error("DHCP series with [lan.dhcp] off")
	}
}

// TestDocumentedMetrics: docs/metrics.md lists exactly the families the
// registry exports (every series set, DHCP in both modes), with their
// types.
func TestDocumentedMetrics(t *testing.T) {
	data, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{} // name → type
	row := regexp.MustCompile("^\\| `(uplinkd_[a-z0-9_]+)` \\| ([a-z]+) \\|")
	for _, line := range strings.Split(string(data), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			documented[m[1]] = m[2]
		}
	}
	if len(documented) == 0 {
		t.Fatal("no metrics table in docs/metrics.md")
	}

	r := New()
	url := serve(t, r)
	r.PassDone(time.Millisecond, true)
	r.Repair()
	r.Overflow()
	r.SetUplink("dsl", "up", Probe{Loss: 0.5, RTT: time.Millisecond, Jitter: time.Millisecond})
	r.Transition("dsl")
	r.Reconnect("dsl")
	r.SetUplinkIPv6("dsl", "up", Probe{Loss: 0.5, RTT: time.Millisecond, Jitter: time.Millisecond})
	r.SetHARole("master", time.Now())
	r.PublishResult("dsl", "dyn", "ok")
	var mu sync.Mutex
	dhcp := DHCP{Mode: "embedded"}
	r.SetSources(Sources{
		Services: func() []Backend { return []Backend{{"web", "10.0.0.3:80", true}} },
		Publishers: func() []Publisher {
			return []Publisher{{Uplink: "dsl", Name: "dyn", Result: "ok", PublishedAt: time.Now()}}
		},
		DHCP:    func() (DHCP, bool) { mu.Lock(); defer mu.Unlock(); return dhcp, true },
		Traffic: func() []Traffic { return []Traffic{{Uplink: "dsl", Direction: "in", Packets: 1, Bytes: 100}} },
		LAN6: func() []Delegation {
			return []Delegation{{Uplink: "dsl", Prefix: "2001:db8:a::/56", Source: "learned", PreferredUntil: time.Now(), ValidUntil: time.Now()}}
		},
		RA: func() (RA, bool) {
			return RA{Prefixes: []RAPrefix{{Prefix: "2001:db8:a::/64", Uplink: "dsl", Preferred: time.Hour, Valid: time.Hour}},
				RouterLifetime: time.Hour, Sent: 3, LastSent: time.Now()}, true
		},
	})
	exported := map[string]string{}
	collect := func() {
		for _, line := range strings.Split(scrape(t, url), "\n") {
			if f, ok := strings.CutPrefix(line, "# TYPE "); ok && strings.HasPrefix(f, "uplinkd_") {
				name, typ, _ := strings.Cut(f, " ")
				exported[name] = typ
			}
		}
	}
	collect()
	mu.Lock()
	dhcp = DHCP{Mode: "service"}
	mu.Unlock()
	collect()
	for name, typ := range exported {
		if d, ok := documented[name]; !ok {
			t.Errorf("%s (%s) is exported but not in docs/metrics.md", name, typ)
		} else if d != typ {
			t.Errorf("%s is a %s, docs/metrics.md says %s", name, typ, d)
		}
	}
	for name := range documented {
		if _, ok := exported[name]; !ok {
			t.Errorf("docs/metrics.md lists %s, which is not exported", name)
		}
	}
}
