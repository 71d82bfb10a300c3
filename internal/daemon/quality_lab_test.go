package daemon

import (
	"net"
	osexec "os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// degradedConfig balances ppp0 and ppp1 (one tier, weights 1 and 1) with a
// fast check (interval 200ms); ppp0 is degraded above 20 % window loss and
// then keeps 25 % of its weight. down = 10 keeps random loss on two
// targets from failing it (a round fails only when both probes are lost).
const degradedLabConfig = `
[lan]
interface = "lan0"
networks = ["10.0.0.0/24"]

[[uplink]]
name = "ppp0"
kind = "ppp"
table = 200
rule_priority = 200
  [uplink.check]
  targets = ["192.0.2.1", "192.0.2.2"]
  interval = "200ms"
  timeout = "150ms"
  down = 10
  hold_down = "0s"
  warn_loss = 0.2
  degraded_weight = 25

[[uplink]]
name = "ppp1"
kind = "ppp"
table = 201
rule_priority = 300

[firewall]
backend = "nftables"
`

// flowCounter is a UDP server on an inet host that counts the datagrams
// (one per new flow) by source address: which uplink's SNAT address each
// flow left from.
type flowCounter struct {
	mu  sync.Mutex
	by  map[string]int
	pc  net.PacketConn
	got chan struct{}
}

func newFlowCounter(t *testing.T, l *lab.Lab, addr string) *flowCounter {
	t.Helper()
	pc, err := l.ListenPacketIn(l.Inet, "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &flowCounter{by: map[string]int{}, pc: pc, got: make(chan struct{}, 1)}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			f.mu.Lock()
			f.by[from.(*net.UDPAddr).IP.String()]++
			f.mu.Unlock()
			select {
			case f.got <- struct{}{}:
			default:
			}
		}
	}()
	return f
}

func (f *flowCounter) snapshot() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]int, len(f.by))
	for k, v := range f.by {
		m[k] = v
	}
	return m
}

// flows starts n new flows from the LAN host (a new socket, so a new
// source port, each) and returns how many of them left through each
// source address. Upstream packets are not dropped by the lab's loss
// (it drops toward the customer), so every flow arrives.
func (f *flowCounter) flows(t *testing.T, l *lab.Lab, addr string, n int) map[string]int {
	t.Helper()
	before := f.snapshot()
	for range n {
		c, err := l.DialIn(l.LAN, "udp", "", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Write([]byte("flow"))
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	total := func(m map[string]int) (s int) {
		for _, v := range m {
			s += v
		}
		return s
	}
	deadline := time.After(waitLong)
	for total(f.snapshot())-total(before) < n {
		select {
		case <-f.got:
		case <-deadline:
			t.Fatalf("only %d of %d flows arrived", total(f.snapshot())-total(before), n)
		}
	}
	after := f.snapshot()
	for k, v := range before {
		after[k] -= v
	}
	return after
}

// TestLabDegradedShiftsNewFlows: 40 % random loss (downstream) at ppp0's
// ISP pushes its window loss over warn_loss: the real `uplinkd status`
// shows it degraded (text and --json), the metrics say so, the kernel's
// multipath default route gives ppp0 weight 25 against ppp1's 100, and
// new flows shift in about that ratio. With the loss gone the level
// clears after the hysteresis and the weights are 1 and 1 again.
func TestLabDegradedShiftsNewFlows(t *testing.T) {
	l := dualLab(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := startWith(t, l, writeConfig(t, degradedLabConfig+"\n[daemon]\nmetrics_listen = \""+ln.Addr().String()+"\"\n"), ln)
	route := []string{"route", "show", "default", "table", "157"}
	r.eventually("both uplinks balanced 1:1", func() bool {
		out := r.ip(route...)
		return strings.Contains(out, "dev ppp0 weight 1") && strings.Contains(out, "dev ppp1 weight 1")
	})
	fc := newFlowCounter(t, l, "192.0.2.1:9100")
	a0, a1 := l.UplinkAddr("ppp0").String(), l.UplinkAddr("ppp1").String()
	const n = 400
	share := func(m map[string]int) float64 { return float64(m[a0]) / float64(m[a0]+m[a1]) }
	base := fc.flows(t, l, "192.0.2.1:9100", n)
	if s := share(base); s < 0.3 || s > 0.7 {
		t.Fatalf("ppp0 took %.0f%% of new flows before any loss (%v), want about half", s*100, base)
	}

	if err := l.RandomLoss("ppp0", 40); err != nil {
		t.Fatal(err)
	}
	r.eventually("ppp0 degraded in the kernel route (weight 25 against 100)", func() bool {
		out := r.ip(route...)
		return strings.Contains(out, "dev ppp0 weight 25") && strings.Contains(out, "dev ppp1 weight 100")
	})
	u := statusUplink(r.statusJSON(), "ppp0")
	if !u.Degraded || u.State != control.StateUp || !strings.Contains(u.QualityReason, "warn_loss 20%") {
		t.Fatalf("status --json ppp0: degraded %v state %s quality_reason %q", u.Degraded, u.State, u.QualityReason)
	}
	if w := u.Window; w == nil || w.Rounds < 10 || w.Loss <= 0.2 || w.RTTms == nil || w.JitterMs == nil {
		t.Errorf("status --json ppp0 window %+v: want a full window with loss above 20%%, an RTT and a jitter", w)
	}
	out, err := osexec.Command(uplinkdBinary(t), "status", "--socket", r.socket).CombinedOutput()
	if err != nil || !tableHasRow(string(out), []string{"ppp0", "ppp0", "degraded"}, nil) {
		t.Errorf("uplinkd status does not show ppp0 degraded (%v):\n%s", err, out)
	}
	if v := metricValue(scrapeMetrics(t, r), `uplinkd_uplink_degraded{uplink="ppp0"}`); v != 1 {
		t.Errorf("uplinkd_uplink_degraded{uplink=\"ppp0\"} = %v, want 1", v)
	}
	if recs := r.logs.records(map[string]any{"event": "quality", "uplink": "ppp0", "level": "degraded"}); len(recs) == 0 {
		t.Error("no journal record of the degraded level")
	}
	deg := fc.flows(t, l, "192.0.2.1:9100", n)
	// 25:100 is 20 % for ppp0; generous bounds for the hash's spread.
	if s := share(deg); s < 0.05 || s > 0.35 {
		t.Errorf("ppp0 took %.0f%% of new flows while degraded (%v), want about 20%%", s*100, deg)
	}
	if recs := r.logs.records(map[string]any{"event": "probe-down", "uplink": "ppp0"}); len(recs) != 0 {
		t.Errorf("40%% loss on two targets failed ppp0: %v", recs)
	}

	if err := l.RandomLoss("ppp0", 0); err != nil {
		t.Fatal(err)
	}
	r.eventually("weights back to 1:1 after the hysteresis", func() bool {
		out := r.ip(route...)
		return strings.Contains(out, "dev ppp0 weight 1") && strings.Contains(out, "dev ppp1 weight 1")
	})
	if u := statusUplink(r.statusJSON(), "ppp0"); u.Degraded || !strings.Contains(u.QualityReason, "within the warnings") {
		t.Errorf("after recovery: degraded %v quality_reason %q", u.Degraded, u.QualityReason)
	}
	t.Logf("new flows on ppp0: %.0f%% balanced, %.0f%% degraded (weights 25:100)", share(base)*100, share(deg)*100)
}
