package lograte

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newTest(every time.Duration) (*Limiter, *clock) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(every)
	l.Now = c.now
	return l, c
}

func TestAllow(t *testing.T) {
	type step struct {
		advance    time.Duration
		key        string
		ok         bool
		suppressed int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first record passes", []step{{0, "a", true, 0}}},
		{"repeat inside the interval is suppressed", []step{{0, "a", true, 0}, {time.Second, "a", false, 0}, {8 * time.Second, "a", false, 0}}},
		{"next after the interval carries the count", []step{
			{0, "a", true, 0}, {time.Second, "a", false, 0}, {time.Second, "a", false, 0},
			{8 * time.Second, "a", true, 2}, {0, "a", false, 0}, {10 * time.Second, "a", true, 1},
		}},
		{"keys are independent", []step{{0, "a", true, 0}, {0, "b", true, 0}, {0, "a", false, 0}, {0, "b", false, 0}}},
		{"just inside the interval", []step{{0, "a", true, 0}, {10*time.Second - 1, "a", false, 0}, {1, "a", true, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, c := newTest(10 * time.Second)
			for i, s := range tt.steps {
				c.advance(s.advance)
				ok, n := l.Allow(s.key)
				if ok != s.ok || n != s.suppressed {
					t.Fatalf("step %d (%q): Allow = %v, %d; want %v, %d", i, s.key, ok, n, s.ok, s.suppressed)
				}
			}
		})
	}
}

// A flood under ever new keys (a MAC address per packet) must neither grow
// the limiter without bound nor get through: beyond MaxKeys the records
// share one key.
func TestManyKeysBounded(t *testing.T) {
	l, c := newTest(time.Minute)
	passed := 0
	for i := range 100_000 {
		if ok, _ := l.Allow(fmt.Sprintf("k%d", i)); ok {
			passed++
		}
	}
	if passed != MaxKeys+1 {
		t.Errorf("%d records passed, want %d (MaxKeys and one overflow)", passed, MaxKeys+1)
	}
	if len(l.keys) > MaxKeys+1 {
		t.Errorf("limiter holds %d keys, want at most %d", len(l.keys), MaxKeys+1)
	}
	// Once the interval is over, idle keys are forgotten and new ones pass.
	c.advance(time.Minute)
	if ok, _ := l.Allow("fresh"); !ok {
		t.Error("a new key after the interval was suppressed")
	}
}

func TestLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l, c := newTest(time.Minute)
	for range 500 {
		l.Warn(log, "pool", "dhcp: no address to offer", "mac", "02:00:00:00:00:01")
	}
	c.advance(time.Minute)
	l.Warn(log, "pool", "dhcp: no address to offer", "mac", "02:00:00:00:00:02")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	if strings.Contains(lines[0], "suppressed") {
		t.Errorf("first line has a suppressed count: %s", lines[0])
	}
	if !strings.Contains(lines[1], "suppressed=499") || !strings.Contains(lines[1], "02:00:00:00:00:02") {
		t.Errorf("second line = %s, want suppressed=499 and the new mac", lines[1])
	}
	// A disabled level costs nothing and counts nothing.
	buf.Reset()
	quiet := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}))
	l.Warn(quiet, "other", "x")
	if ok, n := l.Allow("other"); !ok || n != 0 {
		t.Errorf("a record at a disabled level was counted: Allow = %v, %d", ok, n)
	}
}

func BenchmarkAllowSuppressed(b *testing.B) {
	l := New(time.Minute)
	for b.Loop() {
		l.Allow("pool")
	}
}
