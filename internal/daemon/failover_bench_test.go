package daemon

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// udpStream sends a sequence-numbered UDP packet from the LAN client to an
// inet host every millisecond and records which sequence numbers arrived.
type udpStream struct {
	mu   sync.Mutex
	seq  uint32
	got  map[uint32]bool
	last uint32 // the highest sequence number that arrived
	stop chan struct{}
	done sync.WaitGroup
}

func startStream(b testing.TB, l *lab.Lab) *udpStream {
	pc, err := l.ListenPacketIn(l.Inet, "udp", "192.0.2.1:9000")
	if err != nil {
		b.Fatal(err)
	}
	c, err := l.DialIn(l.LAN, "udp", "", "192.0.2.1:9000", time.Second)
	if err != nil {
		b.Fatal(err)
	}
	s := &udpStream{got: map[uint32]bool{}, stop: make(chan struct{})}
	s.done.Add(2)
	go func() {
		defer s.done.Done()
		buf := make([]byte, 64)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n >= 4 {
				s.mu.Lock()
				q := binary.BigEndian.Uint32(buf)
				s.got[q] = true
				s.last = max(s.last, q)
				s.mu.Unlock()
			}
		}
	}()
	go func() {
		defer s.done.Done()
		defer c.Close()
		defer pc.Close()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		buf := make([]byte, 32)
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			s.mu.Lock()
			s.seq++
			binary.BigEndian.PutUint32(buf, s.seq)
			s.mu.Unlock()
			_, _ = c.Write(buf) // ENETUNREACH etc. count as loss
		}
	}()
	return s
}

func (s *udpStream) now() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// lost counts the missing sequence numbers in [from, to].
func (s *udpStream) lost(from, to uint32) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for q := from; q <= to; q++ {
		if !s.got[q] {
			n++
		}
	}
	return n
}

// waitPast waits until a packet sent after sequence number q has arrived
// and returns the highest number that arrived: then every packet up to q
// that was going to arrive has (one path, in order), and lost can count
// them.
func (s *udpStream) waitPast(tb testing.TB, q uint32, within time.Duration) uint32 {
	tb.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		last := s.last
		s.mu.Unlock()
		if last > q {
			return last
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no packet after #%d arrived within %v (the last was #%d)", q, within, last)
		}
	}
}

func (s *udpStream) close() {
	close(s.stop)
	s.done.Wait()
}

// BenchmarkFailoverLoss: a LAN client streams UDP at 1 kHz to an inet host
// through ppp0 (tier 1; ppp1 is tier 2). Each cycle the far end of ppp0 drops
// carrier, then brings it back; the packets lost around each event are
// counted (window: 50 packets before the event to 10 packets before the last
// one sent 400 ms later; the last 10 may still be in flight).
//
// Run: go test -run '^$' -bench FailoverLoss -benchtime 20x ./internal/daemon
func BenchmarkFailoverLoss(b *testing.B) {
	l := benchLab(b, 2)
	cfg := strings.Replace(tieredConfig("nftables"), "[[rule]]", "[daemon]\nlog_level = \"warn\"\n\n[[rule]]", 1)
	syncs := make(chan SyncResult, 4096)
	stop := benchDaemon(b, l, writeConfigB(b, cfg), func(s SyncResult) { syncs <- s })
	defer stop()
	waitFor(b, syncs, func(s SyncResult) bool { return hasActive(s, "ppp0") })

	stream := startStream(b, l)
	defer stream.close()
	time.Sleep(200 * time.Millisecond)
	if lost := stream.lost(1, stream.now()-20); lost > 0 {
		b.Fatalf("stream loses %d packets before any failure", lost)
	}

	var carrier, failback []int
	rateFrom, rateAt := stream.now(), time.Now()
	b.ResetTimer()
	for range b.N {
		at := stream.now()
		if _, err := l.SetCarrier("ppp0", false); err != nil {
			b.Fatal(err)
		}
		waitFor(b, syncs, func(s SyncResult) bool { return !hasActive(s, "ppp0") })
		time.Sleep(400 * time.Millisecond)
		carrier = append(carrier, stream.lost(at-50, stream.now()-10))

		at = stream.now()
		if _, err := l.SetCarrier("ppp0", true); err != nil {
			b.Fatal(err)
		}
		waitFor(b, syncs, func(s SyncResult) bool { return hasActive(s, "ppp0") })
		time.Sleep(400 * time.Millisecond)
		failback = append(failback, stream.lost(at-50, stream.now()-10))
	}
	b.StopTimer()
	// The ticker is 1 ms; report what the loaded VM actually achieved.
	b.ReportMetric(float64(stream.now()-rateFrom)/time.Since(rateAt).Seconds(), "stream-pkts/s")
	reportCounts(b, "carrier-loss-lost", carrier)
	reportCounts(b, "failback-lost", failback)
}

// BenchmarkBlackholeDetection: with the default check (interval 1s, down 3,
// timeout 800ms) the time from a silent blackhole at ppp0's ISP to ppp0
// leaving the main default route. hold_down is 0 so cycles recover fast; it
// does not affect detection.
//
// Run: go test -run '^$' -bench BlackholeDetection -benchtime 5x ./internal/daemon
func BenchmarkBlackholeDetection(b *testing.B) {
	l := benchLab(b, 2)
	cfg := "[daemon]\nlog_level = \"warn\"\n[lan]\ninterface = \"lan0\"\n"
	for i, name := range []string{"ppp0", "ppp1"} {
		cfg += "[[uplink]]\nname = \"" + name + "\"\ntable = " + []string{"200", "201"}[i] +
			"\nrule_priority = " + []string{"200", "300"}[i] +
			"\n  [uplink.check]\n  targets = [\"192.0.2.1\"]\n  hold_down = \"0s\"\n"
	}
	syncs := make(chan SyncResult, 4096)
	stop := benchDaemon(b, l, writeConfigB(b, cfg), func(s SyncResult) { syncs <- s })
	defer stop()
	waitFor(b, syncs, func(s SyncResult) bool { return hasActive(s, "ppp0") })

	var detect []time.Duration
	b.ResetTimer()
	for range b.N {
		at := time.Now()
		if err := l.Blackhole("ppp0", true); err != nil {
			b.Fatal(err)
		}
		s := waitForWithin(b, syncs, 10*time.Second, func(s SyncResult) bool { return !hasActive(s, "ppp0") })
		detect = append(detect, s.End.Sub(at))
		if err := l.Blackhole("ppp0", false); err != nil {
			b.Fatal(err)
		}
		waitForWithin(b, syncs, 10*time.Second, func(s SyncResult) bool { return hasActive(s, "ppp0") })
	}
	b.StopTimer()
	report(b, "detect", detect)
}

func reportCounts(b *testing.B, name string, counts []int) {
	vals := make([]float64, len(counts))
	for i, c := range counts {
		vals[i] = float64(c)
	}
	quantiles(b, name, "pkts", vals)
}

func writeConfigB(b *testing.B, text string) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "uplinkd.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}
