package firewall

import (
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// TestTrafficCounters sends a known number of UDP datagrams from the LAN
// client through wan0 to an echo server and checks that ReadTraffic counts
// them, within 1 %, in every direction, and that wan1 counted none of them.
func TestTrafficCounters(t *testing.T) {
	const n, payload = 2000, 1000
	const ipLen = payload + 28 // IPv4 and UDP headers: what netfilter counts
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) {
			l := newLab(t)
			b := k.make(t, l.router)
			if _, err := b.Sync(Compute(Input{Config: labConfig(), Uplinks: labState("192.0.2.1")})); err != nil {
				t.Fatal(err)
			}
			before, err := b.ReadTraffic()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := before["wan0"]; !ok {
				t.Fatalf("no counters for wan0: %+v", before)
			}
			var srv *net.UDPConn
			l.server.do(t, func() { srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(203, 0, 113, 1), Port: 9000}) })
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			go func() {
				buf := make([]byte, 2048)
				for {
					m, from, err := srv.ReadFromUDP(buf)
					if err != nil {
						return
					}
					srv.WriteToUDP(buf[:m], from)
				}
			}()
			var c *net.UDPConn
			l.client.do(t, func() { c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(203, 0, 113, 1), Port: 9000}) })
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Lock-step: one datagram in flight, so nothing is dropped on
			// a busy machine and the echo count is exact.
			buf := make([]byte, 2048)
			msg := make([]byte, payload)
			for i := range n {
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(buf); err != nil {
					t.Fatalf("echo %d: %v", i, err)
				}
			}
			after, err := b.ReadTraffic("wan0", "wan1")
			if err != nil {
				t.Fatal(err)
			}
			d := func(iface, dir string) Count {
				a, b := after[iface].Dir(dir), before[iface].Dir(dir)
				return Count{Packets: a.Packets - b.Packets, Bytes: a.Bytes - b.Bytes}
			}
			for _, dir := range Directions {
				got := d("wan0", dir)
				if !within(got.Packets, n, 0.01) || !within(got.Bytes, n*ipLen, 0.01) {
					t.Errorf("wan0 %s: %d packets, %d bytes; want %d, %d within 1%%", dir, got.Packets, got.Bytes, n, n*ipLen)
				}
				if got := d("wan1", dir); got.Packets > n/100 {
					t.Errorf("wan1 %s counted %d packets of wan0's traffic", dir, got.Packets)
				}
			}
		})
	}
}

func within(got, want uint64, frac float64) bool {
	diff := float64(got) - float64(want)
	return diff >= 0 && diff <= frac*float64(want) || diff < 0 && -diff <= frac*float64(want)
}

// BenchmarkReadTraffic measures one read of the traffic counters of one
// uplink among 2 and 16 (what the traffic trigger does every half window),
// per backend.
//
// Run: go test -run '^$' -bench ReadTraffic ./firewall
func BenchmarkReadTraffic(b *testing.B) {
	for _, k := range backendKinds {
		for _, n := range []int{2, 16} {
			b.Run(fmt.Sprintf("%s/uplinks=%d", k.name, n), func(b *testing.B) {
				ns := newNS(b)
				be := k.make(b, ns)
				if _, err := be.Sync(Compute(benchInput(n, 0, 0))); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					tr, err := be.ReadTraffic("ppp0")
					if _, ok := tr["ppp0"]; err != nil || !ok {
						b.Fatalf("ReadTraffic = %v, %v", tr, err)
					}
				}
			})
		}
	}
}

func TestParseCountLine(t *testing.T) {
	for _, c := range []struct {
		line, chain, iface string
		out                bool
		c                  Count
		ok                 bool
	}{
		{"[12:3456] -A UPLINKD-COUNT-IN -i ppp0", iptCountIn, "ppp0", false, Count{12, 3456}, true},
		{"[0:0] -A UPLINKD-COUNT-FWD -o wan.1", iptCountFwd, "wan.1", true, Count{}, true},
		{"[18446744073709551615:1] -A UPLINKD-COUNT-OUT -o ppp1", iptCountOut, "ppp1", true, Count{1<<64 - 1, 1}, true},
		{"[1:2] -A UPLINKD-PREROUTING -i ppp0", "", "", false, Count{}, false},
		{"[1:2] -A UPLINKD-COUNT-IN -i ppp0 -j RETURN", "", "", false, Count{}, false},
		{"[x:2] -A UPLINKD-COUNT-IN -i ppp0", "", "", false, Count{}, false},
		{":UPLINKD-COUNT-IN - [0:0]", "", "", false, Count{}, false},
	} {
		s, chain, ok := parseCountLine(c.line)
		if ok != c.ok || ok && (chain != c.chain || s.iface != c.iface || s.out != c.out || s.c != c.c) {
			t.Errorf("%q: %+v %q %v", c.line, s, chain, ok)
		}
	}
}

// BenchmarkCountingCost measures what the counting chains cost the
// forwarding path: a LAN client's TCP stream through the router (NAT,
// marks, the lab's whole ruleset) for 500 ms with the counting chains and
// 500 ms without them (deleted by hand, put back by Check and Sync),
// alternating which goes first, in the same run; reported as the median throughput of each.
//
// Run: go test -run '^$' -bench CountingCost -benchtime 10x ./firewall
func BenchmarkCountingCost(b *testing.B) {
	l := newLab(b)
	be := backendKinds[0].make(b, l.router)
	rs := Compute(Input{Config: labConfig(), Uplinks: labState("192.0.2.1")})
	if _, err := be.Sync(rs); err != nil {
		b.Fatal(err)
	}
	var ln net.Listener
	var err error
	l.server.do(b, func() { ln, err = net.Listen("tcp4", "203.0.113.1:9100") })
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	stream := func() float64 {
		var c net.Conn
		l.client.do(b, func() { c, err = net.Dial("tcp4", "203.0.113.1:9100") })
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		start, n := time.Now(), 0
		for time.Since(start) < 500*time.Millisecond {
			m, err := c.Write(buf)
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
		return float64(n) / time.Since(start).Seconds() / 1e6
	}
	var with, without []float64
	strip := func() {
		for _, c := range []string{nftChainCountIn, nftChainCountOut, nftChainCountFwd} {
			l.router.mustRun(b, "nft", "delete", "chain", "ip", TableName, c)
		}
	}
	restore := func() {
		if ok, _ := be.Check(); ok {
			b.Fatal("Check did not notice the deleted counting chains")
		}
		if _, err := be.Sync(rs); err != nil {
			b.Fatal(err)
		}
	}
	// Alternate which one runs first, so neither gains from going second.
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			with = append(with, stream())
			strip()
			without = append(without, stream())
			restore()
		} else {
			strip()
			without = append(without, stream())
			restore()
			with = append(with, stream())
		}
	}
	median := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	mw, mo := median(with), median(without)
	b.ReportMetric(mw, "with-MB/s")
	b.ReportMetric(mo, "without-MB/s")
	b.ReportMetric(100*(mo-mw)/mo, "cost-%")
}
