package watcher

import (
	"net"
	"slices"
	"testing"
	"time"

	mdnetlink "github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/nlrecv"
)

// BenchmarkEventLatency measures how long after a route-add returns to its
// caller the consumer holds the matching Event. The route is added over a
// reused vishvananda handle in a private namespace; the consumer reads an
// unbuffered channel, so the figure covers the kernel notification, the
// socket read, decoding and the channel hand-off.
//
// Metrics: ns/op is one add plus waiting for its event; p50-ns / p99-ns /
// max-ns are the latency from the add's return to the event read;
// call-p50-ns / call-p99-ns are measured from before the add was issued.
func BenchmarkEventLatency(b *testing.B) {
	requireRoot(b)
	_, fd := newNS(b)
	h, err := vnl.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()

	out := make(chan Event)
	startRun(b, Options{NetNS: fd}, out)
	if ev := <-out; ev.Kind != KindResync {
		b.Fatalf("first event %+v, want KindResync", ev)
	}

	const table = 100
	lat := make([]time.Duration, 0, b.N)
	call := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		r := vnl.Route{
			Dst:   &net.IPNet{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Mask: net.CIDRMask(32, 32)},
			Table: table,
			Type:  unix.RTN_BLACKHOLE,
		}
		i++
		start := time.Now()
		if err := h.RouteAdd(&r); err != nil {
			b.Fatalf("route add %v: %v", r.Dst, err)
		}
		returned := time.Now()
		for ev := range out {
			if ev.Kind == KindRoute && !ev.Deleted && ev.Table == table {
				now := time.Now()
				lat = append(lat, now.Sub(returned))
				call = append(call, now.Sub(start))
				break
			}
		}
	}
	b.StopTimer()

	pct := func(d []time.Duration, p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Nanoseconds())
	}
	slices.Sort(lat)
	slices.Sort(call)
	b.ReportMetric(pct(lat, 0.50), "p50-ns")
	b.ReportMetric(pct(lat, 0.99), "p99-ns")
	b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
	b.ReportMetric(pct(call, 0.50), "call-p50-ns")
	b.ReportMetric(pct(call, 0.99), "call-p99-ns")
}

// BenchmarkReceive reads route notifications from a subscription in a
// private namespace, one datagram per op, with mdlayher/netlink's Receive
// (its pooled buffer, as uplinkd used before) and with the watcher's
// receiver on the same kind of socket. allocs/op is the receive alone: the
// routes are added before the timer runs.
//
// Run: go test -run '^$' -bench Receive -benchmem ./watcher
func BenchmarkReceive(b *testing.B) {
	requireRoot(b)
	for _, name := range []string{"mdlayher", "receiver"} {
		b.Run(name, func(b *testing.B) {
			_, fd := newNS(b)
			c, err := mdnetlink.Dial(unix.NETLINK_ROUTE, &mdnetlink.Config{Groups: unix.RTMGRP_IPV4_ROUTE, NetNS: fd, MessageBufferSize: ReceiveBuffer})
			if err != nil {
				b.Fatal(err)
			}
			var recv conn = c
			if name == "receiver" {
				if recv, err = nlrecv.New(c, ReceiveBuffer); err != nil {
					b.Fatal(err)
				}
			}
			defer recv.Close()
			if err := c.SetReadBuffer(64 << 20); err != nil {
				b.Fatal(err)
			}
			h, err := vnl.NewHandleAt(netns.NsHandle(fd))
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			// Queue b.N notifications first (in rounds, so the socket's
			// buffer holds them), then time reading them.
			for i := range b.N {
				r := vnl.Route{
					Dst:   &net.IPNet{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Mask: net.CIDRMask(32, 32)},
					Table: 100,
					Type:  unix.RTN_BLACKHOLE,
				}
				if err := h.RouteAdd(&r); err != nil {
					b.Fatalf("route add %v: %v", r.Dst, err)
				}
			}
			b.ResetTimer()
			b.ReportAllocs()
			for range b.N {
				msgs, err := recv.Receive()
				if err != nil {
					b.Fatal(err)
				}
				if len(msgs) != 1 || msgs[0].Header.Type != unix.RTM_NEWROUTE {
					b.Fatalf("got %d messages, want one RTM_NEWROUTE", len(msgs))
				}
			}
		})
	}
}
