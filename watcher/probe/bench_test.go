package probe

import (
	"context"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// BenchmarkICMP16Uplinks measures what probing costs the daemon: 16 ICMP
// probers (one per uplink, each on its own veth with its own source address
// and socket) at the default 1 probe/s, for 10 s. It reports the process's
// CPU time (user + system, from getrusage, so including the Go runtime and
// the kernel work done in the process's context) as a percentage of one
// core. The target is <= 1 %.
//
//	go test ./watcher/probe -run '^$' -bench ICMP16 -benchtime 1x
func BenchmarkICMP16Uplinks(b *testing.B) {
	const (
		uplinks = 16
		window  = 10 * time.Second
	)
	requireRoot(b)
	client, server := newNS(b), newNS(b)
	specs := make([]Spec, uplinks)
	for i := range uplinks {
		c, s := fmt.Sprintf("c%d", i), fmt.Sprintf("s%d", i)
		client.ip(b, "link", "add", c, "type", "veth", "peer", "name", s, "netns", server.name)
		client.ip(b, "addr", "add", fmt.Sprintf("10.100.%d.2/24", i), "dev", c)
		server.ip(b, "addr", "add", fmt.Sprintf("10.100.%d.1/24", i), "dev", s)
		client.ip(b, "link", "set", c, "up")
		server.ip(b, "link", "set", s, "up")
		specs[i] = Spec{
			Uplink:   c,
			Method:   MethodICMP,
			Targets:  []string{fmt.Sprintf("10.100.%d.1", i)},
			Interval: time.Second,
			Timeout:  800 * time.Millisecond,
			Source:   netip.MustParseAddr(fmt.Sprintf("10.100.%d.2", i)),
			Iface:    c,
			NetNS:    client.fd,
		}
	}
	// Neighbour resolution on the first probe of each link would be
	// counted otherwise; let it settle before measuring.
	time.Sleep(200 * time.Millisecond)

	b.ResetTimer()
	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan Result, 4*uplinks)
		errc := make(chan error, uplinks)
		for _, s := range specs {
			go func() { errc <- Run(ctx, s, out) }()
		}
		var ok, failed int
		counted := make(chan struct{})
		go func() {
			defer close(counted)
			for {
				select {
				case r := <-out:
					if r.OK {
						ok++
					} else {
						failed++
					}
				case <-ctx.Done():
					return
				}
			}
		}()

		var before, after syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		t0 := time.Now()
		time.Sleep(window)
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		wall := time.Since(t0)
		cancel()
		for range uplinks {
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		}
		<-counted

		cpu := tv(after.Utime) - tv(before.Utime) + tv(after.Stime) - tv(before.Stime)
		b.ReportMetric(100*float64(cpu)/float64(wall), "%core")
		b.ReportMetric(float64(cpu.Microseconds())/float64(ok+failed), "cpu-us/probe")
		b.ReportMetric(float64(ok), "probes-ok")
		b.ReportMetric(float64(failed), "probes-failed")
		if failed > 0 || ok < uplinks*int(window/time.Second) {
			b.Errorf("%d probes answered, %d failed; want %d answered", ok, failed, uplinks*int(window/time.Second))
		}
	}
}

func tv(t syscall.Timeval) time.Duration {
	return time.Duration(t.Sec)*time.Second + time.Duration(t.Usec)*time.Microsecond
}
