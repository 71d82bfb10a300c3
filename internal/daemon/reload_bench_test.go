package daemon

import (
	"context"
	"strings"
	"testing"
	"time"
)

// BenchmarkReload: Reload (read, check, hand to the loop) plus the pass it
// brings, on fakes: an unchanged file, and one that changes one weight
// back and forth (the pass rewrites the multipath default route).
func BenchmarkReload(b *testing.B) {
	base := fakeConfig("", "")
	heavier := strings.Replace(base, "rule_priority = 300\n", "rule_priority = 300\nweight = 3\n", 1)
	for _, tc := range []struct {
		name  string
		files []string
	}{
		{"unchanged", []string{base}},
		{"one-weight", []string{heavier, base}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l := startLoop(b, loopOpts{config: base, obs: twoPPP()})
			defer l.stop()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				l.writeConfig(tc.files[i%len(tc.files)])
				if err := l.d.Reload(ctx); err != nil {
					b.Fatal(err)
				}
				if s := l.pass(); s.Err != nil {
					b.Fatal(s.Err)
				}
			}
		})
	}
}
