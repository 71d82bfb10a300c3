package daemon

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// bloatConfig: ppp0 (tier 1) and ppp1 (tier 2), ppp0 checked with the
// default schedule, and with the traffic trigger and warn_latency when
// asked ("" leaves it out).
func bloatConfig(trigger bool, warnLatency string) string {
	check := `  [uplink.check]
  targets = ["192.0.2.1", "192.0.2.2"]
`
	if trigger {
		check += "  traffic_trigger = true\n"
	}
	if warnLatency != "" {
		check += "  warn_latency = \"" + warnLatency + "\"\n"
	}
	return `
[lan]
interface = "lan0"
networks = ["10.0.0.0/24"]

[[uplink]]
name = "ppp0"
kind = "ppp"
table = 200
rule_priority = 200
tier = 1
` + check + `
[[uplink]]
name = "ppp1"
kind = "ppp"
table = 201
rule_priority = 300
tier = 2

[firewall]
backend = "nftables"
`
}

// download serves size bytes to every connection on an inet host's addr
// and starts one download from the LAN host; the returned channel yields
// how many bytes arrived and when the download ended.
func download(t *testing.T, l *lab.Lab, addr string, size int64) <-chan int64 {
	t.Helper()
	ln, err := l.ListenIn(l.Inet, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Loss-based congestion control fills the queue, as
				// most senders on the Internet do (the lab's default
				// may be BBR, which keeps queues short).
				if rc, err := c.(*net.TCPConn).SyscallConn(); err == nil {
					_ = rc.Control(func(fd uintptr) {
						_ = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, "cubic")
					})
				}
				_, _ = io.CopyN(c, zeros{}, size)
			}()
		}
	}()
	c, err := l.DialIn(l.LAN, "tcp", "", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int64, 1)
	go func() {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(3 * waitLong))
		n, _ := io.Copy(io.Discard, c)
		done <- n
	}()
	return done
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestLabBufferbloat: a token bucket on ppp0's ISP (8 Mbit/s downstream,
// a 400 ms queue) and a saturating TCP download through ppp0 make the
// probes' RTT climb without an outage. Over the whole download ppp0 never
// fails or leaves the default route: with the defaults, and with the
// traffic trigger on. It is degraded only when warn_latency is set, and
// then the status shows it. The test lasts as long as the download.
func TestLabBufferbloat(t *testing.T) {
	const size = 12 << 20 // about 12 s at 8 Mbit/s
	for _, tc := range []struct {
		name        string
		trigger     bool
		warnLatency string
	}{
		{"defaults", false, ""},
		{"traffic_trigger", true, ""},
		{"traffic_trigger and warn_latency", true, "100ms"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			l := dualLab(t)
			r := start(t, l, writeConfig(t, bloatConfig(tc.trigger, tc.warnLatency)))
			r.eventually("default via ppp0", r.has("default dev ppp0", "route", "show", "table", "157"))
			r.eventually("a probe round on ppp0", func() bool { return statusUplink(r.status(), "ppp0").RTTms != nil })
			since := statusUplink(r.status(), "ppp0").Since
			if err := l.RateLimit("ppp0", "8mbit", 400*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.RateLimit("ppp0", "", 0) })

			start := time.Now()
			done := download(t, l, "192.0.2.1:9300", size)
			var got int64
			var maxRTT float64
			degraded := false
		wait:
			for {
				select {
				case got = <-done:
					break wait
				case <-r.syncs:
				case <-time.After(100 * time.Millisecond):
				}
				u := statusUplink(r.status(), "ppp0")
				if u.RTTms != nil {
					maxRTT = max(maxRTT, *u.RTTms)
				}
				degraded = degraded || u.Degraded
				if u.State != control.StateUp || !u.Default {
					t.Fatalf("ppp0 %s (default %v: %s) %v into the download: a false failover", u.State, u.Default, u.Reason, time.Since(start).Round(time.Millisecond))
				}
			}
			took := time.Since(start)
			if got != size {
				t.Fatalf("the download got %d of %d bytes", got, size)
			}
			// The positive marker: the queue did fill (a round's RTT
			// well above the lab's sub-millisecond one).
			if maxRTT < 200 {
				t.Fatalf("the probes' RTT peaked at %.1f ms: the download did not fill the queue", maxRTT)
			}
			// The whole download, from the daemon's own record: no state
			// change since before it, no failure record.
			u := statusUplink(r.statusJSON(), "ppp0")
			if u.State != control.StateUp || !u.Since.Equal(since) {
				t.Errorf("ppp0 %s since %v, want up since %v (before the download)", u.State, u.Since, since)
			}
			for _, ev := range []string{"probe-down", "health"} {
				if recs := r.logs.records(map[string]any{"event": ev, "uplink": "ppp0"}); len(recs) != 0 {
					t.Errorf("%s records during the download: %v", ev, recs)
				}
			}
			if tc.warnLatency == "" && degraded {
				t.Error("ppp0 degraded without warn_latency")
			}
			if tc.warnLatency != "" {
				recs := r.logs.records(map[string]any{"event": "quality", "uplink": "ppp0", "level": "degraded"})
				if !degraded || len(recs) == 0 {
					t.Errorf("ppp0 never degraded with warn_latency %s and RTT up to %.0f ms (status %v, records %d)", tc.warnLatency, maxRTT, degraded, len(recs))
				} else if reason := fmt.Sprint(recs[0]["reason"]); !strings.HasPrefix(reason, "latency") {
					t.Errorf("degraded for %q, want latency", reason)
				}
			}
			t.Logf("%s: %d MiB in %v, probe RTT up to %.0f ms, degraded %v, 0 failovers", tc.name, size>>20, took.Round(time.Millisecond), maxRTT, degraded)
		})
	}
}
