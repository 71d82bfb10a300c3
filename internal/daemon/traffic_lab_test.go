package daemon

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// echoServer echoes UDP datagrams on an inet host until the test ends.
func echoServer(tb testing.TB, l *lab.Lab, addr string) {
	tb.Helper()
	pc, err := l.ListenPacketIn(l.Inet, "udp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// echoFlow sends a small UDP datagram from the LAN host to an inet echo
// server every millisecond and records when the replies arrive: a
// two-way flow like a call, the traffic the trigger watches.
type echoFlow struct {
	mu      sync.Mutex
	replies int
	last    time.Time
	stop    chan struct{}
	done    sync.WaitGroup
}

func startEchoFlow(tb testing.TB, l *lab.Lab, addr string) *echoFlow {
	tb.Helper()
	c, err := l.DialIn(l.LAN, "udp", "", addr, time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	f := &echoFlow{stop: make(chan struct{})}
	f.done.Add(2)
	go func() {
		defer f.done.Done()
		buf := make([]byte, 2048)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue
				}
				return
			}
			f.mu.Lock()
			f.replies++
			f.last = time.Now()
			f.mu.Unlock()
		}
	}()
	go func() {
		defer f.done.Done()
		defer c.Close()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		msg := make([]byte, 64)
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			_, _ = c.Write(msg) // unreachable while failing over: lost
		}
	}()
	tb.Cleanup(f.close)
	return f
}

func (f *echoFlow) state() (int, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replies, f.last
}

func (f *echoFlow) close() {
	select {
	case <-f.stop:
		return
	default:
	}
	close(f.stop)
	f.done.Wait()
}

// scrapeMetrics returns the metrics page of a daemon started with a
// metrics listener.
func scrapeMetrics(t *testing.T, r *running) string {
	t.Helper()
	resp, err := http.Get("http://" + r.d.x.metricsAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricValue is the value of the sample named exactly series, or -1.
func metricValue(body, series string) float64 {
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func (r *running) status() control.Status {
	r.t.Helper()
	resp, err := r.call(control.Request{Cmd: control.CmdStatus})
	if err != nil || resp.Status == nil {
		r.t.Fatalf("status: %v", err)
	}
	return *resp.Status
}

func statusUplink(st control.Status, name string) control.Uplink {
	for _, u := range st.Uplinks {
		if u.Name == name {
			return u
		}
	}
	return control.Uplink{}
}

// TestLabTrafficCounters sends a known number of bytes from the LAN through
// ppp0 (tier 1) and checks the counters in `status --json` and the metrics
// against them, within 1 %, with both firewall backends.
func TestLabTrafficCounters(t *testing.T) {
	const n, payload = 2000, 1000
	const ipLen = payload + 28
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			l := dualLab(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cfg := tieredConfig(backend) + "\n[daemon]\nmetrics_listen = \"" + ln.Addr().String() + "\"\n"
			r := startWith(t, l, writeConfig(t, cfg), ln)
			r.eventually("default via ppp0", r.has("default dev ppp0", "route", "show", "table", "157"))
			echoServer(t, l, "192.0.2.1:9000")

			// The real `uplinkd status --json`.
			st0 := r.statusJSON()
			before, other := statusUplink(st0, "ppp0").Traffic, statusUplink(st0, "ppp1").Traffic
			mBefore := scrapeMetrics(t, r)
			if before == nil || other == nil {
				t.Fatalf("no traffic counters in the status: %+v", st0.Uplinks)
			}
			c, err := l.DialIn(l.LAN, "udp", "", "192.0.2.1:9000", time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg, buf := make([]byte, payload), make([]byte, 2048)
			for i := range n {
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(buf); err != nil {
					t.Fatalf("echo %d: %v", i, err)
				}
			}
			st := r.statusJSON()
			after, otherAfter := statusUplink(st, "ppp0").Traffic, statusUplink(st, "ppp1").Traffic
			mAfter := scrapeMetrics(t, r)
			for _, d := range []struct {
				dir        string
				b, a, o, p control.Count
			}{
				{"in", before.In, after.In, other.In, otherAfter.In},
				{"out", before.Out, after.Out, other.Out, otherAfter.Out},
				{"forward_in", before.ForwardIn, after.ForwardIn, other.ForwardIn, otherAfter.ForwardIn},
				{"forward_out", before.ForwardOut, after.ForwardOut, other.ForwardOut, otherAfter.ForwardOut},
			} {
				pk, by := d.a.Packets-d.b.Packets, d.a.Bytes-d.b.Bytes
				if !near(float64(pk), n) || !near(float64(by), n*ipLen) {
					t.Errorf("status ppp0 %s: %d packets, %d bytes; want %d, %d within 1%%", d.dir, pk, by, n, n*ipLen)
				}
				if got := d.p.Packets - d.o.Packets; got > n/100 {
					t.Errorf("status ppp1 %s counted %d packets of ppp0's traffic", d.dir, got)
				}
				for _, m := range []struct {
					name string
					want float64
				}{{"bytes", n * ipLen}, {"packets", n}} {
					series := fmt.Sprintf(`uplinkd_uplink_traffic_%s_total{uplink="ppp0",direction=%q}`, m.name, d.dir)
					b, a := metricValue(mBefore, series), metricValue(mAfter, series)
					if b < 0 || a < 0 || !near(a-b, m.want) {
						t.Errorf("metrics %s: %v → %v, want +%v within 1%%", series, b, a, m.want)
					}
				}
			}
			out, err := osexec.Command(uplinkdBinary(t), "status", "--socket", r.socket).CombinedOutput()
			if err != nil || !tableHasRow(string(out), []string{"ppp0"}, []string{"pkts"}) {
				t.Errorf("uplinkd status has no traffic row for ppp0 (%v):\n%s", err, out)
			}
		})
	}
}

func near(got, want float64) bool { return got >= want*0.99 && got <= want*1.01 }

// triggerConfig: ppp0 (tier 1) and ppp1 (tier 2), checked with the default
// schedule (interval 1s, down 3) and the traffic trigger on ppp0.
func triggerConfig(backend string) string {
	var b strings.Builder
	b.WriteString("[lan]\ninterface = \"lan0\"\nnetworks = [\"10.0.0.0/24\"]\n")
	for i, name := range []string{"ppp0", "ppp1"} {
		fmt.Fprintf(&b, `
[[uplink]]
name = %q
kind = "ppp"
table = %d
rule_priority = %d
tier = %d
  [uplink.check]
  targets = ["192.0.2.1", "192.0.2.2"]
  hold_down = "0s"
  traffic_trigger = %v
`, name, 200+i, 200+100*i, i+1, i == 0)
	}
	b.WriteString("\n[firewall]\nbackend = \"" + backend + "\"\n")
	return b.String()
}

// TestLabTrafficTriggerFailover: a LAN host runs a two-way flow through
// ppp0 when ppp0's ISP turns into a blackhole (carrier stays): the traffic
// trigger fails ppp0 with the reason traffic-confirmed, and the flow's
// replies come back through ppp1. Both backends.
func TestLabTrafficTriggerFailover(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			l := dualLab(t)
			r := start(t, l, writeConfig(t, triggerConfig(backend)))
			r.eventually("default via ppp0", r.has("default dev ppp0", "route", "show", "table", "157"))
			echoServer(t, l, "192.0.2.1:9000")
			f := startEchoFlow(t, l, "192.0.2.1:9000")
			r.eventually("the flow's replies", func() bool { n, _ := f.state(); return n > 100 })

			at := time.Now()
			if err := l.Blackhole("ppp0", true); err != nil {
				t.Fatal(err)
			}
			s, ok := r.waitActive("ppp0", false, waitLong)
			if !ok {
				t.Fatal("blackholed ppp0 never left the default route")
			}
			u := statusUplink(r.status(), "ppp0")
			if u.State != control.StateFailed || !strings.HasPrefix(u.Reason, "traffic-confirmed: ") {
				t.Fatalf("ppp0 %s (%s), want failed by the traffic trigger", u.State, u.Reason)
			}
			if recs := r.logs.records(map[string]any{"event": "probe-down", "uplink": "ppp0"}); len(recs) != 1 ||
				!strings.HasPrefix(fmt.Sprint(recs[0]["reason"]), "traffic-confirmed") {
				t.Errorf("journal records of the failure: %v", recs)
			}
			// Traffic flows through ppp1: replies arrive again.
			r.eventually("replies through ppp1", func() bool { _, last := f.state(); return last.After(s.End) })
			t.Logf("%s: blackhole to ppp0 out of the default route in %v (reason %q)", backend, s.End.Sub(at), u.Reason)
		})
	}
}

// TestLabTrafficTriggerRandomLoss: 20 % random loss (nftables numgen
// random at ppp0's ISP, downstream) while a LAN host streams one-way UDP
// through ppp0, which starts a burst every interval: no burst may confirm
// an outage, and ppp0 never fails. UPLINKD_LOSS_SOAK (a duration, default
// 60s) makes it a longer soak.
func TestLabTrafficTriggerRandomLoss(t *testing.T) {
	soak := 60 * time.Second
	if v := os.Getenv("UPLINKD_LOSS_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("UPLINKD_LOSS_SOAK: %v", err)
		}
		soak = d
	}
	l := dualLab(t)
	r := start(t, l, writeConfig(t, triggerConfig("nftables")))
	r.eventually("default via ppp0", r.has("default dev ppp0", "route", "show", "table", "157"))
	if err := l.RandomLoss("ppp0", 20); err != nil {
		t.Fatal(err)
	}
	stream := startStream(t, l)
	defer stream.close()
	bursts := func() int {
		return len(r.logs.records(map[string]any{"msg": "traffic trigger: burst done", "uplink": "ppp0"}))
	}
	deadline := time.Now().Add(soak)
	for time.Now().Before(deadline) {
		select {
		case s := <-r.syncs:
			if !hasActiveT(s, "ppp0") {
				t.Fatalf("ppp0 left the default route under 20%% random loss after %d bursts: %s",
					bursts(), statusUplink(r.status(), "ppp0").Reason)
			}
		case <-time.After(time.Until(deadline)):
		}
	}
	// The positive marker: the trigger did run bursts (a one-way flow
	// starts about one per interval), and the loss was real.
	n := bursts()
	if want := int(soak / (4 * time.Second)); n < want {
		t.Errorf("only %d bursts in %v (want at least %d): the trigger was not exercised", n, soak, want)
	}
	u := statusUplink(r.status(), "ppp0")
	if u.State != control.StateUp {
		t.Errorf("ppp0 %s (%s) after the soak", u.State, u.Reason)
	}
	if recs := r.logs.records(map[string]any{"event": "probe-down", "uplink": "ppp0"}); len(recs) != 0 {
		t.Errorf("false failovers: %v", recs)
	}
	t.Logf("%v of 20%% loss: %d bursts, 0 false failovers", soak, n)
}

func hasActiveT(s SyncResult, name string) bool {
	for _, u := range s.Desired.Uplinks {
		if u.Name == name {
			return u.Active
		}
	}
	return true // not in this pass's view: no verdict
}
